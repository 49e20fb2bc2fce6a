/**
 * Sender and Receiver joined by simulated paths (each in order, like TCP) under scripted
 * and random schedules: reordering across paths, duplicates, path deaths that lose what
 * was in flight, and a tight receive bound. The output must equal the input.
 */
import {
  dataFrameBytes,
  finFrameBytes,
  RandomScheduler,
  Receiver,
  RoundRobinScheduler,
  Sender,
  WeightedScheduler,
} from "../lib/sequencer/mod.ts";
import { assert, assertEquals } from "./_assert.ts";

Deno.test("receiver: reordered frames come out in order, duplicates dropped", () => {
  const r = new Receiver();
  const d = (n: number) => Uint8Array.of(n);
  assertEquals(r.accept(2, d(2), 0), "buffered");
  assertEquals(r.accept(1, d(1), 0), "buffered");
  assertEquals(r.accept(2, d(2), 0), "duplicate");
  assertEquals(r.hasReady, false);
  assertEquals(r.accept(0, d(0), 0), "delivered");
  assertEquals([r.shift()?.seq, r.shift()?.seq, r.shift()?.seq], [0, 1, 2]);
  assertEquals(r.accept(1, d(1), 0), "duplicate");
  assertEquals(r.cumAck, 3);
  assertEquals(r.stats.duplicates, 2);
  assertEquals(r.stats.reorderPeakBytes, 2);
  r.accept(3, null, 0);
  assertEquals(r.shift(), { seq: 3, data: null });
  assert(r.finished);
});

Deno.test("receiver: a hole NACKs after 10 frames beyond it or after the timeout", () => {
  const r = new Receiver({ nackGapFrames: 10, nackTimeoutMs: 300, nackRepeatMs: 200 });
  r.accept(0, Uint8Array.of(0), 0);
  for (let s = 2; s <= 10; s++) r.accept(s, Uint8Array.of(s), 0);
  assertEquals(r.nacks(1), []); // 9 beyond the hole
  r.accept(12, Uint8Array.of(12), 1);
  assertEquals(r.nacks(2), [{ from: 1, to: 2 }, { from: 11, to: 12 }]);
  assertEquals(r.nacks(50), []); // repeat pause
  assertEquals(r.nacks(203), [{ from: 1, to: 2 }, { from: 11, to: 12 }]);
  const t = new Receiver({ nackTimeoutMs: 300 });
  t.accept(1, Uint8Array.of(1), 1000);
  assertEquals(t.nacks(1200), []);
  assertEquals(t.nacks(1301), [{ from: 0, to: 1 }]);
});

Deno.test("receiver: frames past the buffer bound are dropped, the next in order never", () => {
  const r = new Receiver({ maxBufferedBytes: 10 });
  assertEquals(r.accept(1, new Uint8Array(8), 0), "buffered");
  assertEquals(r.accept(2, new Uint8Array(8), 0), "dropped");
  assertEquals(r.accept(0, new Uint8Array(8), 0), "delivered");
  assertEquals(r.readyBytes, 16);
});

Deno.test("sender: window, cumulative ack, resend on path death on another path", () => {
  const s = new Sender({ windowBytes: 100, scheduler: new RoundRobinScheduler() });
  s.addPath(1, 0);
  s.addPath(2, 0);
  assert(s.hasRoom(60));
  s.push(new Uint8Array(60));
  assert(!s.hasRoom(60));
  s.push(new Uint8Array(30));
  const a = s.next(0)!;
  const b = s.next(0)!;
  assertEquals([a.path, b.path], [1, 2]);
  assertEquals(s.next(0), null);
  s.onPathAck(2, dataFrameBytes(30), 1);
  assertEquals(s.removePath(1), 1);
  const c = s.next(2)!;
  assertEquals([c.path, c.frame.seq, c.resend], [2, 0, true]);
  assertEquals(s.onCumAck(2), 90);
  assert(s.hasRoom(100));
  s.pushFin();
  const f = s.next(3)!;
  assertEquals(f.frame.bytes, finFrameBytes);
  s.onCumAck(3);
  assert(s.finAcked);
});

Deno.test("sender: NACK of a frame on a delivering path is ignored, on a stalled one resent", () => {
  const s = new Sender({ scheduler: new RoundRobinScheduler(), stallMs: 100 });
  s.addPath(1, 0);
  s.addPath(2, 0);
  s.push(new Uint8Array(10));
  s.push(new Uint8Array(10));
  s.next(0); // seq 0 on path 1
  s.next(0); // seq 1 on path 2
  assertEquals(s.onNack([{ from: 0, to: 1 }], 50), 0);
  assertEquals(s.onNack([{ from: 0, to: 1 }], 150), 1);
  const r = s.next(150)!;
  assertEquals([r.frame.seq, r.path, r.resend], [0, 2, true]);
});

