/**
 * The kit's one exit hook. Whatever the kit starts or creates (child processes, namespaces, temp
 * dirs, clusters) registers a synchronous undo here, and deregisters it once it is cleaned up the
 * normal way; at process exit (`unload`) or on SIGINT/SIGTERM every undo still registered runs,
 * so a test that forgot its cleanup, or was interrupted, leaves nothing behind. Crashes that skip
 * even this are handled by the sweeper, `cleanupStale()` in netns.ts.
 *
 * Signal listeners are installed only while something is registered with `signals: true`
 * (namespaces and clusters) and removed as soon as nothing is, so a test does not end with a
 * pending signal op.
 *
 * @example
 * ```ts
 * const undo = atExit(() => Deno.kill(pid, "SIGKILL"));
 * // ... normal cleanup done:
 * undo();
 * ```
 */

interface Entry {
  fn: () => void;
  signals: boolean;
}

const entries = new Set<Entry>();
let signalCount = 0;
let onSignal: (() => void) | null = null;

function runAll(): void {
  const all = [...entries];
  entries.clear();
  // Processes first (their undo kills), then what they lived in: registration order.
  for (const e of all) {
    try {
      e.fn();
    } catch { /* best effort: keep undoing the rest */ }
  }
}

globalThis.addEventListener("unload", runAll);

/**
 * Registers `fn` to run synchronously at process exit; returns the function that deregisters it
 * (call it after cleaning up normally). With `signals`, SIGINT/SIGTERM also run it, then exit 130.
 */
export function atExit(fn: () => void, opts: { signals?: boolean } = {}): () => void {
  const e: Entry = { fn, signals: opts.signals ?? false };
  entries.add(e);
  if (e.signals && signalCount++ === 0) {
    onSignal = () => {
      runAll();
      Deno.exit(130);
    };
    Deno.addSignalListener("SIGINT", onSignal);
    Deno.addSignalListener("SIGTERM", onSignal);
  }
  let done = false;
  return () => {
    if (done) return;
    done = true;
    entries.delete(e);
    if (e.signals && --signalCount === 0 && onSignal) {
      Deno.removeSignalListener("SIGINT", onSignal);
      Deno.removeSignalListener("SIGTERM", onSignal);
      onSignal = null;
    }
  };
}

/** Kills `pid` with SIGKILL, ignoring a process that is already gone (for exit undos). */
export function killNow(pid: number): void {
  try {
    Deno.kill(pid, "SIGKILL");
  } catch { /* already gone */ }
}
