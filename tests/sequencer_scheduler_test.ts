/**
 * Schedulers in a time-stepped simulation of two paths with 4:1 rates: with per-path caps
 * the sum of the rates is reached and the reorder buffer stays small; without caps (each
 * path queueing like a huge socket buffer) round-robin collapses toward 2 × the slow path.
 */
import {
  dataFrameBytes,
  type PathCapOptions,
  Receiver,
  RoundRobinScheduler,
  type Scheduler,
  Sender,
  WeightedScheduler,
} from "../lib/sequencer/mod.ts";
import { assert } from "./_assert.ts";

interface Result {
  /** Delivered payload bytes per ms after warm-up, as a fraction of the summed rates. */
  ofSum: number;
  /** Share of frames the fast path carried. */
  fastShare: number;
  reorderPeak: number;
}

function run(scheduler: Scheduler, pathCap: PathCapOptions): Result {
  const rates = [10_000, 2_500]; // bytes per ms: 80 and 20 Mbit/s
  const delayMs = 5;
  const frame = 16 * 1024;
  const s = new Sender({ windowBytes: 8 * 1024 * 1024, scheduler, pathCap });
  const r = new Receiver({ maxBufferedBytes: 9 * 1024 * 1024 });
  const queues: { seq: number; bytes: number; data: Uint8Array }[][] = [[], []];
  const credit = [0, 0];
  const recvBytes = [0, 0];
  const arrivals: { at: number; path: number; seq: number; bytes: number; data: Uint8Array }[] = [];
  const acks: { at: number; path: number; bytes: number; cum: number }[] = [];
  const carried = [0, 0];
  s.addPath(0, 0);
  s.addPath(1, 0);
  const payload = new Uint8Array(frame);
  let delivered = 0;
  let deliveredAtWarm = 0;
  const warmMs = 1000;
  const endMs = 4000;
  for (let now = 0; now < endMs; now++) {
    if (now === warmMs) deliveredAtWarm = delivered;
    while (s.hasRoom(frame)) s.push(payload);
    for (let a = s.next(now); a; a = s.next(now)) {
      queues[a.path].push({ seq: a.frame.seq, bytes: a.frame.bytes, data: a.frame.data! });
      carried[a.path]++;
    }
    for (let p = 0; p < 2; p++) {
      credit[p] += rates[p];
      while (queues[p].length > 0 && credit[p] >= queues[p][0].bytes) {
        const f = queues[p].shift()!;
        credit[p] -= f.bytes;
        arrivals.push({ at: now + delayMs, path: p, seq: f.seq, bytes: f.bytes, data: f.data });
      }
      if (queues[p].length === 0) credit[p] = Math.min(credit[p], rates[p]);
    }
    while (arrivals.length > 0 && arrivals[0].at <= now) {
      const f = arrivals.shift()!;
      recvBytes[f.path] += f.bytes;
      r.accept(f.seq, f.data, now);
    }
    arrivals.sort((x, y) => x.at - y.at);
    for (let item = r.shift(); item; item = r.shift()) delivered += item.data?.length ?? 0;
    for (let p = 0; p < 2; p++) {
      acks.push({ at: now + delayMs, path: p, bytes: recvBytes[p], cum: r.cumAck });
    }
    while (acks.length > 0 && acks[0].at <= now) {
      const a = acks.shift()!;
      s.onPathAck(a.path, a.bytes, now);
      s.onCumAck(a.cum);
    }
  }
  const perMs = (delivered - deliveredAtWarm) / (endMs - warmMs);
  const payloadRate = (rates[0] + rates[1]) * frame / dataFrameBytes(frame);
  return {
    ofSum: perMs / payloadRate,
    fastShare: carried[0] / (carried[0] + carried[1]),
    reorderPeak: r.stats.reorderPeakBytes,
  };
}

Deno.test("scheduler: weighted with per-path caps reaches the sum of 4:1 paths", () => {
  const res = run(new WeightedScheduler(), {});
  assert(res.ofSum > 0.95, `throughput ${res.ofSum.toFixed(3)} of the sum`);
  assert(res.fastShare > 0.72 && res.fastShare < 0.88, `fast share ${res.fastShare}`);
  assert(res.reorderPeak < 2 * 1024 * 1024, `reorder peak ${res.reorderPeak}`);
});

Deno.test("scheduler: round-robin under the same caps also fills both paths", () => {
  const res = run(new RoundRobinScheduler(), {});
  assert(res.ofSum > 0.9, `throughput ${res.ofSum.toFixed(3)} of the sum`);
});

Deno.test("scheduler: without caps a slow path holds the reorder buffer hostage", () => {
  const huge = 64 * 1024 * 1024;
  const res = run(new RoundRobinScheduler(), {
    initialCapBytes: huge,
    minCapBytes: huge,
    maxCapBytes: huge,
  });
  assert(res.ofSum < 0.6, `throughput ${res.ofSum.toFixed(3)} of the sum`);
  assert(res.reorderPeak > 3 * 1024 * 1024, `reorder peak ${res.reorderPeak}`);
});
