/**
 * subnet.env, the file CNI reads (flannel's exact format), written atomically: a temp file in the
 * same directory, then rename, mode 0644. Readers never see a half-written file.
 *
 * @example
 * ```ts
 * await writeSubnetEnv("/run/flannel/subnet.env", {
 *   network: parseCidr("198.19.0.0/16"), subnet: parseCidr("198.19.5.0/24"), mtu: 1450, ipMasq: true,
 * });
 * ```
 */
import { dirname } from "node:path";
import { formatCidr, formatIp, type Ipv4Net, networkOf, parseCidr } from "../base/ipv4.ts";

export interface SubnetEnv {
  network: Ipv4Net;
  /** The leased subnet (network address form). */
  subnet: Ipv4Net;
  mtu: number;
  ipMasq: boolean;
}

/** The file's text: FLANNEL_SUBNET is the first usable address with the lease's length. */
export function renderSubnetEnv(e: SubnetEnv): string {
  return `FLANNEL_NETWORK=${formatCidr(e.network)}\n` +
    `FLANNEL_SUBNET=${formatIp(e.subnet.ip + 1)}/${e.subnet.prefix}\n` +
    `FLANNEL_MTU=${e.mtu}\n` +
    `FLANNEL_IPMASQ=${e.ipMasq}\n`;
}

export async function writeSubnetEnv(path: string, e: SubnetEnv): Promise<void> {
  const dir = dirname(path);
  await Deno.mkdir(dir, { recursive: true });
  const tmp = `${path}.tmp-${Deno.pid}`;
  try {
    await Deno.writeTextFile(tmp, renderSubnetEnv(e), { mode: 0o644 });
    await Deno.chmod(tmp, 0o644); // the umask may have narrowed the mode
    await Deno.rename(tmp, path);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw new Error(
      `cannot write subnet file ${path}: ${(err as Error).message}; check --subnet-file and that ` +
        `its directory is writable`,
    );
  }
}

/** Parses KEY=VALUE lines; unknown keys are kept. */
export function parseSubnetEnvText(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const m = /^\s*([A-Z0-9_]+)=(.*)$/.exec(line);
    if (m) out[m[1]] = m[2].trim();
  }
  return out;
}

/** The subnet named by FLANNEL_SUBNET in an existing file, or null (missing, unreadable, bad). */
export async function readSubnetHint(path: string): Promise<Ipv4Net | null> {
  try {
    const env = parseSubnetEnvText(await Deno.readTextFile(path));
    if (!env.FLANNEL_SUBNET) return null;
    return networkOf(parseCidr(env.FLANNEL_SUBNET, true));
  } catch {
    return null;
  }
}
