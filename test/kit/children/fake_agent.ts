/**
 * A stand-in agent for the harness self-test: takes the agent's command line, writes a
 * subnet.env derived from its eth0 address (198.18.0.N → 198.19.N.1/24), serves /healthz and
 * /readyz when `--healthz-port` is given, and logs the signal that stops it. It proves that the
 * harness starts, probes, signals and restarts the real deno process without the real agent.
 *
 * @example
 * ```sh
 * ip netns exec wharn-w3k9z1-h1 deno run -A test/kit/children/fake_agent.ts run --iface eth0 \
 *   --subnet-file /tmp/x/subnet.env --healthz-port 9900
 * ```
 */

function flag(name: string): string | undefined {
  const i = Deno.args.indexOf(name);
  return i >= 0 ? Deno.args[i + 1] : undefined;
}

const subnetFile = flag("--subnet-file");
const iface = flag("--iface") ?? "eth0";
const healthzPort = flag("--healthz-port");
if (!subnetFile) {
  console.error("fake agent: --subnet-file is required");
  Deno.exit(2);
}

console.log(`fake agent pid ${Deno.pid} starting: ${Deno.args.join(" ")}`);
const addr = Deno.networkInterfaces().find((i) => i.name === iface && i.family === "IPv4");
if (!addr) {
  console.error(`fake agent: interface ${iface} has no IPv4 address`);
  Deno.exit(1);
}
const last = addr.address.split(".")[3];

let server: Deno.HttpServer | null = null;
if (healthzPort) {
  server = Deno.serve(
    { port: Number(healthzPort), hostname: "0.0.0.0", onListen: () => {} },
    (req) => {
      const path = new URL(req.url).pathname;
      return new Response(path === "/healthz" || path === "/readyz" ? "ok\n" : "not found\n", {
        status: path === "/healthz" || path === "/readyz" ? 200 : 404,
      });
    },
  );
}

// A short delay so the harness's readiness polling is exercised, not just the first probe.
await new Promise((r) => setTimeout(r, 300));
const text = `FLANNEL_NETWORK=198.19.0.0/16\nFLANNEL_SUBNET=198.19.${last}.1/24\n` +
  `FLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n`;
await Deno.writeTextFile(`${subnetFile}.tmp`, text);
await Deno.rename(`${subnetFile}.tmp`, subnetFile);
console.log(`fake agent wrote ${subnetFile}: subnet 198.19.${last}.1/24`);

const stopped = Promise.withResolvers<Deno.Signal>();
for (const sig of ["SIGTERM", "SIGINT"] as const) {
  Deno.addSignalListener(sig, () => stopped.resolve(sig));
}
const sig = await stopped.promise;
console.log(`fake agent got ${sig}, exiting`);
await server?.shutdown();
Deno.exit(0);
