/**
 * flannel's etcd key layout under a prefix: `<prefix>/config` and `<prefix>/subnets/<key>`, with
 * lease keys relative to `subnets/` ("198.19.5.0-24") on the Registry side.
 */
import { Buffer } from "node:buffer";
import { RegistryError } from "../contract/registry.ts";

/** The exclusive end of the key range sharing `prefix` (etcd's "prefix" range). */
function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i] < 0xff) {
      end[i]++;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

export class EtcdKeys {
  readonly config: Buffer;
  /** `<prefix>/subnets/`, and the end of its range. */
  readonly subnets: Buffer;
  readonly subnetsEnd: Buffer;

  constructor(readonly prefix: string) {
    this.config = Buffer.from(`${prefix}/config`);
    this.subnets = Buffer.from(`${prefix}/subnets/`);
    this.subnetsEnd = prefixEnd(this.subnets);
  }

  /** Key relative to subnets/, or null for keys deeper down or outside. */
  rel(key: Buffer): string | null {
    if (
      key.length <= this.subnets.length ||
      !this.subnets.equals(key.subarray(0, this.subnets.length))
    ) {
      return null;
    }
    const rel = key.subarray(this.subnets.length).toString();
    return rel.includes("/") ? null : rel;
  }

  /** The full etcd key of lease `key`; RegistryError for an empty key or one with "/". */
  lease(key: string): Buffer {
    if (key === "" || key.includes("/")) {
      throw new RegistryError(`lease key "${key}" is empty or contains "/"`);
    }
    return Buffer.from(`${this.prefix}/subnets/${key}`);
  }
}
