/**
 * lib/net's one deadline mechanism (DeadlineWheel, IdleTimer, after) on a hand-driven clock:
 * nothing fires early, everything due fires once, a deleted deadline never fires, deadlines
 * further than a turn of the wheel wait their turn, a fire can move its own deadline, a
 * stalled loop catches up, and the interval exists only while something is registered.
 */

import { assert, assertEquals } from "./_assert.ts";
import { after, type Deadline, DeadlineWheel, IdleTimer } from "../lib/net/mod.ts";

const opts = { sanitizeOps: true, sanitizeResources: true };

function manual(tickMs = 10, slots = 8) {
  let now = 1_000_000;
  const wheel = new DeadlineWheel({ tickMs, slots, now: () => now, autoTick: false });
  return {
    wheel,
    advance(ms: number) {
      now += ms;
      wheel.tick();
    },
    get now() {
      return now;
    },
  };
}

Deno.test({
  name: "deadline: random deadlines each fire once, never early, at most a tick late",
  ...opts,
}, () => {
  const m = manual(10, 8); // a turn is 80 ms: most deadlines wait several turns
  const start = m.now;
  const fired = new Map<number, number>();
  const cancelled = new Set<number>();
  let seed = 7;
  const rand = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  const ds: Deadline[] = [];
  for (let i = 0; i < 500; i++) {
    const d: Deadline = {
      due: start + Math.floor(rand() * 1000),
      fire: (now) => void fired.set(i, now),
    };
    ds.push(d);
    m.wheel.add(d);
  }
  for (let i = 0; i < 500; i += 7) {
    m.wheel.delete(ds[i]);
    cancelled.add(i);
  }
  while (m.now < start + 1200) m.advance(1 + Math.floor(rand() * 9));
  for (let i = 0; i < 500; i++) {
    if (cancelled.has(i)) {
      assert(!fired.has(i), `cancelled ${i} fired`);
      continue;
    }
    const at = fired.get(i);
    assert(at !== undefined, `deadline ${i} never fired`);
    assert(at >= ds[i].due, `deadline ${i} fired early: ${at} < ${ds[i].due}`);
    assert(at - ds[i].due < 10 + 10, `deadline ${i} fired ${at - ds[i].due} ms late`);
  }
  assertEquals(m.wheel.size, 0);
});

Deno.test({ name: "deadline: a fire can move its deadline; a stall catches up", ...opts }, () => {
  const m = manual(10, 4);
  let count = 0;
  m.wheel.add({ due: m.now + 25, fire: (now) => ++count < 3 ? now + 25 : undefined });
  for (let i = 0; i < 20; i++) m.advance(10);
  assertEquals(count, 3);
  let late = 0;
  m.wheel.add({ due: m.now + 15, fire: () => void late++ });
  m.advance(10_000); // the loop was blocked for ten seconds
  assertEquals(late, 1);
  assertEquals(m.wheel.size, 0);
});

Deno.test({ name: "deadline: IdleTimer fires once after idleMs without a touch", ...opts }, () => {
  const m = manual(10, 16);
  let idle = 0;
  const t = new IdleTimer(100, () => idle++, m.wheel);
  for (let i = 0; i < 30; i++) {
    m.advance(10);
    t.touch(); // busy for 300 ms
  }
  assertEquals(idle, 0);
  for (let i = 0; i < 9; i++) m.advance(10);
  assertEquals(idle, 0, "not before idleMs");
  for (let i = 0; i < 3; i++) m.advance(10);
  assertEquals(idle, 1);
  assert(t.fired);
  for (let i = 0; i < 30; i++) m.advance(10);
  assertEquals(idle, 1, "once");
  const stopped = new IdleTimer(50, () => idle++, m.wheel);
  stopped.stop();
  for (let i = 0; i < 30; i++) m.advance(10);
  assertEquals(idle, 1, "a stopped timer never fires");
  const never = new IdleTimer(0, () => idle++, m.wheel);
  assertEquals(m.wheel.size, 0, "idleMs 0 registers nothing");
  never.stop();
});

Deno.test({
  name: "deadline: the shared wheel's interval runs only while something waits",
  ...opts,
}, async () => {
  const wheel = new DeadlineWheel({ tickMs: 5 });
  let fired = false;
  // The wheel's interval does not keep the process up (deadlines guard I/O that does):
  // a plain timer holds the test open meanwhile.
  const keepAlive = setTimeout(() => {}, 10_000);
  await new Promise<void>((resolve) => {
    after(20, () => {
      fired = true;
      resolve();
    }, wheel);
  });
  clearTimeout(keepAlive);
  assert(fired);
  assertEquals(wheel.size, 0);
  const cancel = after(60_000, () => {}, wheel);
  cancel();
  assertEquals(wheel.size, 0); // the sanitizers fail the test if an interval were left running
});

