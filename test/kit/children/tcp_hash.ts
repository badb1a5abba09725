/**
 * A TCP transfer whose bytes are checked end to end, for datapath tests: `serve` accepts one
 * connection, reads it to the end and prints `{"bytes":n,"sha256":"…"}`; `send` connects, writes
 * `bytes` bytes of a seeded pseudo-random stream and prints the same for what it sent. Equal
 * lines mean every byte arrived, in order (TCP checksums alone would miss a datapath that
 * rewrites checksums over data it reordered). Each side exits 3 after 20 s.
 *
 * @example
 * ```sh
 * deno run -A test/kit/children/tcp_hash.ts serve 198.19.2.0 5300
 * deno run -A test/kit/children/tcp_hash.ts send 198.19.2.0 5300 16777216
 * ```
 */
import { createHash } from "node:crypto";

const [mode, host, portText, bytesText] = Deno.args;
const port = Number(portText);
const timeoutMs = 20_000;
setTimeout(() => {
  console.error(`tcp_hash ${mode}: timed out after ${timeoutMs} ms`);
  Deno.exit(3);
}, timeoutMs);

/** xorshift32 stream: the same bytes for the same seed, cheap to make. */
function fill(buf: Uint8Array, state: { s: number }): void {
  const w = new Uint32Array(buf.buffer, buf.byteOffset, buf.byteLength >>> 2);
  let s = state.s;
  for (let i = 0; i < w.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    w[i] = s >>> 0;
  }
  state.s = s;
}

if (mode === "serve") {
  const l = Deno.listen({ hostname: host, port });
  console.log(JSON.stringify({ listening: true }));
  const conn = await l.accept();
  const h = createHash("sha256");
  let n = 0;
  for await (const chunk of conn.readable) {
    h.update(chunk);
    n += chunk.length;
  }
  l.close();
  console.log(JSON.stringify({ bytes: n, sha256: h.digest("hex") }));
} else if (mode === "send") {
  const total = Number(bytesText);
  const conn = await Deno.connect({ hostname: host, port });
  const h = createHash("sha256");
  const state = { s: 0x9e3779b9 };
  const buf = new Uint8Array(1 << 16);
  let sent = 0;
  while (sent < total) {
    fill(buf, state);
    const part = buf.subarray(0, Math.min(buf.length, total - sent));
    for (let off = 0; off < part.length;) off += await conn.write(part.subarray(off));
    h.update(part);
    sent += part.length;
  }
  conn.close();
  console.log(JSON.stringify({ bytes: sent, sha256: h.digest("hex") }));
} else {
  console.error("usage: tcp_hash.ts serve <host> <port> | send <host> <port> <bytes>");
  Deno.exit(2);
}
Deno.exit(0);
