/**
 * The short soak (CI): bench/soak.ts for 2 × 10 s of mixed traffic through depot, depot
 * --mux, fusion and tunnel (spawned services): connections of random sizes opened, closed
 * and abandoned mid-transfer, each checked by SHA-256 both ways. After each phase (and a
 * settle period of at least 6 s):
 *
 * - nothing was lost: every exchange that was not abandoned on purpose was byte-exact;
 * - open FDs of every service are back at the idle baseline (+2: a listener's accept in
 *   flight, a log pipe);
 * - RSS after the second phase is within 10% + 16 MiB of the first phase's high-water mark,
 *   plus the protocol buffers below (the first phase need not have filled them all: seen in
 *   CI, fusion-server 146.5 -> 178.8 MiB with its 2 x 16 MiB per-session bounds); a leak of
 *   per-connection state grows with the connections, hundreds per phase here, and still
 *   shows against the absolute bound that follows;
 * - RSS after the load is within 30% + 20 MiB of the idle baseline, plus the buffers the
 *   protocol may legitimately have held at the peak: freed buffers' pages stay with the
 *   allocator (glibc keeps its high-water mark), so RSS does not fall back below what the
 *   peak needed. Plain depot relays hold only pooled copy buffers: no extra allowance.
 *   Mux stacks (depot --mux, tunnel) grow a stream's window up to 16 MiB while its reader
 *   keeps up: 16 MiB per concurrent stream. Fusion buffers up to its 16 MiB receive bound
 *   in each direction of each session. Measured in-process with forced GC, fusion's live
 *   heap returns to +0.9 MiB of idle and pooled buffers to +8 MiB while RSS sits at a
 *   plateau (167, 170, 172 MiB over three equal rounds): retention, not a leak — the
 *   phase-to-phase check above is what catches a leak.
 */

import { assert, assertEquals } from "./_assert.ts";
import { formatSoak, runSoak } from "../bench/soak.ts";

const fdSlack = 2;
const phaseGrowthFactor = 1.1;
const phaseGrowthSlackMiB = 16;

const workers = 3;
const MiBPerWindow = 16;

/** MiB of protocol buffers a stack may legitimately hold at its peak (see above). */
function bufferMiB(proc: string): number {
  return proc.startsWith("fusion/")
    ? workers * 2 * MiBPerWindow
    : proc.startsWith("depot-mux/") || proc.startsWith("tunnel/")
    ? workers * MiBPerWindow
    : 0;
}

/** The idle baseline + 30% + 20 MiB + the buffers the stack may hold at its peak (above). */
function rssAllowance(proc: string, idleMiB: number): number {
  return idleMiB * 1.3 + 20 + bufferMiB(proc);
}

Deno.test({
  name: "soak (short): nothing lost; FDs back at idle, RSS bounded and not growing",
  sanitizeOps: true,
  sanitizeResources: true,
}, async () => {
  const r = await runSoak({ loadSeconds: 20, phases: 2, workers, settleSeconds: 15 });
  console.log(formatSoak(r));
  for (const s of Object.keys(r.ok)) {
    assertEquals(r.failed[s], 0, `${s}: ${r.errors.join("; ")}`);
    assert(r.ok[s] > 10, `${s}: only ${r.ok[s]} exchanges`);
  }
  const [first, last] = [r.afterPhase[0], r.afterPhase[r.afterPhase.length - 1]];
  for (const k of r.procs) {
    const idle = r.baseline[k];
    for (const [i, a] of r.afterPhase.entries()) {
      assert(
        a[k].fds <= idle.fds + fdSlack,
        `${k}: ${a[k].fds} FDs after phase ${i + 1}, ${idle.fds} idle`,
      );
    }
    // Against the first phase's high-water mark: where RSS settles after a phase depends on
    // when the allocator last trimmed; what the peak needed does not.
    const firstHigh = Math.max(first[k].rssMiB, r.peakPhase[0]?.[k] ?? 0);
    assert(
      last[k].rssMiB <= firstHigh * phaseGrowthFactor + phaseGrowthSlackMiB + bufferMiB(k),
      `${k}: RSS grew from ${firstHigh} to ${last[k].rssMiB} MiB between equal phases`,
    );
    assert(
      last[k].rssMiB <= rssAllowance(k, idle.rssMiB),
      `${k}: RSS ${last[k].rssMiB} MiB after the load, ${idle.rssMiB} MiB idle`,
    );
  }
});
