/**
 * A tiny UDP sink for tests: binds `<ip>:<port>`, prints "ready", then one line
 * "<sender address> <payload>" per datagram. Bounded: it exits by itself after 60 s.
 *
 * @example
 * ```sh
 * ip netns exec wharn-w3k9z1-reg deno run -A test/kit/children/udp_sink.ts 198.18.0.2 5300
 * ```
 */
import dgram from "node:dgram";

const [ip, port] = Deno.args;
const s = dgram.createSocket("udp4");
s.on("message", (m, r) => console.log(r.address + " " + m.toString().trim()));
s.bind(Number(port), ip, () => console.log("ready"));
setTimeout(() => Deno.exit(0), 60_000);
