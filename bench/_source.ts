/**
 * Helper of the benchmarks: the length source ({@linkcode serveLengthSource}) in its own
 * process, so the client's event loop measures only the path under test. Listens on
 * 127.0.0.1:`BENCH_PORT` (unset or 0: a free port) and prints `{"port":N}` once listening.
 * Start it with `startLengthSource` (bench/_util.ts).
 *
 *   deno run -A bench/_source.ts                   # prints {"port":N}
 */
import { serveLengthSource } from "./_util.ts";

const listener = Deno.listen({
  hostname: "127.0.0.1",
  port: Number(Deno.env.get("BENCH_PORT") ?? 0),
});
console.log(JSON.stringify({ port: listener.addr.port }));
await serveLengthSource(listener);