Deno.test({
  name: "deadline: a held wheel keeps its interval through empty spells, stops after lingerMs",
  ...opts,
}, async () => {
  const wheel = new DeadlineWheel({ tickMs: 5, lingerMs: 30 });
  const release = wheel.hold();
  assert(!wheel.ticking, "nothing registered: no interval yet");
  const cancel = after(60_000, () => {}, wheel);
  assert(wheel.ticking);
  cancel();
  assert(wheel.ticking, "held: the interval survives the wheel going empty");
  after(60_000, () => {}, wheel)(); // a connection's deadline: no new interval needed
  assert(wheel.ticking);
  const keepAlive = setTimeout(() => {}, 10_000);
  while (wheel.ticking) await new Promise((r) => setTimeout(r, 5));
  clearTimeout(keepAlive);
  // Empty for lingerMs: stopped; a new deadline starts it again, the release stops it at once.
  const cancel2 = after(60_000, () => {}, wheel);
  assert(wheel.ticking);
  cancel2();
  assert(wheel.ticking);
  release();
  assert(!wheel.ticking, "released with nothing registered: stopped at once");
  release(); // a second call does nothing
  const cancel3 = after(60_000, () => {}, wheel);
  cancel3();
  assert(!wheel.ticking, "unheld: stops as soon as it is empty");
});

Deno.test({
  name: "deadline: a release with deadlines still registered leaves the interval to them",
  ...opts,
}, async () => {
  const wheel = new DeadlineWheel({ tickMs: 5 });
  const release = wheel.hold();
  let fired = false;
  const keepAlive = setTimeout(() => {}, 10_000);
  const done = new Promise<void>((resolve) =>
    after(15, () => {
      fired = true;
      resolve();
    }, wheel)
  );
  release();
  assert(wheel.ticking);
  await done;
  clearTimeout(keepAlive);
  assert(fired);
  assert(!wheel.ticking, "the last deadline fired: stopped");
});

Deno.test({
  name: "deadline: fires that delete, move and add deadlines of the same slot mid-walk",
  ...opts,
}, () => {
  const m = manual(10, 4);
  const start = m.now;
  let seed = 11;
  const rand = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  const live = new Set<Deadline>();
  const dead = new Set<Deadline>();
  const firedAt = new Map<Deadline, number[]>();
  const all: Deadline[] = [];
  const make = (due: number): Deadline => {
    const d: Deadline = {
      due,
      fire: (now) => {
        assert(!dead.has(d), "a deleted deadline fired");
        assert(now >= d.due, "fired early");
        firedAt.set(d, [...(firedAt.get(d) ?? []), now]);
        live.delete(d);
        // Meddle with the others, often those of this very slot.
        const others = [...live];
        for (let k = 0; k < 3 && others.length > 0; k++) {
          const o = others[Math.floor(rand() * others.length)];
          if (!live.has(o)) continue; // deleted a moment ago
          const what = rand();
          if (what < 0.4) {
            m.wheel.delete(o);
            live.delete(o);
            dead.add(o);
          } else if (what < 0.7) {
            o.due = now + Math.floor(rand() * 60);
            m.wheel.add(o);
          } else if (live.size < 400) {
            const n = make(now + Math.floor(rand() * 60));
            live.add(n);
            m.wheel.add(n);
          }
        }
        if (rand() < 0.2) return now + 1 + Math.floor(rand() * 50); // moves itself later
      },
    };
    all.push(d);
    return d;
  };
  for (let i = 0; i < 200; i++) {
    const d = make(start + Math.floor(rand() * 200));
    live.add(d);
    m.wheel.add(d);
  }
  // Deadlines that moved themselves stay registered: count them as live again.
  while (m.now < start + 5_000 && m.wheel.size > 0) {
    m.advance(1 + Math.floor(rand() * 15));
    for (const [d] of firedAt) if (!dead.has(d) && d.due > m.now) live.add(d);
  }
  assertEquals(m.wheel.size, 0, "everything fired or was deleted");
  for (const d of all) assert(dead.has(d) || firedAt.has(d), "a deadline never fired");
  assert(firedAt.size >= 100 && dead.size >= 20, `${firedAt.size} fired, ${dead.size} deleted`);
});
