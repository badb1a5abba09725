/**
 * Keeps subnet.env in line with the own lease. A failed write (directory read-only or full) is
 * named by /readyz (the readiness state's `subnetEnvError`, logged once per new error) and
 * rethrown for the caller to retry — never fatal: the datapath works meanwhile. A write that
 * succeeds again clears it.
 *
 * @example
 * ```ts
 * const env = new SubnetEnvWriter(state, { file: "/run/flannel/subnet.env", ipMasq: true }, cfg, 1450);
 * await env.write(lease).catch(() => {}); // retried by the self-checks while state.subnetEnvError
 * ```
 */
import { getLogger } from "@logtape/logtape";
import type { NetworkConfig } from "../config/network.ts";
import { writeSubnetEnv } from "../config/subnet_env.ts";
import type { Lease } from "../lease/codec.ts";
import type { ReadinessState } from "./readiness.ts";

const log = getLogger(["weft", "agent"]);

export class SubnetEnvWriter {
  /** `mtu`: the backend's pod MTU (FLANNEL_MTU); `ipMasq`: FLANNEL_IPMASQ. */
  constructor(
    readonly state: ReadinessState,
    readonly opts: { file: string; ipMasq: boolean },
    readonly cfg: NetworkConfig,
    readonly mtu: number,
  ) {}

  /** Writes subnet.env for `l`; throws (after recording it in the readiness state) on failure. */
  async write(l: Lease): Promise<void> {
    const cfg = this.cfg;
    try {
      await writeSubnetEnv(this.opts.file, {
        network: cfg.network,
        subnet: l.subnet,
        ...(cfg.ipv6 && l.subnet6
          ? { ipv6: { network: cfg.ipv6.network, subnet: l.subnet6 } }
          : {}),
        mtu: this.mtu,
        ipMasq: this.opts.ipMasq,
      });
    } catch (e) {
      const was = this.state.subnetEnvError;
      this.state.subnetEnvError = (e as Error).message;
      if (was !== this.state.subnetEnvError) {
        log.error("{error}; not ready, retrying every 5 s", { error: (e as Error).message });
      }
      throw e;
    }
    if (this.state.subnetEnvError) {
      log.info("wrote {file} again", { file: this.opts.file });
    }
    this.state.subnetEnvError = "";
    this.state.subnetEnv = true;
  }
}
