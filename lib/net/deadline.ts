/**
 * The one deadline mechanism: idle timeouts, response timeouts and delayed acknowledgements
 * of every layer share a coarse timer wheel, one timer for the whole process, instead of a
 * timer (or an interval) per connection, request or stream.
 *
 * Why coarse: these deadlines guard against what has stopped (an idle peer, an app that never
 * answers); firing up to a tick late costs nothing, while a timer object per request was a
 * measurable share of a small request's cost. Measured on the loaded 2-core dev machine: a
 * timer set and cleared 9-14 µs, a wheel deadline added and removed 1.5-1.9 µs.
 *
 * Why the wheel sleeps until something is due instead of ticking every `tickMs`: what it
 * holds is mostly far away (a relay's idle timeout in 5 minutes, a dial's in 10 s), and a wake
 * of a Deno timer is not free: a process holding one far deadline for 10 s used 0.09-0.10 s of
 * CPU ticking every 10 ms, 0.02 s sleeping (as much as with no deadline). In seaprox under
 * bench/_conn_ab.ts (~100 connections a second per process) that was a wake per connection,
 * 6-10 % of its CPU per connection (bench/RESULTS.md).
 * @module
 */

/**
 * Something due at `due` (ms on the `Date.now()` clock). When it is reached `fire(nowMs)`
 * runs: it returns a later time to stay on the wheel (the deadline moved meanwhile) or
 * nothing to leave it.
 */
export interface Deadline {
  due: number;
  fire(nowMs: number): number | void;
}

const nextOf: unique symbol = Symbol("wheel.next");
const prevOf: unique symbol = Symbol("wheel.prev");
const slotOf: unique symbol = Symbol("wheel.slot");

/**
 * A deadline as the wheel keeps it: linked into its slot's list through fields of its own
 * (symbols, invisible to its owner) instead of entries of a Set and a Map. Why: with the
 * long-lived Set and Map, a finished connection's idle timer, and the relay frame its callback
 * reaches, outlived young-generation collections and was promoted (bench/_survivors.ts: 6.7-7.7
 * KB per connection survived in seaprox, 3.7-4.5 without them; see bench/RESULTS.md).
 */
interface Linked extends Deadline {
  [nextOf]?: Linked;
  [prevOf]?: Linked;
  /** Index of its slot; -1 or absent: not registered. */
  [slotOf]?: number;
}

/** Options of {@linkcode DeadlineWheel}. */
export interface DeadlineWheelOptions {
  /** Granularity: deadlines fire up to this late. @default 10 */
  tickMs?: number;
  /** Slots of the wheel; a deadline further than `tickMs * slots` waits whole turns. @default 512 */
  slots?: number;
  /** Clock (tests). @default Date.now */
  now?: () => number;
  /** Run ticks on a timer while anything is due (tests turn it off and call `tick`). @default true */
  autoTick?: boolean;
  /**
   * While the wheel is held ({@linkcode DeadlineWheel.hold}), how long it stays empty before
   * its timer stops. @default 1000
   */
  lingerMs?: number;
  /** The timer the wheel sleeps on (tests drive it by hand). @default setTimeout, unref'd */
  timer?: WheelTimer;
}

/** A one-shot timer: what {@linkcode DeadlineWheel} sleeps on between ticks. */
export interface WheelTimer {
  /** Call `fn` in about `delayMs`; must not keep the process alive. */
  set(fn: () => void, delayMs: number): unknown;
  /** Cancel what `set` returned. */
  clear(id: unknown): void;
}

type TimerId = ReturnType<typeof setTimeout>;

/** Deno's timers, unref'd: the deadlines guard I/O, which keeps the process up itself. */
const denoTimer: WheelTimer = {
  set: (fn, delayMs) => {
    const id = setTimeout(fn, delayMs);
    Deno.unrefTimer(id);
    return id;
  },
  clear: (id) => clearTimeout(id as TimerId),
};

/**
 * Ticks a wake may look ahead for the next deadline due: the wheel sleeps at most this many
 * ticks (1 s at 10 ms ticks), so the look-ahead after each wake stays short, and whatever a
 * wake could have missed is found at the next.
 */
const lookAheadTicks = 100;

