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
/** VXLAN over IPv6 (`flannel-v6.<VNI>`): the outer IPv6 header is 20 bytes longer. */
export const VXLAN6_OVERHEAD = 70;

export function mtuChecks(f: Facts, k: KernelSnapshot): CheckResult[] {
  const out: CheckResult[] = [];
  if (!f.ext || !f.backendType || !(f.backendType in OVERHEAD)) return out;
  const underlay = k.links.find((l) => l.index === f.ext!.index)?.mtu ?? f.ext.mtu;
  let devMtu: number | undefined = f.backendType === "vxlan"
    ? undefined
    : underlay - OVERHEAD[f.backendType];
  // Per VTEP (IPv4 and IPv6 each when the config serves them); pods get the smaller MTU.
  const vteps = f.backendType === "vxlan"
    ? ([[4, OVERHEAD.vxlan], [6, VXLAN6_OVERHEAD]] as const).flatMap(([fam, overhead]) => {
      const dev = vtepOf(f, k.links, fam);
      return dev ? [{ dev, overhead }] : [];
    })
    : [];
  for (const { dev, overhead } of vteps) {
    const check = dev.name.startsWith("flannel-v6") ? "mtu.device6" : "mtu.device";
    if (dev.mtu > underlay - overhead) {
      out.push(fail(
        check,
        `${dev.name} MTU ${dev.mtu} > ${f.ext.name} MTU ${underlay} - ${overhead} (vxlan overhead): ` +
          "full-size packets do not fit the underlay",
        // Backend.MTU is the underlay MTU the VTEPs are derived from (less 50, less 70).
        `restart the agent (it sets ${underlay - overhead}), or set Backend.MTU ≤ ${underlay}`,
      ));
    } else out.push(ok(check, `${f.ext.name} MTU ${underlay}, ${dev.name} MTU ${dev.mtu}`));
    devMtu = Math.min(devMtu ?? dev.mtu, dev.mtu);
  }
  if (f.backendType !== "vxlan" && devMtu !== undefined) {
    out.push(ok("mtu.device", `${f.ext.name} MTU ${underlay}, overlay MTU ${devMtu}`));
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
