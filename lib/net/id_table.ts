/**
 * {@linkcode IdTable}: live items of a long-lived owner by a numeric id (a lib/mux session's
 * streams, depot-server's pending requests and FIN gates, depot-local's request aborts),
 * without a `Map`.
 *
 * Why not a `Map` (issue 20): a long-lived `Map` that gains and loses an entry per stream or
 * connection rebuilds its hash table every few dozen deletions, and the replaced table keeps a
 * link to its successor and the entries it held. Once one table is promoted, every later one is
 * reached from the dead old one through an old-to-new reference, which a scavenge treats as live
 * until the next full GC: every item since that GC, with what it holds, is copied and then
 * promoted (depot-local accepting a mux stream per request: ~260 B promoted per stream,
 * bench/mux_mem.ts's churn rows; depot-server's pending requests: ~2 KB per connection,
 * bench/RESULTS.md "dcut"; lib/net/live_list.ts says the same of a `Set`). Here the ids sit in a
 * typed array and the items in one array, both changed in place: a freed slot holds nothing, and
 * the arrays are replaced only when the count crosses a power of two (growing, or shrinking well
 * below it), the old item array emptied (it may be old-space). The items themselves are not
 * touched: any object can be stored, under any id.
 *
 * Open addressing with linear probing and backward-shift deletion (no tombstones, so a table
 * churned forever never needs a rebuild to purge them). Ids are spread over the slots by a
 * seeded hash ({@linkcode slotHash}): a peer picks its stream ids (and depot-local's request
 * ids), and against a hash it can predict it could pick ids that all share one home slot, every
 * insert then probing the whole run (65,536 such ids cost 12.2 s of CPU with the unseeded
 * Fibonacci hash lib/mux had first, 19 ms in sequence).
 * @module
 */

/** Slots a table starts with and never shrinks below. */
const minSlots = 16;

/** The process's seed of {@linkcode slotHash}: random, so no peer can aim its ids at one slot. */
const processSeed: number = crypto.getRandomValues(new Uint32Array(1))[0];

/** murmur3's 32-bit finalizer: every bit of `h` moves every bit of the result. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * The slot hash of `id` under `seed`: murmur3's 32-bit finalizer of `id ^ seed` for an id below
 * 2^32; an id past it has its high bits mixed into that hash and finalized again (they cannot be
 * chosen to cancel its low bits without knowing the seed). The table indexes by the top bits.
 */
export function slotHash(id: number, seed: number): number {
  const h = fmix32((id ^ seed) >>> 0);
  if (id <= 0xffffffff) return h;
  return fmix32((h ^ Math.floor(id / 0x1_0000_0000) ^ seed) >>> 0);
}

/**
 * Items by a numeric id (an integer 1 to 2^53 - 1: 0 marks a free slot): `get`, `set` and
 * `delete` in (expected) constant time. An item may be in several tables, under any id each.
 *
 * @example
 * ```ts
 * import { IdTable } from "./id_table.ts";
 * const pending = new IdTable<{ name: string }>();
 * const a = { name: "a" };
 * pending.set(7, a);
 * console.assert(pending.get(7) === a && pending.size === 1);
 * pending.delete(7);
 * console.assert(pending.get(7) === undefined && pending.size === 0);
 * ```
 */
export class IdTable<T extends object> implements Iterable<T> {
  /** Each slot's id (exact for every safe integer); 0: the slot is free. */
  #ids = new Float64Array(minSlots);
  /** Each slot's item (`undefined` where the id is 0). */
  #items: (T | undefined)[] = new Array<T | undefined>(minSlots).fill(undefined);
  /** 32 minus log2 of the slot count: the hash's top bits index the table. */
  #shift = 32 - Math.log2(minSlots);
  #size = 0;
  readonly #seed: number;

  /** An empty table; `seed` of its hash: the process's random one (tests pass their own). */
  constructor(seed: number = processSeed) {
    this.#seed = seed;
  }

  /** Items in the table. */
  get size(): number {
    return this.#size;
  }

  /** The item under `id`, if any. */
  get(id: number): T | undefined {
    const ids = this.#ids;
    const mask = ids.length - 1;
    for (let i = this.#home(id);; i = (i + 1) & mask) {
      const at = ids[i];
      if (at === id) return this.#items[i];
      if (at === 0) return undefined;
    }
  }

