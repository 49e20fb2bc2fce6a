/**
 * The deadline wheel sleeps until something is due (lib/net/deadline.ts): driven here by a
 * hand-made clock and timer, so every wake is seen. Whatever is registered, a timer is set
 * (no deadline can be forgotten), each deadline fires once, never early and at most a tick
 * after its due time plus the timer's own lateness, and far deadlines cost about one wake a
 * second instead of one per tick.
 */

import { assert, assertEquals } from "./_assert.ts";
import { type Deadline, DeadlineWheel, IdleTimer, type WheelTimer } from "../lib/net/mod.ts";

/** A wheel on a hand-driven clock and timer (one timer at a time, as the wheel keeps it). */
function driven(opts: { tickMs?: number; lingerMs?: number } = {}) {
  let now = 1_000_000;
  let pending: { fn: () => void; at: number; id: number } | undefined;
  let nextId = 0;
  let wakes = 0;
  let sets = 0;
  const timer: WheelTimer = {
    set(fn, delayMs) {
      assert(pending === undefined, "the wheel sets a second timer without clearing the first");
      assert(delayMs >= 0 && Number.isFinite(delayMs), `bad delay ${delayMs}`);
      pending = { fn, at: now + delayMs, id: ++nextId };
      sets++;
      return pending.id;
    },
    clear(id) {
      assertEquals(id, pending?.id, "the wheel clears a timer it did not set");
      pending = undefined;
    },
  };
  const wheel = new DeadlineWheel({ ...opts, now: () => now, timer });
  return {
    wheel,
    get now() {
      return now;
    },
    get pendingAt() {
      return pending?.at;
    },
    get wakes() {
      return wakes;
    },
    /** Timers set so far. */
    get sets() {
      return sets;
    },
    /** Move the clock to `until`, running each timer when it is due (`late` ms after). */
    advanceTo(until: number, late: () => number = () => 0) {
      while (pending && pending.at <= until) {
        const p = pending;
        pending = undefined;
        now = Math.max(now, p.at + late());
        wakes++;
        p.fn();
      }
      now = Math.max(now, until);
    },
  };
}

Deno.test("deadline wake: random deadlines fire once, on time, and a timer is always set", () => {
  const w = driven({ tickMs: 10 });
  const start = w.now;
  let seed = 3;
  const rand = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  const fired = new Map<Deadline, number[]>();
  const deleted = new Set<Deadline>();
  const all: Deadline[] = [];
  const make = (due: number, moves = 0): Deadline => {
    let left = moves;
    const d: Deadline = {
      due,
      fire: (now) => {
        fired.set(d, [...(fired.get(d) ?? []), now]);
        // Some move themselves on (as an idle timer touched meanwhile does).
        if (left-- > 0) return now + 1 + Math.floor(rand() * 3000);
      },
    };
    all.push(d);
    return d;
  };
  const check = () => {
    if (w.wheel.size > 0) assert(w.pendingAt !== undefined, "deadlines registered, no timer set");
  };
  for (let step = 0; step < 3000; step++) {
    const r = rand();
    if (r < 0.5) {
      // Near and far ones: within a tick, within the look-ahead, beyond a turn of the wheel.
      const span = [5, 500, 3000, 20_000][Math.floor(rand() * 4)];
      w.wheel.add(make(w.now + Math.floor(rand() * span), rand() < 0.2 ? 2 : 0));
    } else if (r < 0.6 && all.length > 0) {
      const d = all[Math.floor(rand() * all.length)];
      if (!fired.has(d) && !deleted.has(d)) {
        w.wheel.delete(d);
        deleted.add(d);
      }
    } else {
      w.advanceTo(w.now + Math.floor(rand() * 40), () => Math.floor(rand() * 3));
    }
    check();
  }
  w.advanceTo(w.now + 60_000, () => Math.floor(rand() * 3));
  assertEquals(w.wheel.size, 0);
  assertEquals(w.pendingAt, undefined, "empty and unheld: no timer left");
  for (const d of all) {
    const at = fired.get(d);
    if (deleted.has(d)) {
      assertEquals(at, undefined, "a deleted deadline fired");
      continue;
    }
    assert(at !== undefined, `a deadline due at +${d.due - start} ms never fired`);
    // Each fire (the last one at d.due; moved ones earlier) is due by then, a tick plus the
    // timer's lateness at most after.
    const last = at[at.length - 1];
    assert(last >= d.due, `fired early: ${last} < ${d.due}`);
    assert(last - d.due <= 10 + 3, `fired ${last - d.due} ms late`);
  }
});

