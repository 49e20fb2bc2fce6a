/**
 * `deno run --v8-flags=--trace-gc-nvp bench/_set_churn.ts set|map|list|none`: V8's scavenges
 * against a long-lived collection churned per item (issue 20). The collection is aged first
 * (it survives a few scavenges, so it is in the old generation, as a server's is), then gains a
 * record per step and loses the oldest, 32 kept, with garbage between. Sum the `GC:` lines'
 * `new_space_survived` and `promoted` per scavenge: with `set` or `map` every record is copied
 * and promoted (the replaced hash tables, reached from the dead old ones, keep them); with
 * `list` (lib/net's LiveList) or `none` only the 32 live ones are copied.
 * @module
 */

import { LiveList } from "../lib/net/live_list.ts";

const mode = Deno.args[0] ?? "set";
const steps = 400_000;
const agingSteps = 200_000;
const kept = 32;
const garbagePerStep = 20;

interface Rec {
  i: number;
  payload: number[];
}

const set = new Set<Rec>();
const map = new Map<number, Rec>();
const list = new LiveList<Rec>();
let sink: unknown;
for (let i = 0; i < agingSteps; i++) sink = { i, a: [i, i] }; // the collections grow old
const window: Rec[] = [];
for (let i = 0; i < steps; i++) {
  const rec: Rec = { i, payload: new Array(100).fill(i) };
  if (mode === "set") set.add(rec);
  else if (mode === "map") map.set(i, rec);
  else if (mode === "list") list.add(rec);
  window.push(rec);
  if (window.length > kept) {
    const old = window.shift()!;
    if (mode === "set") set.delete(old);
    else if (mode === "map") map.delete(old.i);
    else if (mode === "list") list.delete(old);
  }
  for (let j = 0; j < garbagePerStep; j++) sink = { j, b: [i, j] };
}
console.log(`${mode}: done (${typeof sink})`);
