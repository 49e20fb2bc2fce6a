/**
 * lib/net/id_table.ts: IdTable against a Map under random churn (sequential, clustered, random
 * and past-2^32 ids, growing and shrinking), ids sharing a home slot staying reachable after
 * deletes, set replacing and delete(id, item) leaving a newer item alone, bad ids, iteration
 * while the table changes, that a deleted item is held by nothing of the table's (what a
 * scavenge would follow), and that ids a peer aims at one home slot spread under the process's
 * random seed.
 */

import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { IdTable, slotHash } from "../lib/net/id_table.ts";

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
const ids = (t: IdTable<Item>): number[] => [...t].map((x) => x.id).sort((a, b) => a - b);

Deno.test("IdTable agrees with a Map under random churn (sequential, clustered, random and past-2^32 ids)", () => {
  for (const seed of [1, 7, 42, 1234]) {
    const next = rng(seed);
    const table = new IdTable<Item>();
    const model = new Map<number, Item>();
    let odd = 1, even = 2;
    for (let step = 0; step < 20_000; step++) {
      const r = next() % 100;
      // Phases of growth and shrinkage, so the table resizes both ways many times.
      const growing = Math.floor(step / 2_500) % 2 === 0;
      if (r < (growing ? 60 : 35)) {
        // Both mux sides' ids run in steps of two; some random ones (a peer may pick any), some
        // past 2^32 (depot request ids go to 2^53 - 1) that share their low 32 bits.
        const kind = next() % 4;
        let id: number;
        if (kind === 0) id = odd += 2;
        else if (kind === 1) id = even += 2;
        else if (kind === 2) id = 1 + (next() % 0xfffffffe);
        else id = (1 + (next() % 0x1f_ffff)) * 0x1_0000_0000 + (next() % 8);
        if (model.has(id)) continue;
        const item = { id };
        table.set(id, item);
        model.set(id, item);
      } else if (model.size > 0) {
        // Delete a present item (an older one more often: streams end roughly in order).
        const keys = [...model.keys()];
        const id = keys[next() % Math.min(keys.length, 1 + (next() % 8))];
        assert(
          next() % 2 === 0 ? table.delete(id, model.get(id)!) : table.delete(id),
          `delete ${id}`,
        );
        model.delete(id);
        assertEquals(table.get(id), undefined);
      }
      assertEquals(table.size, model.size);
      if (step % 97 === 0) {
        for (const [id, item] of model) assert(table.get(id) === item, `get ${id}`);
        assertEquals(ids(table), [...model.keys()].sort((a, b) => a - b));
      }
    }
    for (const item of [...model.values()]) assert(table.delete(item.id, item));
    assertEquals(table.size, 0);
    assertEquals([...table], []);
  }
});

Deno.test("IdTable: ids that collide on their home slot all stay reachable after deletes", () => {
  const seed = 0x5eed;
  const table = new IdTable<Item>(seed);
  // Ids whose hash lands on the same home slot of a 16-slot table (the top 4 bits of the hash).
  const home = (id: number) => slotHash(id, seed) >>> 28;
  const same: number[] = [];
  for (let id = 1; same.length < 7; id++) if (home(id) === home(1)) same.push(id);
  const items = same.map((id) => ({ id }));
  for (const x of items) table.set(x.id, x);
  for (const x of items) assert(table.get(x.id) === x);
  // Delete from the front, the middle and the end of the run; the rest must still be found.
  for (const k of [0, 3, 6]) {
    assert(table.delete(items[k].id));
    for (const [i, x] of items.entries()) {
      if (i === 0 || (k >= 3 && i === 3) || (k >= 6 && i === 6)) {
        assertEquals(table.get(x.id), undefined);
      } else assert(table.get(x.id) === x, `get ${x.id} after deleting ${items[k].id}`);
    }
  }
  assertEquals(table.size, 4);
});

