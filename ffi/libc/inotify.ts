/**
 * inotify(7): a non-blocking inotify fd, watches on paths, and the names and masks of the events
 * read from it. Wait for it to become readable with {@link PollSet.waitAsync} (no thread of the
 * isolate is held while waiting), then {@link readInotify} until it returns null.
 *
 * @example
 * ```ts
 * const fd = openInotify();
 * addInotifyWatch(fd, "/var/lib/weft", IN_MODIFY | IN_ATTRIB);
 * for (const ev of readInotify(fd, buf) ?? []) console.log(ev.name, ev.mask);
 * closeFd(fd);
 * ```
 */
import { lastError } from "./errno.ts";
import { cString, readFd } from "./fd.ts";
import { libc } from "./lib.ts";

export const IN_MODIFY = 0x2;
export const IN_ATTRIB = 0x4;
export const IN_CLOSE_WRITE = 0x8;
export const IN_MOVED_FROM = 0x40;
export const IN_MOVED_TO = 0x80;
export const IN_CREATE = 0x100;
export const IN_DELETE = 0x200;
export const IN_DELETE_SELF = 0x400;
export const IN_MOVE_SELF = 0x800;
/** Events were lost (the queue was full): the reader must assume anything changed. */
export const IN_Q_OVERFLOW = 0x4000;
/** The watch was removed (its directory deleted, the fs unmounted). */
export const IN_IGNORED = 0x8000;
export const IN_ONLYDIR = 0x1000000;
const IN_NONBLOCK = 0x800;
const IN_CLOEXEC = 0x80000;

export interface InotifyEvent {
  wd: number;
  mask: number;
  /** The file's name inside a watched directory; "" for an event on the watched path itself. */
  name: string;
}

/** A non-blocking, close-on-exec inotify instance. */
export function openInotify(): number {
  const fd = libc().inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) {
    throw lastError("inotify_init1", "IN_NONBLOCK|IN_CLOEXEC", {
      EMFILE: "raise fs.inotify.max_user_instances (sysctl)",
    });
  }
  return fd;
}

/** Adds (or changes) the watch on `path`; returns its watch descriptor. */
export function addInotifyWatch(fd: number, path: string, mask: number): number {
  const wd = libc().inotify_add_watch(fd, cString(path), mask);
  if (wd < 0) {
    throw lastError("inotify_add_watch", `${path}, 0x${mask.toString(16)}`, {
      ENOSPC: "raise fs.inotify.max_user_watches (sysctl)",
    });
  }
  return wd;
}

const decoder = new TextDecoder();

/**
 * The events queued now (one read into `buf`, which must hold at least one event with its name:
 * 4096 bytes is plenty), or null when there are none.
 */
export function readInotify(fd: number, buf: Uint8Array<ArrayBuffer>): InotifyEvent[] | null {
  const n = readFd(fd, buf);
  if (n === null || n === 0) return null;
  const view = new DataView(buf.buffer, buf.byteOffset, n);
  const out: InotifyEvent[] = [];
  // struct inotify_event { int wd; uint32_t mask, cookie, len; char name[len]; } (NUL-padded)
  for (let off = 0; off + 16 <= n;) {
    const len = view.getUint32(off + 12, true);
    const raw = buf.subarray(off + 16, off + 16 + len);
    const nul = raw.indexOf(0);
    out.push({
      wd: view.getInt32(off, true),
      mask: view.getUint32(off + 4, true),
      name: decoder.decode(nul < 0 ? raw : raw.subarray(0, nul)),
    });
    off += 16 + len;
  }
  return out;
}