  /** Whether an item is under `id`. */
  has(id: number): boolean {
    return this.get(id) !== undefined;
  }

  /**
   * Put `item` under `id`, in place of the item there (as `Map.set`). Throws a `RangeError` if
   * `id` is not an integer 1 to 2^53 - 1.
   */
  set(id: number, item: T): this {
    if (!Number.isSafeInteger(id) || id <= 0) throw new RangeError(`IdTable: bad id ${id}`);
    let ids = this.#ids;
    let mask = ids.length - 1;
    let i = this.#home(id);
    for (; ids[i] !== 0; i = (i + 1) & mask) {
      if (ids[i] === id) {
        this.#items[i] = item;
        return this;
      }
    }
    if ((this.#size + 1) * 2 > ids.length) {
      this.#resize(ids.length * 2);
      ids = this.#ids;
      mask = ids.length - 1;
      for (i = this.#home(id); ids[i] !== 0; i = (i + 1) & mask);
    }
    ids[i] = id;
    this.#items[i] = item;
    this.#size++;
    return this;
  }

  /**
   * Remove the item under `id` (only if it is `item`, when given: a finished stream or request
   * must not take out a newer one under the same id); false if nothing was removed.
   */
  delete(id: number, item?: T): boolean {
    const ids = this.#ids;
    const items = this.#items;
    const mask = ids.length - 1;
    let i = this.#home(id);
    for (;; i = (i + 1) & mask) {
      if (ids[i] === id) break;
      if (ids[i] === 0) return false;
    }
    if (item !== undefined && items[i] !== item) return false;
    // Backward shift: move each later entry of the run whose home is not in (i, j] into the
    // hole, so every entry stays reachable from its home without a tombstone.
    for (let j = (i + 1) & mask; ids[j] !== 0; j = (j + 1) & mask) {
      const home = this.#home(ids[j]);
      const stays = i < j ? i < home && home <= j : i < home || home <= j;
      if (stays) continue;
      ids[i] = ids[j];
      items[i] = items[j];
      i = j;
    }
    ids[i] = 0;
    items[i] = undefined;
    this.#size--;
    if (this.#size * 8 < ids.length && ids.length > minSlots) this.#resize(ids.length / 2);
    return true;
  }

  /** Remove everything (back to the smallest table). */
  clear(): void {
    this.#items.fill(undefined);
    this.#ids = new Float64Array(minSlots);
    this.#items = new Array<T | undefined>(minSlots).fill(undefined);
    this.#shift = 32 - Math.log2(minSlots);
    this.#size = 0;
  }

  /**
   * The items at the call, in no particular order. The table may change while they are walked
   * (a shutdown settling each one): the walk is over a copy of the slots.
   */
  *[Symbol.iterator](): Generator<T, void, undefined> {
    for (const item of this.#items.slice()) if (item !== undefined) yield item;
  }

  /** @internal The longest run of occupied slots (tests: how far a lookup may probe). */
  longestRun(): number {
    let longest = 0, run = 0;
    // Twice round: a run may wrap past the last slot.
    for (let k = 0; k < this.#ids.length * 2; k++) {
      run = this.#ids[k % this.#ids.length] === 0 ? 0 : run + 1;
      if (run > longest) longest = Math.min(run, this.#size);
    }
    return longest;
  }

  #home(id: number): number {
    return slotHash(id, this.#seed) >>> this.#shift;
  }

  #resize(slots: number): void {
    const oldIds = this.#ids, oldItems = this.#items;
    this.#ids = new Float64Array(slots);
    this.#items = new Array<T | undefined>(slots).fill(undefined);
    this.#shift = 32 - Math.log2(slots);
    const mask = slots - 1;
    for (let k = 0; k < oldIds.length; k++) {
      const id = oldIds[k];
      if (id === 0) continue;
      let i = this.#home(id);
      while (this.#ids[i] !== 0) i = (i + 1) & mask;
      this.#ids[i] = id;
      this.#items[i] = oldItems[k];
    }
    // The old array may be in the old generation: emptied, it keeps no young item alive
    // through its remembered slots until the next full GC.
    oldItems.fill(undefined);
  }
}