Deno.test("IdTable: set replaces, delete(id, item) leaves another item alone, bad ids are refused", () => {
  const table = new IdTable<Item>();
  const a = { id: 5 }, b = { id: 5 };
  assert(table.set(5, a) === table);
  assert(!table.delete(5, b)); // another object under the same id: left alone
  assert(!table.delete(6)); // never set
  assertEquals(table.size, 1);
  assert(table.has(5) && !table.has(6));
  table.set(5, a); // again: nothing changes
  table.set(5, b); // replaced, as Map.set does
  assert(table.get(5) === b);
  assertEquals(table.size, 1);
  assert(!table.delete(5, a)); // the finished one does not take out its successor
  assert(table.get(5) === b);
  for (const id of [0, -1, 2 ** 53, 1.5, NaN, Infinity]) {
    const bad = assertThrows(() => table.set(id, { id }));
    assert(bad instanceof RangeError, `id ${id}: ${bad}`);
  }
  for (const id of [0xffffffff, 2 ** 32, 2 ** 32 + 5, 2 ** 53 - 1]) table.set(id, { id });
  for (const id of [0xffffffff, 2 ** 32, 2 ** 32 + 5, 2 ** 53 - 1]) {
    assertEquals(table.get(id)?.id, id);
  }
  assertEquals(table.get(5 + 2 ** 33), undefined); // same low 32 bits as 5, never set
  assertEquals(table.get(0), undefined); // 0 marks a free slot: never found
  table.clear();
  assertEquals(table.size, 0);
  assertEquals([...table], []);
  table.set(5, a); // a cleared table works again
  assert(table.get(5) === a);
});

Deno.test("IdTable iteration survives deleting and setting while it walks", () => {
  const t = new IdTable<Item>(0x5eed);
  for (let id = 1; id <= 40; id++) t.set(id, { id });
  const seen: number[] = [];
  for (const x of t) {
    seen.push(x.id);
    t.delete(x.id); // as a shutdown settling every pending request does (backward shifts)
    t.set(x.id + 1000, { id: x.id + 1000 }); // not walked: the walk is of the items at the call
  }
  assertEquals(seen.sort((p, q) => p - q), Array.from({ length: 40 }, (_, i) => i + 1));
  assertEquals(ids(t), Array.from({ length: 40 }, (_, i) => i + 1001));
});

Deno.test("IdTable: a deleted or replaced item is held by nothing of the table's, and gets no fields", () => {
  const t = new IdTable<Item>();
  const a = { id: 3 }, b = { id: 19 }, c = { id: 35 }, d = { id: 35 };
  t.set(3, a).set(19, b).set(35, c);
  t.delete(19);
  t.set(35, d); // c replaced
  for (const x of [a, b, c, d]) {
    assertEquals(Object.getOwnPropertySymbols(x), []);
    assertEquals(Object.keys(x), ["id"]);
  }
  // The table's own slots (what a scavenge follows from it) hold a and d only.
  assertEquals(new Set(t), new Set([a, d]));
  // Shrinking after churn empties the old slot array too: nothing kept past the last delete.
  for (let id = 100; id < 400; id++) t.set(id, { id });
  for (let id = 100; id < 400; id++) t.delete(id);
  assertEquals(new Set(t), new Set([a, d]));
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

Deno.test("IdTable: ids a peer aims at one home slot spread under the process's seed", () => {
  // 16,384 ids that all share home slot 0 under a known seed (the top 17 bits of their hash are
  // 0): what a peer that can predict the hash sends to make every insert probe one long run.
  const ids = Array.from({ length: 16_384 }, (_, k) => unhash(k + 1));
  for (const [k, id] of ids.entries()) assertEquals(slotHash(id, 0), k + 1);
  const aimed = new IdTable<Item>(0);
  for (const id of ids) aimed.set(id, { id });
  assertEquals(aimed.longestRun(), ids.length, "the known seed: one run of them all");
  const table = new IdTable<Item>(); // the process's random seed
  for (const id of ids) table.set(id, { id });
  for (const id of ids) assertEquals(table.get(id)?.id, id);
  // Random spread at a load of at most 1/2: runs of a few dozen slots, never thousands.
  assert(table.longestRun() < 512, `longest run ${table.longestRun()}`);
  // Past 2^32 the same: ids sharing their low 32 bits (one aimed id) spread by their high bits.
  const high = new IdTable<Item>();
  for (let k = 1; k <= 16_384; k++) {
    high.set(k * 0x1_0000_0000 + ids[0], { id: k * 0x1_0000_0000 + ids[0] });
  }
  assert(high.longestRun() < 512, `longest run past 2^32 ${high.longestRun()}`);
});
