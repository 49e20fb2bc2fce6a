/**
 * `StreamTable`: a session's streams by id.
 *
 * Why not a `Map` (issue 20): a session lives long and gains and loses a stream per request. A
 * long-lived `Map` churned like that rebuilds its hash table every few dozen deletions, and
 * once one table has been promoted to the old generation each replacement is reached from the
 * dead old one (an old-to-new reference, a scavenge root until the next full GC): every stream
 * it held when it was replaced, with the frames and buffers behind it, is copied and promoted
 * (depot-local accepting a stream per request: ~260 B promoted per stream; bench/mux_mem.ts's
 * churn rows). Here the ids sit in a typed array and the streams in one array, both changed in
 * place: a freed slot holds nothing, and the arrays are replaced only when the count crosses a
 * power of two (growing, or shrinking well below it).
 *
 * Open addressing with linear probing and backward-shift deletion (no tombstones, so a table
 * churned forever never needs a rebuild to purge them). Stream ids are spread over the slots by
 * a seeded hash ({@linkcode slotHash}): the peer picks its stream ids, and against a hash it can
 * predict it could pick ids that all share one home slot, every SYN then probing the whole run
 * (65,536 such ids cost 12.2 s of CPU with the unseeded Fibonacci hash this table had first,
 * 19 ms in sequence).
 * @module
 */

/** Slots a table starts with and never shrinks below. */
const minSlots = 16;

/** The process's seed of {@linkcode slotHash}: random, so no peer can aim its ids at one slot. */
const processSeed: number = crypto.getRandomValues(new Uint32Array(1))[0];

/**
 * The slot hash of `id` under `seed`: murmur3's 32-bit finalizer of `id ^ seed`, in which every
 * bit of the input moves every bit of the hash; the table indexes by its top bits.
 */
export function slotHash(id: number, seed: number): number {
  let h = (id ^ seed) >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * A set of items with a numeric `id` (1 to 2^32 - 1; 0 is never an id), looked up by id:
 * `get`, `add` and `delete` in (expected) constant time.
 *
 * @example
 * ```ts
 * import { StreamTable } from "./stream_table.ts";
 * const table = new StreamTable<{ id: number }>();
 * const a = { id: 1 }, b = { id: 2 };
 * table.add(a);
 * table.add(b);
 * table.delete(a);
 * console.assert(table.size === 1 && table.get(2) === b && table.get(1) === undefined);
 * ```
 */
export class StreamTable<T extends { readonly id: number }> implements Iterable<T> {
  /** Each slot's id; 0: the slot is free. */
  #ids = new Uint32Array(minSlots);
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

  /** The item with this id, if any. */
  get(id: number): T | undefined {
    const ids = this.#ids;
    const mask = ids.length - 1;
    for (let i = this.#home(id);; i = (i + 1) & mask) {
      const at = ids[i];
      if (at === id) return this.#items[i];
      if (at === 0) return undefined;
    }
  }

  /** Whether an item with this id is in the table. */
  has(id: number): boolean {
    return this.get(id) !== undefined;
  }

  /** Add `item`; throws if its id is 0, out of range, or taken (ids are unique per session). */
  add(item: T): void {
    const id = item.id;
    if (!Number.isInteger(id) || id <= 0 || id > 0xffffffff) {
      throw new RangeError(`StreamTable: bad id ${id}`);
    }
    if ((this.#size + 1) * 2 > this.#ids.length) this.#resize(this.#ids.length * 2);
    const ids = this.#ids;
    const mask = ids.length - 1;
    let i = this.#home(id);
    for (; ids[i] !== 0; i = (i + 1) & mask) {
      if (ids[i] === id) throw new Error(`StreamTable: id ${id} is taken`);
    }
    ids[i] = id;
    this.#items[i] = item;
    this.#size++;
  }

  /** Remove `item` (the one under its id); false if it is not in the table. */
  delete(item: T): boolean {
    const ids = this.#ids;
    const mask = ids.length - 1;
    let i = this.#home(item.id);
    for (;; i = (i + 1) & mask) {
      if (ids[i] === 0) return false;
      if (ids[i] === item.id) break;
    }
    if (this.#items[i] !== item) return false;
    // Backward shift: move each later entry of the run whose home is not in (i, j] into the
    // hole, so every entry stays reachable from its home without a tombstone.
    for (let j = (i + 1) & mask; ids[j] !== 0; j = (j + 1) & mask) {
      const home = this.#home(ids[j]);
      const stays = i < j ? i < home && home <= j : i < home || home <= j;
      if (stays) continue;
      ids[i] = ids[j];
      this.#items[i] = this.#items[j];
      i = j;
    }
    ids[i] = 0;
    this.#items[i] = undefined;
    this.#size--;
    if (this.#size * 8 < ids.length && ids.length > minSlots) this.#resize(ids.length / 2);
    return true;
  }

  /** Remove everything (back to the smallest table). */
  clear(): void {
    this.#items.fill(undefined);
    this.#ids = new Uint32Array(minSlots);
    this.#items = new Array<T | undefined>(minSlots).fill(undefined);
    this.#shift = 32 - Math.log2(minSlots);
    this.#size = 0;
  }

  /** The items, in no particular order. Not while adding or deleting: copy it first. */
  *[Symbol.iterator](): Iterator<T> {
    for (const item of this.#items) if (item !== undefined) yield item;
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
    this.#ids = new Uint32Array(slots);
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
    // The old array may be in the old generation: emptied, it keeps no young stream alive
    // through its remembered slots until the next full GC.
    oldItems.fill(undefined);
  }
}
