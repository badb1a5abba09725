/**
 * Backend by name. Datapath backends load lazily so `alloc` and the CLI's registry commands never
 * need libnl.
 */
import { ConfigError } from "../base/errors.ts";
import type { NetworkConfig } from "../config/network.ts";
import type { Backend, Owned } from "../backend/backend.ts";
import { AllocBackend, allocOwned } from "../backend/alloc/backend.ts";
import { BACKEND_TYPES } from "../config/backend_options.ts";

export const backendNames: readonly string[] = BACKEND_TYPES;

export async function createBackend(name: string): Promise<Backend> {
  switch (name) {
    case "alloc":
      return new AllocBackend();
    case "vxlan":
      return new (await import("../backend/vxlan/backend.ts")).VxlanBackend();
    case "host-gw":
      return new (await import("../backend/hostgw/backend.ts")).HostGwBackend();
    case "udp":
      return new (await import("../backend/udp/backend.ts")).UdpBackend();
    default:
      throw new ConfigError(
        `Backend.Type "${name}" is not supported by weft; use one of ${backendNames.join(", ")}`,
      );
  }
}

/**
 * Refuses a config the agent cannot serve, before anything is written: an IPv6 half (dual stack,
 * or an IPv6-only network with EnableIPv4 false) with a backend that does not program IPv6.
 */
export function checkFamilies(cfg: NetworkConfig, backend: Backend): void {
  if (cfg.enableIPv6 && !backend.servesIpv6) {
    const what = cfg.enableIPv4 ? "EnableIPv6 is true" : "EnableIPv4 is false (IPv6-only)";
    throw new ConfigError(
      `${what} but weft's ${backend.name} backend does not program IPv6; ` +
        `${
          cfg.enableIPv4 ? "set EnableIPv6 to false" : "set EnableIPv4 to true with Network"
        } or use a backend that does (vxlan, host-gw; see README, "Dual stack")`,
    );
  }
}

/**
 * What each backend owns on a host under `cfg` (null: unknown), for `weft cleanup`: every
 * backend's, not only the configured one's, since an earlier run may have used another.
 */
export async function ownedByBackends(cfg: NetworkConfig | null): Promise<Owned[]> {
  const [vxlan, hostgw, udp] = await Promise.all([
    import("../backend/vxlan/device.ts"),
    import("../backend/hostgw/backend.ts"),
    import("../backend/udp/backend.ts"),
  ]);
  return [vxlan.vxlanOwned(cfg), hostgw.hostGwOwned(cfg), udp.udpOwned(cfg), allocOwned()];
}
