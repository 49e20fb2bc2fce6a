/**
 * The reset of a freshly dialled connection among `idle` open connection pairs (lib/net/reset.ts
 * `resetDenoSocket`: a dialled Deno conn has no descriptor field, so the reset looks its
 * descriptor up), this checkout's lib against `--old DIR`'s, interleaved per reset (issue 20,
 * dloc). Each reset is checked at the peer (it reads ECONNRESET). libc is held by both, as a
 * service holds it.
 *
 *   deno run -A bench/_reset_dialled.ts --old /work/old-dloc [--count 100] [--idle 0,200,1000]
 *
 * Prints the median µs per reset of each, per number of idle pairs.
 * @module
 */

import { benchFlags, median } from "./_util.ts";

const flags = benchFlags({ numbers: { count: 100 }, strings: ["old", "idle"] });
type ResetLib = typeof import("../lib/net/reset.ts");
const ways: [string, ResetLib][] = [["new", await import("../lib/net/reset.ts")]];
if (flags.old) ways.push(["old", await import(`${flags.old}/lib/net/reset.ts`) as ResetLib]);
const releases = ways.map(([, lib]) => lib.holdResets());

const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
const port = listener.addr.port;
const live: Deno.Conn[] = [];
console.log(`| idle pairs | ${ways.map(([name]) => `${name} µs/reset`).join(" | ")} |`);
console.log(`| ---: | ${ways.map(() => "---:").join(" | ")} |`);
for (const idle of (flags.idle ?? "0,200,1000").split(",").map(Number)) {
  while (live.length < idle * 2) {
    live.push(await Deno.connect({ hostname: "127.0.0.1", port }), await listener.accept());
  }
  const us = ways.map((): number[] => []);
  for (let i = 0; i < flags.count; i++) {
    for (let k = 0; k < ways.length; k++) {
      const w = (i + k) % ways.length; // alternating order
      const dialled = await Deno.connect({ hostname: "127.0.0.1", port });
      const accepted = await listener.accept();
      const t0 = performance.now();
      if (!ways[w][1].resetDenoSocket(dialled)) throw new Error(`${ways[w][0]}: reset failed`);
      us[w].push((performance.now() - t0) * 1000);
      const got = await accepted.read(new Uint8Array(1)).then(String, (e: Error) => e.name);
      if (got !== "ConnectionReset") throw new Error(`${ways[w][0]}: the peer read ${got}`);
      dialled.close();
      accepted.close();
    }
  }
  console.log(`| ${idle} | ${us.map((u) => median(u).toFixed(0)).join(" | ")} |`);
}
for (const c of live) c.close();
listener.close();
for (const release of releases) release();
console.log(`load ${Deno.loadavg()[0].toFixed(1)}`);
