/**
 * MTU consistency (pure over the snapshot): the underlay's MTU, the overlay device's, what
 * subnet.env tells CNI and the pods' bridge. A device bigger than the underlay allows, or pods
 * told a bigger MTU than the device has, loses or fragments full-size packets. The path-MTU
 * probe to each peer (reach_checks.ts) finds black holes on the path itself.
 */
import { type CheckResult, fail, ok, warn } from "./check.ts";
import type { Facts } from "./facts.ts";
import type { KernelSnapshot } from "./kernel_checks.ts";
import { vtepOf } from "./kernel_checks.ts";

/** Encapsulation overhead per backend (outer IPv4 + UDP (+ VXLAN + inner Ethernet)). */
export const OVERHEAD: Record<string, number> = { vxlan: 50, udp: 28, "host-gw": 0 };

export function mtuChecks(f: Facts, k: KernelSnapshot): CheckResult[] {
  const out: CheckResult[] = [];
  if (!f.ext || !f.backendType || !(f.backendType in OVERHEAD)) return out;
  const underlay = k.links.find((l) => l.index === f.ext!.index)?.mtu ?? f.ext.mtu;
  const overhead = OVERHEAD[f.backendType];
  const dev = f.backendType === "vxlan" ? vtepOf(f, k.links) : null;
  const devMtu = f.backendType === "vxlan" ? dev?.mtu : underlay - overhead;
  if (dev && dev.mtu > underlay - overhead) {
    out.push(fail(
      "mtu.device",
      `${dev.name} MTU ${dev.mtu} > ${f.ext.name} MTU ${underlay} - ${overhead} (vxlan overhead): ` +
        "full-size packets do not fit the underlay",
      `restart the agent (it sets ${underlay - overhead}), or set Backend.MTU ≤ ${
        underlay - overhead
      }`,
    ));
  } else if (devMtu !== undefined) {
    out.push(
      ok("mtu.device", `${f.ext.name} MTU ${underlay}, ${dev?.name ?? "overlay"} MTU ${devMtu}`),
    );
  }
  const env = f.subnetEnv;
  if (env && devMtu !== undefined) {
    if (env.mtu > devMtu) {
      out.push(fail(
        "mtu.subnet-env",
        `${f.opts.subnetFile}: FLANNEL_MTU ${env.mtu} > the overlay's ${devMtu}: pods send packets the overlay cannot carry`,
        "restart the agent (it rewrites subnet.env), then recreate the pods (their MTU is set at creation)",
      ));
    } else if (env.mtu < devMtu) {
      out.push(warn(
        "mtu.subnet-env",
        `${f.opts.subnetFile}: FLANNEL_MTU ${env.mtu} < the overlay's ${devMtu} (pods use smaller packets than they could)`,
        "restart the agent (it rewrites subnet.env)",
      ));
    } else out.push(ok("mtu.subnet-env", `FLANNEL_MTU ${env.mtu} matches the overlay`));
  }
  for (const b of k.links.filter((l) => l.kind === "bridge")) {
    if (env && b.mtu > env.mtu) {
      out.push(warn(
        "mtu.bridge",
        `bridge ${b.name} MTU ${b.mtu} > FLANNEL_MTU ${env.mtu}`,
        `ip link set ${b.name} mtu ${env.mtu} (and recreate pods with a larger MTU)`,
      ));
    }
  }
  return out;
}