/**
 * A hashed timer wheel: deadlines sit in the slot of their due tick; a tick walks only the
 * slots passed since the last one, so it costs the deadlines due then, not all of them. Its
 * timer does not keep the process alive and is set for the next tick at which something is
 * due (looking ahead at most {@linkcode lookAheadTicks}): a wheel holding only far deadlines
 * wakes about once a second, not every tick. Adding a deadline sets the timer earlier only
 * if it is due before the next wake. The timer runs while a deadline is registered, or, while
 * the wheel is held (a running server: {@linkcode DeadlineWheel.hold}), until it was empty
 * for `lingerMs`.
 *
 * Why the hold: a timer set and cleared costs Deno 2.9 ~20 µs (an op and the event loop's
 * timer re-armed each way), and a wheel that empties between connections (one at a time, or
 * short dials among relays without an idle timeout) started and stopped its timer once per
 * connection. A server holds the wheel from start to `finished`, so the timer lingers
 * between its connections; released with nothing registered, it stops at once, so a stopped
 * server leaves no timer behind (the test sanitizers check).
 *
 * @example
 * ```ts
 * import { DeadlineWheel } from "./deadline.ts";
 * let now = 0;
 * const wheel = new DeadlineWheel({ now: () => now, autoTick: false });
 * let fired = false;
 * wheel.add({ due: 25, fire: () => { fired = true; } });
 * now = 30;
 * wheel.tick();
 * console.assert(fired);
 * ```
 */
export class DeadlineWheel {
  readonly tickMs: number;
  /** First deadline of each slot's list (linked through the deadlines themselves). */
  readonly #heads: (Linked | undefined)[];
  /** Deadlines registered now. */
  #count = 0;
  /** The walk's list of a slot (emptied after each walk, so it holds no finished deadline). */
  readonly #walk: Linked[] = [];
  readonly #clock: () => number;
  readonly #auto: boolean;
  readonly #lingerMs: number;
  readonly #timers: WheelTimer;
  /** The timer set for the next wake, if one is. */
  #timer: unknown;
  /** When that timer wakes the wheel (the clock's ms). */
  #wakeMs = Infinity;
  /** A tick is walking: adds wait for its end to set the timer. */
  #walking = false;
  /** Holders that keep the timer through empty spells (running servers). */
  #holds = 0;
  /** When a tick first found the wheel empty while held (undefined: not empty then). */
  #emptySinceMs: number | undefined;
  /** The next tick to process (absolute tick number). */
  #cursor: number;

  /** A wheel; nothing runs until a deadline is added. */
  constructor(opts: DeadlineWheelOptions = {}) {
    this.tickMs = opts.tickMs ?? 10;
    const n = opts.slots ?? 512;
    if (this.tickMs <= 0 || n < 1) throw new RangeError("tickMs and slots must be positive");
    this.#heads = new Array<Linked | undefined>(n).fill(undefined);
    this.#clock = opts.now ?? Date.now;
    this.#auto = opts.autoTick ?? true;
    this.#lingerMs = opts.lingerMs ?? 1000;
    this.#timers = opts.timer ?? denoTimer;
    this.#cursor = Math.floor(this.#clock() / this.tickMs);
  }

  /**
   * The wheel's clock, read now. (It was the time of the last tick while the wheel ticked
   * every `tickMs`; a wheel that sleeps until something is due has no such recent time.)
   */
  clockMs(): number {
    return this.#clock();
  }

  /**
   * The wheel's clock, read now: kept for callers from when it was the last tick's time.
   * @deprecated Use {@linkcode clockMs}, which says that it reads the clock.
   */
  get nowMs(): number {
    return this.#clock();
  }

  /** Deadlines registered now. */
  get size(): number {
    return this.#count;
  }

