/**
 * lib/net/id_table.ts: IdTable against a Map (set, get, delete, size, iteration, ids sharing a
 * bucket, ids past 2^31, growth), one table and one id per item, deleting while iterating, and
 * that an item out of the table keeps no reference into it (what a scavenge would follow).
 */

import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { IdTable } from "../lib/net/id_table.ts";

interface Item {
  name: string;
}

Deno.test("IdTable set, get and delete, ids sharing a bucket and ids past 2^31", () => {
  const t = new IdTable<Item>();
  // 16 buckets at first: 1, 17 and 33 share one; 2^40 + 1 and 2^31 + 1 hash by their low bits.
  const ids = [1, 17, 33, 2 ** 40 + 1, 2 ** 31 + 1, 0];
  const items = ids.map((id) => ({ name: `#${id}` }));
  ids.forEach((id, i) => t.set(id, items[i]));
  assertEquals(t.size, ids.length);
  ids.forEach((id, i) => assert(t.get(id) === items[i], `get(${id})`));
  assertEquals(t.get(49), undefined); // same bucket, never set
  assert(t.delete(17)); // the middle of a bucket's chain
  assert(!t.delete(17));
  assertEquals(t.get(17), undefined);
  assert(t.get(1) === items[0] && t.get(33) === items[2]);
  assertEquals(t.size, ids.length - 1);
  assertEquals(new Set(t), new Set(items.filter((x) => x !== items[1])));
});

Deno.test("IdTable set replaces the item under an id; an item is in one table under one id", () => {
  const a = new IdTable<Item>(), b = new IdTable<Item>();
  const x = { name: "x" }, y = { name: "y" };
  a.set(5, x);
  a.set(5, x); // again: nothing changes
  assertEquals(a.size, 1);
  a.set(5, y); // replaced, as Map.set does: x leaves
  assert(a.get(5) === y);
  assertEquals(a.size, 1);
  b.set(5, x); // x is free again
  let err = assertThrows(() => a.set(6, y)); // y is under 5 here
  assert(err instanceof TypeError && err.message.includes("IdTable"), err.message);
  err = assertThrows(() => a.set(7, x)); // x is in b
  assert(err instanceof TypeError, String(err));
  assert(b.delete(5));
  a.set(7, x);
  assertEquals([a.get(5), a.get(7), a.size], [y, x, 2]);
});

Deno.test("IdTable agrees with a Map over random sets and deletes, growing past its buckets", () => {
  let seed = 20;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  const t = new IdTable<Item>();
  const model = new Map<number, Item>();
  for (let step = 0; step < 20_000; step++) {
    // Mostly a window of recent ids, as requests are; now and then a far one.
    const id = rand(10) === 0 ? rand(2 ** 30) * 4096 : step + rand(300);
    if (rand(3) === 0) {
      assertEquals(t.delete(id), model.delete(id), `delete(${id}) at ${step}`);
    } else {
      const x = { name: `${id}@${step}` };
      t.set(id, x);
      model.set(id, x);
    }
    if (step % 1000 === 0) {
      assertEquals(t.size, model.size);
      assertEquals(new Set(t), new Set(model.values()));
    }
    assert(t.get(id) === model.get(id), `get(${id}) at ${step}`);
  }
  for (const [id, x] of model) assert(t.get(id) === x, `get(${id}) at the end`);
  assertEquals(t.size, model.size);
});

Deno.test("IdTable iteration survives deleting the item just yielded", () => {
  const t = new IdTable<Item & { id: number }>();
  for (let id = 0; id < 40; id++) t.set(id * 16, { id: id * 16, name: "" }); // one bucket at first
  const seen: number[] = [];
  for (const x of t) {
    seen.push(x.id);
    t.delete(x.id); // as a shutdown settling every pending request does
  }
  assertEquals(seen.sort((p, q) => p - q), Array.from({ length: 40 }, (_, i) => i * 16));
  assertEquals(t.size, 0);
  assertEquals([...t], []);
});

Deno.test("IdTable: a deleted or replaced item keeps no reference into the table", () => {
  const t = new IdTable<Item>();
  const [a, b, c, d] = [{ name: "a" }, { name: "b" }, { name: "c" }, { name: "d" }];
  t.set(3, a).set(19, b).set(35, c); // one bucket: c -> b -> a
  t.delete(19);
  t.set(35, d); // c replaced
  // What would keep its neighbours (and their connections) alive for a scavenge.
  for (const x of [b, c]) {
    const held = Object.getOwnPropertySymbols(x).map((s) => (x as Record<symbol, unknown>)[s]);
    assert(held.every((v) => v === undefined), `${x.name} still points into the table`);
  }
  assertEquals(new Set(t), new Set([a, d]));
});
