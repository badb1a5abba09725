/**
 * One gRPC watch stream with one watcher, read as a queue of responses: what the watch loop
 * (`watch.ts`) awaits, and what closing the registry cancels.
 */
import type { IDuplexStream, IWatchRequest, IWatchResponse } from "etcd3";
import { withTimeout } from "../../base/async.ts";

/** The stream, its responses queued until `next()` takes them. */
export class WatchStream {
  #queue: IWatchResponse[] = [];
  #failed?: Error;
  #wake?: () => void;
  #closed = false;
  #onAbort = () => this.#notify();

  constructor(
    private readonly stream: IDuplexStream<IWatchRequest, IWatchResponse>,
    private readonly signal: AbortSignal,
  ) {
    stream.on("data", (r) => {
      this.#queue.push(r);
      this.#notify();
    });
    stream.on("error", (e) => this.#fail(e));
    stream.on("end", () => this.#fail(new Error("etcd closed the watch stream")));
    signal.addEventListener("abort", this.#onAbort, { once: true });
  }

  #notify(): void {
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  #fail(e: Error): void {
    this.#failed ??= e;
    this.#notify();
  }

  write(req: IWatchRequest): void {
    this.stream.write(req);
  }

  /** The next response; null when the signal aborted; throws the stream's error. */
  async next(timeoutMs?: number): Promise<IWatchResponse | null> {
    while (true) {
      if (this.signal.aborted || this.#closed) return null;
      const r = this.#queue.shift();
      if (r) return r;
      if (this.#failed) throw this.#failed;
      const woken = new Promise<void>((resolve) => this.#wake = resolve);
      // A TimeoutError is retried by the watch loop like any other stream failure.
      await (timeoutMs === undefined
        ? woken
        : withTimeout(woken, timeoutMs, "waiting for etcd to answer the watch request"));
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.signal.removeEventListener("abort", this.#onAbort);
    this.#notify();
    // Cancelling makes the stream emit a CANCELLED error, which must have a listener; ours is set.
    try {
      this.stream.cancel();
    } catch { /* already gone */ }
  }
}