  /** Register `d` (again, if it was: its slot follows `d.due`). */
  add(d: Deadline): void {
    const x = d as Linked;
    this.#unlink(x);
    if (this.#count === 0 && !this.#walking) {
      // Idle until now: the cursor catches up with the clock instead of replaying the gap.
      this.#cursor = Math.floor(this.#clock() / this.tickMs);
    }
    // Never behind the cursor: an overdue deadline fires at the next tick.
    if (!Number.isFinite(d.due)) throw new RangeError("a deadline needs a finite due time");
    const t = Math.max(Math.ceil(d.due / this.tickMs), this.#cursor);
    const slot = t % this.#heads.length;
    const head = this.#heads[slot];
    x[nextOf] = head;
    x[prevOf] = undefined;
    if (head) head[prevOf] = x;
    this.#heads[slot] = x;
    x[slotOf] = slot;
    this.#count++;
    // Due before the next wake (or none is set): wake for it, or in lookAheadTicks if sooner
    // (a bounded sleep: an emptied held wheel lingers from its next wake). A walk sets its
    // timer at its end.
    if (this.#auto && !this.#walking) {
      const wake = Math.min(t, this.#cursor + lookAheadTicks);
      if (wake * this.tickMs < this.#wakeMs) this.#wakeAt(wake);
    }
  }

  /** Unregister `d` (nothing happens if it is not registered). */
  delete(d: Deadline): void {
    if (this.#unlink(d as Linked) && this.#count === 0 && this.#holds === 0) this.#stop();
  }

  /**
   * Take `d` off its slot (the timer is left alone); false if it was not registered. Its
   * links are cleared, so a finished deadline keeps nothing reachable.
   */
  #unlink(d: Linked): boolean {
    const slot = d[slotOf];
    if (slot === undefined || slot < 0) return false;
    const prev = d[prevOf];
    const next = d[nextOf];
    if (prev) prev[nextOf] = next;
    else this.#heads[slot] = next;
    if (next) next[prevOf] = prev;
    d[prevOf] = d[nextOf] = undefined;
    d[slotOf] = -1;
    this.#count--;
    return true;
  }

  /**
   * Keep the timer through empty spells (for `lingerMs`) until the returned function is
   * called (once; later calls do nothing): a server holds the wheel while it runs, so its
   * connections do not start and stop the timer one by one.
   */
  hold(): () => void {
    this.#holds++;
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      if (--this.#holds === 0 && this.#count === 0) this.#stop();
    };
  }

  /** Whether the wheel's timer is set now (tests). */
  get ticking(): boolean {
    return this.#timer !== undefined;
  }

  #stop(): void {
    this.#emptySinceMs = undefined;
    this.#wakeMs = Infinity;
    if (this.#timer === undefined) return;
    this.#timers.clear(this.#timer);
    this.#timer = undefined;
  }

  /** Set the timer for tick `t` (replacing the one set). */
  #wakeAt(t: number): void {
    if (this.#timer !== undefined) this.#timers.clear(this.#timer);
    const at = t * this.tickMs;
    this.#wakeMs = at;
    this.#timer = this.#timers.set(this.#woken, Math.max(0, at - this.#clock()));
  }

  /** The timer went off. */
  readonly #woken = (): void => {
    this.#timer = undefined;
    this.#wakeMs = Infinity;
    this.tick();
  };

  /**
   * The first tick from the cursor on at which a registered deadline is due, looking
   * {@linkcode lookAheadTicks} ahead at most (the tick after that if none is).
   */
  #nextDueTick(): number {
    const n = this.#heads.length;
    const last = this.#cursor + Math.min(lookAheadTicks, n) - 1;
    for (let t = this.#cursor; t <= last; t++) {
      for (let d = this.#heads[t % n]; d; d = d[nextOf]) {
        if (Math.ceil(d.due / this.tickMs) <= t) return t;
      }
    }
    return last + 1;
  }

  /** Fire what is due: every slot from the last tick up to the clock's; then sleep again. */
  tick(): void {
    const nested = this.#walking; // a tick run from a deadline's fire: the outer one sleeps
    this.#walking = true;
    try {
      this.#walkDue();
    } finally {
      this.#walking = nested;
      // Even after a fire threw: a wheel without its timer would never fire again.
      if (!nested) this.#sleep();
    }
  }

  /** After a walk: set the timer for the next wake, or stop (empty, unheld or lingered). */
  #sleep(): void {
    const now = this.#clock();
    if (this.#count > 0) {
      this.#emptySinceMs = undefined;
      if (this.#auto) this.#wakeAt(this.#nextDueTick());
      return;
    }
    if (this.#holds === 0) return this.#stop();
    const emptySince = this.#emptySinceMs ??= now;
    if (now - emptySince >= this.#lingerMs) return this.#stop();
    // Held and empty: look again when the linger is over.
    if (this.#auto) this.#wakeAt(Math.ceil((emptySince + this.#lingerMs) / this.tickMs));
  }

  /** Walk every slot from the cursor up to the clock's tick, firing what is due. */
  #walkDue(): void {
    const now = this.#clock();
    const until = Math.floor(now / this.tickMs);
    // After a stall (a blocked event loop), at most one turn of the wheel is worth walking.
    const n = this.#heads.length;
    if (until - this.#cursor >= n) this.#cursor = until - n + 1;
    // A tick run from a deadline's fire (tests) walks a list of its own.
    const walk = this.#walk.length === 0 ? this.#walk : [];
    for (; this.#cursor <= until; this.#cursor++) {
      const slot = this.#cursor % n;
      // The slot's deadlines as of now: firing may add to it or delete from it.
      for (let d = this.#heads[slot]; d; d = d[nextOf]) walk.push(d);
      for (let i = 0; i < walk.length; i++) {
        const d = walk[i];
        if (d[slotOf] !== slot) continue; // deleted or moved by an earlier deadline's fire
        if (d.due > now) {
          // A later turn (or moved later without a re-add): wait there.
          if (Math.ceil(d.due / this.tickMs) % n !== slot) this.add(d);
          continue;
        }
        this.#unlink(d); // the timer's fate is decided after the walk
        const later = d.fire(now);
        if (typeof later === "number") {
          d.due = later;
          this.add(d);
        }
      }
      walk.length = 0;
    }
  }
}

/** The process-wide wheel every layer's deadlines share (10 ms ticks). */
export const deadlines: DeadlineWheel = new DeadlineWheel();

/**
 * Calls `onIdle` once nothing called `touch()` for `idleMs` (up to a tick late). `touch()`
 * stores the clock, cheap enough for every relayed chunk; the deadline stays where it was set
 * and moves on when it is reached, so touches cost the wheel nothing.
 *
 * @example
 * ```ts ignore
 * const idle = new IdleTimer(300_000, () => closeQuietly(conn));
 * // per read: idle.touch();   at the end: idle.stop();
 * ```
 */
export class IdleTimer implements Deadline {
  due: number;
  /** When `touch()` last ran (the wheel's clock). */
  lastMs: number;
  /** Whether `onIdle` ran. */
  fired = false;
  readonly #idleMs: number;
  readonly #onIdle: () => void;
  readonly #wheel: DeadlineWheel;

  /** Start watching (`idleMs` <= 0: never fires, costs nothing). */
  constructor(idleMs: number, onIdle: () => void, wheel: DeadlineWheel = deadlines) {
    this.#idleMs = idleMs;
    this.#onIdle = onIdle;
    this.#wheel = wheel;
    this.lastMs = wheel.clockMs();
    this.due = this.lastMs + idleMs;
    if (idleMs > 0) wheel.add(this);
  }

  /** Activity: the idle period starts again. */
  touch(): void {
    this.lastMs = this.#wheel.clockMs();
  }

  /** Stop watching. */
  stop(): void {
    this.#wheel.delete(this);
  }

  /** @internal The wheel reached `due`: idle, or moved on by a touch. */
  fire(nowMs: number): number | void {
    const due = this.lastMs + this.#idleMs;
    if (due > nowMs) return due;
    this.fired = true;
    this.#onIdle();
  }
}

/**
 * Deadlines that end together (a session's held-back acknowledgements, its lingering
 * streams): `after` puts one on the wheel, `clear()` cancels every one still pending.
 */
export class DeadlineGroup {
  readonly #pending = new Set<Deadline>();
  readonly #wheel: DeadlineWheel;

  /** An empty group on `wheel`. */
  constructor(wheel: DeadlineWheel = deadlines) {
    this.#wheel = wheel;
  }

  /** Run `fn` once, about `delayMs` from now (up to a tick late), unless cleared first. */
  after(delayMs: number, fn: () => void): void {
    const d: Deadline = {
      due: this.#wheel.clockMs() + delayMs,
      fire: () => {
        this.#pending.delete(d);
        fn();
      },
    };
    this.#pending.add(d);
    this.#wheel.add(d);
  }

  /** Cancel everything pending. */
  clear(): void {
    for (const d of this.#pending) this.#wheel.delete(d);
    this.#pending.clear();
  }
}

/**
 * Run `fn` once, about `delayMs` from now, on `wheel`; the returned function cancels it.
 * For delays that need no precision (a held-back acknowledgement, a linger).
 */
export function after(
  delayMs: number,
  fn: () => void,
  wheel: DeadlineWheel = deadlines,
): () => void {
  const d: Deadline = { due: wheel.clockMs() + delayMs, fire: () => fn() };
  wheel.add(d);
  return () => wheel.delete(d);
}
