/**
 * Helper of the benchmarks: a plain lib/net TCP relay (`serve` + `relay`, one process, no
 * protocol). Two of them in series are the floor for any tunnel made of a server and a
 * client process: the same two user-space hops, with nothing on top.
 *
 *   BENCH_TARGET=127.0.0.1:8080 deno run -A bench/_relay.ts   # prints {"port":N}
 */
import { dial, parseHostPort, relay, serve } from "../lib/net/mod.ts";

const target = parseHostPort(Deno.env.get("BENCH_TARGET") ?? "");
const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
serve(listener, async (conn) => {
  const upstream = await dial(target.host, target.port);
  await relay(conn, upstream);
}, { handshakeTimeoutMs: 0 });
console.log(JSON.stringify({ port: listener.addr.port }));
