/**
 * Backend by name. Datapath backends load lazily so `alloc` and the CLI's registry commands never
 * need libnl.
 */
import { ConfigError } from "../base/errors.ts";
import type { Backend } from "../backend/backend.ts";
import { AllocBackend } from "../backend/alloc/backend.ts";

export const backendNames = ["vxlan", "host-gw", "udp", "alloc"];

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
