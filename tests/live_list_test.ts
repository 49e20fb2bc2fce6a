import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { LiveList } from "../lib/net/live_list.ts";

interface Item {
  id: number;
}

Deno.test("LiveList keeps the order of adding across deletes from anywhere", () => {
  const list = new LiveList<Item>();
  const items = Array.from({ length: 6 }, (_, id) => ({ id }));
  for (const x of items) list.add(x);
  assertEquals(list.size, 6);
  assert(list.delete(items[0])); // head
  assert(list.delete(items[5])); // tail
  assert(list.delete(items[3])); // middle
  assertEquals([...list].map((x) => x.id), [1, 2, 4]);
  assertEquals(list.size, 3);
  list.add(items[0]); // back at the end
  assertEquals([...list].map((x) => x.id), [1, 2, 4, 0]);
  for (const x of [...list]) assert(list.delete(x));
  assertEquals(list.size, 0);
  assertEquals([...list], []);
  list.add(items[2]); // an emptied list works again
  assertEquals([...list].map((x) => x.id), [2]);
});

Deno.test("LiveList add and delete are idempotent, membership is per list", () => {
  const a = new LiveList<Item>(), b = new LiveList<Item>();
  const x = { id: 1 };
  assert(!a.has(x));
  assert(!a.delete(x)); // never added
  a.add(x);
  a.add(x); // twice: still one
  assertEquals(a.size, 1);
  assert(a.has(x) && !b.has(x));
  assert(!b.delete(x)); // another list's item is left alone
  assertEquals(a.size, 1);
  const err = assertThrows(() => b.add(x));
  assert(err instanceof TypeError && err.message.includes("another LiveList"), err.message);
  assert(a.delete(x));
  assert(!a.delete(x)); // a second delete (shed, then the handler's end)
  assertEquals(a.size, 0);
  b.add(x); // free again: may join another list
  assert(b.has(x) && !a.has(x));
});

Deno.test("LiveList iteration survives deleting the item just yielded", () => {
  const list = new LiveList<Item>();
  for (let id = 0; id < 5; id++) list.add({ id });
  const seen: number[] = [];
  for (const x of list) {
    seen.push(x.id);
    list.delete(x); // as shedding or a hard stop does
  }
  assertEquals(seen, [0, 1, 2, 3, 4]);
  assertEquals(list.size, 0);
});

Deno.test("LiveList: a deleted item keeps no reference into the list", () => {
  const list = new LiveList<Item>();
  const [a, b, c] = [{ id: 0 }, { id: 1 }, { id: 2 }];
  list.add(a).add(b).add(c);
  list.delete(b);
  // What would keep its neighbours (and their connections) alive for a scavenge.
  const held = Object.getOwnPropertySymbols(b).map((s) => (b as Record<symbol, unknown>)[s]);
  assert(held.every((v) => v === undefined), "a deleted item still points into the list");
  assertEquals([...list], [a, c]);
});