Deno.test("deadline wake: far deadlines wake the wheel about once a second, not every tick", () => {
  const w = driven({ tickMs: 10 });
  let fired = 0;
  for (let i = 0; i < 50; i++) {
    w.wheel.add({ due: w.now + 30_000 + i * 100, fire: () => void fired++ });
  }
  w.advanceTo(w.now + 25_000);
  assertEquals(fired, 0);
  // Ticking every 10 ms would have been 2,500 wakes.
  assert(w.wakes <= 30, `${w.wakes} wakes in 25 s`);
  w.advanceTo(w.now + 10_000);
  assertEquals(fired, 50);
  assertEquals(w.pendingAt, undefined);
});

Deno.test("deadline wake: a deadline due before the next wake moves the timer earlier", () => {
  const w = driven({ tickMs: 10 });
  let early = 0;
  w.wheel.add({ due: w.now + 60_000, fire: () => {} });
  assert(w.pendingAt !== undefined && w.pendingAt - w.now >= 900, "a far deadline: a long sleep");
  w.wheel.add({ due: w.now + 25, fire: () => void early++ });
  assert(w.pendingAt !== undefined && w.pendingAt - w.now <= 30, "woken for the near one");
  const later = w.pendingAt;
  w.wheel.add({ due: w.now + 500, fire: () => {} }); // after the next wake: the timer stays
  assertEquals(w.pendingAt, later);
  w.advanceTo(w.now + 30);
  assertEquals(early, 1);
});

Deno.test("deadline wake: a held wheel keeps its timer while empty, stops after lingering", () => {
  const w = driven({ tickMs: 10, lingerMs: 1000 });
  const release = w.wheel.hold();
  const d: Deadline = { due: w.now + 60_000, fire: () => {} };
  w.wheel.add(d);
  w.wheel.delete(d);
  assert(w.pendingAt !== undefined, "held: the timer outlives the last deadline");
  // A connection's deadline added and removed: no timer set or cleared for it.
  const sets = w.sets;
  const conn: Deadline = { due: w.now + 10_000, fire: () => {} };
  w.wheel.add(conn);
  w.wheel.delete(conn);
  assertEquals(w.sets, sets);
  w.advanceTo(w.now + 20_000);
  assertEquals(w.wheel.size, 0);
  // Empty from its first wake after the last fire, it lingered a second, then stopped.
  assertEquals(w.pendingAt, undefined);
  assert(w.wakes <= 20, `${w.wakes} wakes`);
  w.wheel.add(d);
  w.wheel.delete(d);
  assert(w.pendingAt !== undefined);
  release();
  assertEquals(w.pendingAt, undefined, "released while empty: stopped at once");
});

Deno.test("deadline wake: an idle timer reads the clock at each touch", () => {
  const w = driven({ tickMs: 10 });
  let idle = 0;
  const t = new IdleTimer(2_000, () => idle++, w.wheel);
  // Busy for 10 s with a touch every 150 ms, while the wheel sleeps up to a second.
  for (let i = 0; i < 66; i++) {
    w.advanceTo(w.now + 150);
    t.touch();
  }
  assertEquals(idle, 0, "fired while touched");
  const lastTouch = w.now;
  w.advanceTo(lastTouch + 1_990);
  assertEquals(idle, 0, "fired before idleMs");
  w.advanceTo(lastTouch + 2_020);
  assertEquals(idle, 1);
  assertEquals(w.wheel.size, 0);
});

Deno.test("deadline wake: a fire that throws leaves the timer set for the rest", () => {
  const w = driven({ tickMs: 10 });
  let later = 0;
  w.wheel.add({
    due: w.now + 20,
    fire: () => {
      throw new Error("boom");
    },
  });
  w.wheel.add({ due: w.now + 5_000, fire: () => void later++ });
  let thrown = false;
  try {
    w.advanceTo(w.now + 30);
  } catch {
    thrown = true;
  }
  assert(thrown);
  assert(w.pendingAt !== undefined, "no timer after a fire threw");
  w.advanceTo(w.now + 6_000);
  assertEquals(later, 1);
});
