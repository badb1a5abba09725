/**
 * Renders leases as the `weft leases` table (subnet, public IP, backend, expires in). It takes
 * listed leases, whose expiry is always known.
 */
import { formatCidr } from "../base/ipv4.ts";
import { type KnownLease, leaseBackendType } from "../lease/codec.ts";

function expiresIn(l: KnownLease, now: number): string {
  if (l.expiresAt === null) return "never (reserved)";
  const s = Math.max(0, Math.round((l.expiresAt - now) / 1000));
  if (s >= 3600) {
    return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  }
  if (s >= 60) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${s}s`;
}

export function leaseRows(leases: KnownLease[], now = Date.now()) {
  return [...leases].sort((a, b) => a.subnet.ip - b.subnet.ip).map((l) => ({
    subnet: formatCidr(l.subnet),
    publicIP: l.attrs.publicIP,
    backend: leaseBackendType(l.attrs),
    vtepMAC: (l.attrs.backendData as { VtepMAC?: string } | undefined)?.VtepMAC ?? "",
    expiresIn: expiresIn(l, now),
    expiresAt: l.expiresAt === null ? null : new Date(l.expiresAt).toISOString(),
  }));
}

export function renderLeaseTable(leases: KnownLease[], now = Date.now()): string {
  const rows = leaseRows(leases, now);
  const head = ["SUBNET", "PUBLIC IP", "BACKEND", "VTEP MAC", "EXPIRES IN"];
  const cells = rows.map((r) => [r.subnet, r.publicIP, r.backend, r.vtepMAC || "-", r.expiresIn]);
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (c: string[]) => c.map((x, i) => x.padEnd(widths[i])).join("  ").trimEnd();
  return [line(head), ...cells.map(line)].join("\n") + "\n";
}
