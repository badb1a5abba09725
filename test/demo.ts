/**
 * `deno task demo` (as root): a 3-host weft cluster in network namespaces on the embedded Deno KV
 * registry with the vxlan backend. Prints the leases and a pod-to-pod ping matrix, then tears
 * everything down. Nothing outside the namespaces it creates is touched.
 */
import { weft } from "./kit/agent.ts";
import { withCluster } from "./kit/cluster.ts";

if (Deno.uid() !== 0) {
  console.error("demo: run as root (it creates network namespaces): sudo deno task demo");
  Deno.exit(1);
}

const t0 = performance.now();
const step = (msg: string) =>
  console.log(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(5)} s] ${msg}`);

await withCluster({ hosts: 3, registry: "kv", podsPerHost: 1 }, async (c) => {
  step(`built 3 hosts (${c.hosts.map((h) => `${h.name} ${h.ip}`).join(", ")}) on 198.18.0.0/24`);
  await c.startAll({ backend: "vxlan", ttl: 60 });
  step("weft agents ready on every host (vxlan, Deno KV registry), one pod per host");

  const leases = await weft(["leases", "--kv-path", c.kvPath!]);
  if (leases.stderr.trim()) console.error(leases.stderr.trimEnd());
  console.log("\n$ weft leases\n" + leases.stdout);

  const pods = c.pods();
  const m = await c.pingMatrix({ count: 3, intervalS: 0.2, timeoutS: 2 });
  const w = 16;
  console.log("pod-to-pod ping (avg RTT, received/sent)");
  console.log(
    "from \\ to".padEnd(w) + pods.map((p) => `${p.name}@${p.host} ${p.ip}`.padEnd(w + 8)).join(""),
  );
  for (const a of pods) {
    let line = `${a.name}@${a.host}`.padEnd(w);
    for (const b of pods) {
      const r = m.results.find((x) => x.from.endsWith(a.name) && x.to.endsWith(b.name));
      line +=
        (a === b ? "-" : r ? `${r.rttAvgMs?.toFixed(3) ?? "—"} ms ${r.received}/${r.sent}` : "?")
          .padEnd(w + 8);
    }
    console.log(line);
  }
  console.log();
  step(m.ok ? "every pod reaches every other pod" : `FAILED pairs: ${m.failed.length}`);
  if (!m.ok) Deno.exitCode = 1;
});
step("torn down: namespaces, agents and files removed");
