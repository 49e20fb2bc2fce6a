/**
 * A burst of TCP resets (lib/net/reset.ts `resetDenoSocket`), each reset opening libc itself
 * (`own`, no holder: as every reset did before `holdResets`) against libc held for the burst
 * (`held`, as a service holds it while it runs), interleaved by round (issue 20, dloc).
 *
 *   deno run -A bench/_reset_burst.ts [--count 500] [--rounds 5]
 *
 * Prints µs of wall and of process CPU (user + system) per reset, medians of the rounds. Each
 * reset is of an accepted loopback connection whose peer is connected and idle; connections
 * are made before the timed part, so only the resets (and the closes after them) are timed.
 * @module
 */

import { cpuUsage } from "node:process";
import { benchFlags, median } from "./_util.ts";
import { holdResets, resetDenoSocket, resetSupport } from "../lib/net/reset.ts";

const flags = benchFlags({ numbers: { count: 500, rounds: 5 } });
if (!resetSupport().available) throw new Error("no libc through FFI here: nothing to measure");

/**
 * Process CPU seconds (user + system) so far, to the microsecond: /proc's 10 ms ticks were two
 * ticks for a held burst of 500 (40 us each).
 */
function cpuSeconds(): number {
  const u = cpuUsage();
  return (u.user + u.system) / 1e6;
}

async function burst(held: boolean): Promise<{ wallUs: number; cpuUs: number }> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const pairs: [Deno.TcpConn, Deno.Conn][] = [];
  for (let i = 0; i < flags.count; i++) {
    const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
    pairs.push([client, await listener.accept()]);
  }
  const release = held ? holdResets() : undefined;
  const cpu0 = cpuSeconds();
  const t0 = performance.now();
  for (const [, accepted] of pairs) {
    if (!resetDenoSocket(accepted)) throw new Error("reset failed");
    accepted.close();
  }
  const wallUs = (performance.now() - t0) * 1000 / flags.count;
  const cpuUs = (cpuSeconds() - cpu0) * 1e6 / flags.count;
  release?.();
  for (const [client] of pairs) client.close();
  listener.close();
  return { wallUs, cpuUs };
}

const rows: Record<"own" | "held", { wall: number[]; cpu: number[] }> = {
  own: { wall: [], cpu: [] },
  held: { wall: [], cpu: [] },
};
for (let r = 0; r < flags.rounds; r++) {
  for (const mode of r % 2 ? ["held", "own"] as const : ["own", "held"] as const) {
    const { wallUs, cpuUs } = await burst(mode === "held");
    rows[mode].wall.push(wallUs);
    rows[mode].cpu.push(cpuUs);
  }
}
console.log(
  `| resets (${flags.count} per round, ${flags.rounds} rounds) | wall µs/reset | CPU µs/reset |`,
);
console.log("| --- | ---: | ---: |");
for (const mode of ["own", "held"] as const) {
  const { wall, cpu } = rows[mode];
  console.log(`| ${mode} | ${median(wall).toFixed(1)} | ${median(cpu).toFixed(1)} |`);
}
console.log(`load ${Deno.loadavg().map((x) => x.toFixed(1)).join(" ")}`);
