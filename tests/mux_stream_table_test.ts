import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { slotHash, StreamTable } from "../lib/mux/stream_table.ts";

interface Item {
  readonly id: number;
}

/** A tiny deterministic PRNG (xorshift32): the same sequence on every run. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

/** The table's contents as sorted ids. */
const ids = (t: StreamTable<Item>): number[] => [...t].map((x) => x.id).sort((a, b) => a - b);

Deno.test("StreamTable agrees with a Map under random churn (sequential, clustered and random ids)", () => {
  for (const seed of [1, 7, 42, 1234]) {
    const next = rng(seed);
    const table = new StreamTable<Item>();
    const model = new Map<number, Item>();
    let odd = 1, even = 2;
    for (let step = 0; step < 20_000; step++) {
      const r = next() % 100;
      // Phases of growth and shrinkage, so the table resizes both ways many times.
      const growing = Math.floor(step / 2_500) % 2 === 0;
      if (r < (growing ? 60 : 35)) {
        // Both sides' ids run in steps of two; some random ones (a peer may pick any).
        const kind = next() % 3;
        let id: number;
        if (kind === 0) id = odd += 2;
        else if (kind === 1) id = even += 2;
        else id = 1 + (next() % 0xfffffffe);
        if (model.has(id)) continue;
        const item = { id };
        table.add(item);
        model.set(id, item);
      } else if (model.size > 0) {
        // Delete a present item (an older one more often: streams end roughly in order).
        const keys = [...model.keys()];
        const id = keys[next() % Math.min(keys.length, 1 + (next() % 8))];
        assert(table.delete(model.get(id)!), `delete ${id}`);
        model.delete(id);
        assertEquals(table.get(id), undefined);
      }
      assertEquals(table.size, model.size);
      if (step % 97 === 0) {
        for (const [id, item] of model) assert(table.get(id) === item, `get ${id}`);
        assertEquals(ids(table), [...model.keys()].sort((a, b) => a - b));
      }
    }
    for (const item of [...model.values()]) assert(table.delete(item));
    assertEquals(table.size, 0);
    assertEquals([...table], []);
  }
});

Deno.test("StreamTable: ids that collide on their home slot all stay reachable after deletes", () => {
  const seed = 0x5eed;
  const table = new StreamTable<Item>(seed);
  // Ids whose hash lands on the same home slot of a 16-slot table (the top 4 bits of the hash).
  const home = (id: number) => slotHash(id, seed) >>> 28;
  const same: number[] = [];
  for (let id = 1; same.length < 7; id++) if (home(id) === home(1)) same.push(id);
  const items = same.map((id) => ({ id }));
  for (const x of items) table.add(x);
  for (const x of items) assert(table.get(x.id) === x);
  // Delete from the front, the middle and the end of the run; the rest must still be found.
  for (const k of [0, 3, 6]) {
    assert(table.delete(items[k]));
    for (const [i, x] of items.entries()) {
      if (i === 0 || (k >= 3 && i === 3) || (k >= 6 && i === 6)) {
        assertEquals(table.get(x.id), undefined);
      } else assert(table.get(x.id) === x, `get ${x.id} after deleting ${items[k].id}`);
    }
  }
  assertEquals(table.size, 4);
});

Deno.test("StreamTable: delete needs the same item, add refuses a taken or bad id", () => {
  const table = new StreamTable<Item>();
  const a = { id: 5 };
  table.add(a);
  assert(!table.delete({ id: 5 })); // another object under the same id: left alone
  assert(!table.delete({ id: 6 })); // never added
  assertEquals(table.size, 1);
  assert(table.has(5) && !table.has(6));
  const taken = assertThrows(() => table.add({ id: 5 }));
  assert(taken instanceof Error && taken.message.includes("taken"), taken.message);
  for (const id of [0, -1, 0x1_0000_0000, 1.5, NaN]) {
    const bad = assertThrows(() => table.add({ id }));
    assert(bad instanceof RangeError, `id ${id}: ${bad}`);
  }
  table.add({ id: 0xffffffff }); // the largest stream id
  assert(table.has(0xffffffff));
  assertEquals(table.get(0), undefined); // 0 marks a free slot: never found
  table.clear();
  assertEquals(table.size, 0);
  assertEquals([...table], []);
  table.add(a); // a cleared table works again
  assert(table.get(5) === a);
});

/** The id whose {@linkcode slotHash} under seed 0 is `h` (the finalizer run backwards). */
function unhash(h: number): number {
  const inverse = (a: number) => {
    let x = a; // Newton's iteration for the inverse of an odd number mod 2^32
    for (let i = 0; i < 5; i++) x = Math.imul(x, 2 - Math.imul(a, x));
    return x;
  };
  h ^= h >>> 16;
  h = Math.imul(h, inverse(0xc2b2ae35));
  h ^= (h >>> 13) ^ (h >>> 26);
  h = Math.imul(h, inverse(0x85ebca6b));
  h ^= h >>> 16;
  return h >>> 0;
}

Deno.test("StreamTable: ids a peer aims at one home slot spread under the process's seed", () => {
  // 16,384 ids that all share home slot 0 under a known seed (the top 17 bits of their hash are
  // 0): what a peer that can predict the hash sends to make every SYN probe one long run.
  const ids = Array.from({ length: 16_384 }, (_, k) => unhash(k + 1));
  for (const [k, id] of ids.entries()) assertEquals(slotHash(id, 0), k + 1);
  const aimed = new StreamTable<Item>(0);
  for (const id of ids) aimed.add({ id });
  assertEquals(aimed.longestRun(), ids.length, "the known seed: one run of them all");
  const table = new StreamTable<Item>(); // the process's random seed
  for (const id of ids) table.add({ id });
  for (const id of ids) assertEquals(table.get(id)?.id, id);
  // Random spread at a load of at most 1/2: runs of a few dozen slots, never thousands.
  assert(table.longestRun() < 512, `longest run ${table.longestRun()}`);
});
