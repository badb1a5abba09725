/**
 * Where a datagram came from, as the receiver sees it: a UDP sink in a test namespace (the
 * children/udp_sink.ts child) and a sender that resends until it arrives. The masquerade tests
 * (iptables, nftables) use it to see a pod's source address rewritten, or kept.
 *
 * @example
 * ```ts
 * const sink = await udpSink(c, "reg", c.registryHost.ip);
 * try {
 *   assert.equal(await sink.sourceOf(pod, "token-1"), host.ip); // masqueraded
 * } finally {
 *   await sink.close();
 * }
 * ```
 */
import { StopWaiting, waitFor } from "./proc.ts";
import { denoInNs } from "./netns.ts";
import { spawnLogged, stopProcess } from "./spawn.ts";
import type { Cluster, NsRef } from "./cluster.ts";

const UDP_SINK = new URL("./children/udp_sink.ts", import.meta.url).pathname;

/**
 * A UDP sink on `ip:port` (default 5300) inside `ref`'s namespace (the kit's udp_sink child)
 * that prints "<sender address> <payload>" per datagram. Bounded: it exits by itself after 60 s; `close()`
 * kills it earlier.
 */
export async function udpSink(c: Cluster, ref: NsRef, ip: string, port = 5300) {
  // cwd "/": no deno.json to resolve, no lock on the repo's node_modules.
  const p = spawnLogged(denoInNs(c.nsOf(ref), [UDP_SINK, ip, String(port)]), null, {
    cwd: "/",
  });
  const lines = () => p.output().split("\n");
  const close = async () => void await stopProcess(p, "SIGKILL");
  try {
    // deno starts in well under a second, but took 15 s on a heavily loaded machine.
    await waitFor(`UDP sink on ${ip}`, () => {
      if (p.status) throw new StopWaiting(`UDP sink on ${ip} exited: ${p.output()}`);
      return lines().includes("ready");
    }, { timeoutMs: 45_000, intervalMs: 50 });
  } catch (e) {
    await close();
    throw new Error(`${(e as Error).message}; output: ${p.output()}`);
  }
  return {
    /** Sends `token` from `from` (bash /dev/udp) until it arrives; returns the sender address. */
    async sourceOf(from: NsRef, token: string): Promise<string> {
      // Resent every 300 ms (a datagram may be lost while the path settles), at least 10 times.
      let sentAt = 0;
      const hit = await waitFor(`datagram "${token}" at ${ip}`, async () => {
        const line = lines().find((l) => l.endsWith(` ${token}`));
        if (line) return line;
        if (Date.now() - sentAt >= 300) {
          await c.run(from, ["bash", "-c", `echo ${token} > /dev/udp/${ip}/${port}`]);
          sentAt = Date.now();
        }
      }, { timeoutMs: 10_000, intervalMs: 20 }).catch(() => null);
      if (!hit) {
        throw new Error(
          `datagram "${token}" never reached ${ip}; sink saw: ${lines().join(" | ")}`,
        );
      }
      return hit.split(" ")[0];
    },
    close,
  };
}