/** A simulated path: frames in order, with a random delivery delay per step. */
interface SimPath {
  id: number;
  toRecv: { seq: number; data: Uint8Array | null; bytes: number }[];
  recvBytes: number;
  alive: boolean;
}

function simulate(seed: number, schedulerName: "rr" | "random" | "weighted"): void {
  let x = seed;
  const rnd = () => ((x = (x * 1103515245 + 12345) % 2147483648) / 2147483648);
  const total = 200_000 + Math.floor(rnd() * 200_000);
  const input = new Uint8Array(total);
  for (let i = 0; i < total; i++) input[i] = (i * 31 + seed) & 0xff;
  const scheduler = schedulerName === "rr"
    ? new RoundRobinScheduler()
    : schedulerName === "random"
    ? new RandomScheduler(rnd)
    : new WeightedScheduler();
  const s = new Sender({
    windowBytes: 64 * 1024,
    scheduler,
    stallMs: 30,
    pathCap: { initialCapBytes: 8192, minCapBytes: 4096 },
  });
  const r = new Receiver({ maxBufferedBytes: 48 * 1024, nackTimeoutMs: 20, nackRepeatMs: 10 });
  const paths = new Map<number, SimPath>();
  let nextPathId = 1;
  const addPath = (now: number) => {
    const id = nextPathId++;
    paths.set(id, { id, toRecv: [], recvBytes: 0, alive: true });
    s.addPath(id, now);
  };
  addPath(0);
  addPath(0);
  addPath(0);
  const out: Uint8Array[] = [];
  const silentUntil = new Map<number, number>();
  let written = 0;
  let finished = false;
  for (let now = 1; now < 200_000 && !finished; now++) {
    // Application writes.
    while (written < total && rnd() < 0.7) {
      const n = Math.min(1 + Math.floor(rnd() * 3000), total - written);
      if (!s.hasRoom(n)) break;
      s.push(input.slice(written, written + n));
      written += n;
    }
    if (written === total && !s.finPushed) s.pushFin();
    for (let a = s.next(now); a; a = s.next(now)) {
      const p = paths.get(a.path)!;
      p.toRecv.push({ seq: a.frame.seq, data: a.frame.data, bytes: a.frame.bytes });
      // A duplicate now and then (as after a spurious resend).
      if (rnd() < 0.01) p.toRecv.push({ seq: a.frame.seq, data: a.frame.data, bytes: 0 });
    }
    // Deliver some frames from random paths (in order within a path).
    for (const p of paths.values()) {
      if (!p.alive) continue;
      let k = Math.floor(rnd() * 4);
      while (k-- > 0 && p.toRecv.length > 0) {
        const f = p.toRecv.shift()!;
        p.recvBytes += f.bytes;
        r.accept(f.seq, f.data, now);
      }
      if (rnd() < 0.5) s.onPathAck(p.id, p.recvBytes, now);
    }
    // The application reads.
    if (rnd() < 0.8) {
      for (let item = r.shift(); item; item = r.shift()) {
        if (item.data === null) finished = true;
        else out.push(item.data);
      }
    }
    s.onCumAck(r.cumAck);
    const nacks = r.nacks(now);
    if (nacks.length > 0) s.onNack(nacks, now);
    // Path deaths lose whatever was in flight; a new path joins later.
    if (rnd() < 0.003 && paths.size > 1) {
      const victim = [...paths.keys()][Math.floor(rnd() * paths.size)];
      paths.delete(victim);
      s.removePath(victim);
    }
    if (paths.size < 3 && rnd() < 0.01) addPath(now);
    // A silent path (blackhole): delivers nothing for a while, then is declared dead.
    if (rnd() < 0.002 && paths.size > 1) {
      const p = [...paths.values()][0];
      if (p.alive) (p.alive = false, silentUntil.set(p.id, now + 100));
    }
    for (const [id, until] of silentUntil) {
      if (now >= until) {
        silentUntil.delete(id);
        paths.delete(id);
        s.removePath(id);
      }
    }
  }
  assert(finished, `seed ${seed}: transfer did not finish`);
  const got = new Uint8Array(out.reduce((n, c) => n + c.length, 0));
  let o = 0;
  for (const c of out) (got.set(c, o), o += c.length);
  assertEquals(got.length, total, `seed ${seed}: length`);
  assert(got.every((b, i) => b === input[i]), `seed ${seed}: content differs`);
}

for (const sched of ["rr", "random", "weighted"] as const) {
  Deno.test(`sequencer: random schedules deliver the original bytes (${sched})`, () => {
    for (let seed = 1; seed <= 15; seed++) simulate(seed * 7919, sched);
  });
}
