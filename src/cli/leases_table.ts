/**
 * Renders leases as the `weft leases` table (subnet, public IP, backend, expires in; with any
 * dual-stack or IPv6-only lease also the IPv6 subnet and public IPv6) and its `--json` rows. Lease content is whatever anyone wrote to the registry: every field shown is
 * turned into a bounded printable string here (a number, object or escape sequence where a
 * string belongs never crashes the command nor reaches the terminal raw). It takes listed
 * leases, whose expiry is always known.
 */
import { formatCidr } from "../base/ipv4.ts";
import { formatCidr6 } from "../base/ipv6.ts";
import { preview } from "../base/preview.ts";
import { isIpv6OnlyKey, type KnownLease, leaseBackendType } from "../lease/codec.ts";
import { bySubnet } from "../lease/allocate.ts";

/** The widest a column may grow from registry content (a MAC is 17, an IPv4 address 15). */
const MAX_CELL = 40;

function expiresIn(l: KnownLease, now: number): string {
  if (l.expiresAt === null) return "never (reserved)";
  if (!Number.isFinite(l.expiresAt)) return "?";
  const s = Math.max(0, Math.round((l.expiresAt - now) / 1000));
  if (s >= 3600) {
    return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  }
  if (s >= 60) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${s}s`;
}

/** ISO time of an expiry, null for none, "?" for one no Date can hold. */
function expiresAt(l: KnownLease): string | null {
  if (l.expiresAt === null) return null;
  const d = new Date(l.expiresAt);
  return Number.isNaN(d.getTime()) ? "?" : d.toISOString();
}

/** BackendData.VtepMAC as text: "" when absent, anything else shown as it is (bounded). */
function vtepMac(data: unknown): string {
  if (typeof data !== "object" || data === null || Array.isArray(data)) return "";
  const mac = (data as Record<string, unknown>).VtepMAC;
  return mac === undefined || mac === null ? "" : preview(mac, MAX_CELL);
}

export function leaseRows(leases: KnownLease[], now = Date.now()) {
  return [...leases].sort(bySubnet).map((l) => ({
    subnet: formatCidr(l.subnet),
    publicIP: preview(l.attrs.publicIP, MAX_CELL),
    backend: preview(leaseBackendType(l.attrs), MAX_CELL),
    // An IPv6-only lease has BackendV6Data alone.
    vtepMAC: vtepMac(isIpv6OnlyKey(l.key) ? l.attrs.backendV6Data : l.attrs.backendData),
    expiresIn: expiresIn(l, now),
    expiresAt: expiresAt(l),
    // The IPv6 half, only on leases that have one (IPv4-only rows stay as they were).
    ...(l.subnet6
      ? {
        subnet6: formatCidr6(l.subnet6),
        publicIPv6: preview(l.attrs.publicIPv6 ?? "", MAX_CELL),
      }
      : {}),
  }));
}

export function renderLeaseTable(leases: KnownLease[], now = Date.now()): string {
  const rows = leaseRows(leases, now);
  const v6 = rows.some((r) => r.subnet6);
  const head = ["SUBNET", "PUBLIC IP", "BACKEND", "VTEP MAC", "EXPIRES IN"];
  if (v6) head.splice(2, 0, "IPV6 SUBNET", "PUBLIC IPV6");
  const cells = rows.map((r) => {
    // An IPv6-only lease's IPv4 half is the empty network: shown as "-".
    const v4 = r.subnet !== "0.0.0.0/0" || !r.subnet6;
    const c = [
      v4 ? r.subnet : "-",
      v4 ? r.publicIP : "-",
      r.backend,
      r.vtepMAC || "-",
      r.expiresIn,
    ];
    if (v6) c.splice(2, 0, r.subnet6 ?? "-", r.publicIPv6 || "-");
    return c;
  });
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (c: string[]) => c.map((x, i) => x.padEnd(widths[i])).join("  ").trimEnd();
  return [line(head), ...cells.map(line)].join("\n") + "\n";
}
