/**
 * What `/readyz` reports: the agent's start-up steps in the order they happen, each either done or
 * the first one missing, and a datapath self-check that can take readiness away again.
 *
 * @example
 * ```ts
 * const r = new ReadinessState();
 * r.lease = true;
 * r.report({ leaseLost: false, parts: [] }); // { ok: false, reason: "subnet.env not written yet" }
 * ```
 */

/** What /readyz reports. */
export interface Readiness {
  ok: boolean;
  reason?: string;
}

/** Something applied on every lease whose success readiness waits for (an agent part). */
export interface Named {
  readonly name: string;
  /** What keeps the node not ready after the part applied, or null (see Part.problem). */
  problem?(): string | null;
}

export class ReadinessState {
  lease = false;
  subnetEnv = false;
  peersSynced = false;
  /** Why subnet.env could not be written (the last attempt); empty once it was. */
  subnetEnvError = "";
  /** Why the last datapath self-check failed; empty while it passes. */
  datapathBroken = "";
  /** Parts whose latest apply succeeded. */
  readonly partsApplied = new Set<Named>();

  /** The first step not done yet, in start-up order, or ok. */
  report(
    now: { leaseLost: boolean; conflict?: string | null; parts: readonly Named[] },
  ): Readiness {
    // Another host with our public IP holds the lease: say so whatever else is done.
    if (now.conflict) return { ok: false, reason: now.conflict };
    if (!this.lease) return { ok: false, reason: "no subnet lease yet" };
    // A lease that cannot be applied because subnet.env cannot be written: name that cause.
    if (this.subnetEnvError) return { ok: false, reason: this.subnetEnvError };
    if (now.leaseLost) return { ok: false, reason: "lease lost; re-acquiring" };
    // Parts are applied before subnet.env is written: name the one still in progress.
    for (const p of now.parts) {
      if (!this.partsApplied.has(p)) return { ok: false, reason: `${p.name} not installed yet` };
    }
    if (!this.subnetEnv) return { ok: false, reason: "subnet.env not written yet" };
    if (!this.peersSynced) return { ok: false, reason: "peer leases not programmed yet" };
    if (this.datapathBroken) return { ok: false, reason: this.datapathBroken };
    for (const p of now.parts) {
      const problem = p.problem?.();
      if (problem) return { ok: false, reason: problem };
    }
    return { ok: true };
  }
}
