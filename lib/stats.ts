/**
 * Dependency-free counters and gauges. Protocol modules (mux, tunnel, depot, fusion, the TLS
 * listeners) count here without loading a metrics library; lib/metrics.ts exports every
 * stat registered here as Prometheus text at scrape time. The method shapes follow
 * prom-client's (`inc(labels, n)`, `set(labels, v)`, a `collect` hook run before each read),
 * so a stat reads the same wherever it is kept.
 * @module
 */

/** Label values of one series (missing labels are empty). */
export type Labels<L extends string> = Partial<Record<L, string | number>>;

/** One series of a stat: its labels and value. */
export type Sample = [labels: Labels<string>, value: number];

/** What every stat has: identity, type and its current samples. */
export interface Stat {
  readonly name: string;
  readonly help: string;
  readonly type: "counter" | "gauge";
  readonly labelNames: readonly string[];
  /** Run the collect hook (if any), then return every series. */
  samples(): Promise<Sample[]>;
}

/** Called for every stat, past and future (see {@linkcode onStat}). */
export type StatListener = (stat: Stat) => void;

/** Every stat of the process by name, in registration order. */
export const allStats: ReadonlyMap<string, Stat> = new Map<string, Stat>();
const listeners: StatListener[] = [];

/**
 * Call `listener` for every stat registered so far and every one registered later: how the
 * metrics layer learns of stats kept by modules it does not import.
 */
export function onStat(listener: StatListener): void {
  listeners.push(listener);
  for (const s of allStats.values()) listener(s);
}

function register<S extends Stat>(stat: S): S {
  (allStats as Map<string, Stat>).set(stat.name, stat);
  for (const l of listeners) l(stat);
  return stat;
}

function keyOf(labels: Labels<string>): string {
  return JSON.stringify(Object.keys(labels).sort().map((k) => [k, String(labels[k])]));
}

abstract class BaseStat<L extends string> implements Stat {
  abstract readonly type: "counter" | "gauge";
  readonly #values = new Map<string, Sample>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly L[],
    private readonly collect?: () => void | Promise<void>,
  ) {}

  /** Forget every series (a collect hook rebuilding them from live state starts here). */
  reset(): void {
    this.#values.clear();
  }

  /** The value of one series (0 when never set). */
  get(labels: Labels<L> = {}): number {
    return this.#values.get(keyOf(labels))?.[1] ?? 0;
  }

  protected add(labels: Labels<L>, delta: number, absolute: boolean): void {
    const key = keyOf(labels);
    const cur = this.#values.get(key);
    if (cur) cur[1] = absolute ? delta : cur[1] + delta;
    else this.#values.set(key, [{ ...labels }, delta]);
  }

  async samples(): Promise<Sample[]> {
    if (this.collect) await this.collect();
    return [...this.#values.values()].map(([l, v]) => [{ ...l }, v]);
  }
}

/** A monotonic count (requests, bytes, events), optionally per label set. */
export class Counter<L extends string = string> extends BaseStat<L> {
  readonly type = "counter" as const;

  /** Add `value` (default 1) to the series of `labels`; negative values are refused. */
  inc(labels?: Labels<L> | number, value?: number): void {
    const [l, v] = typeof labels === "number" ? [{}, labels] : [labels ?? {}, value ?? 1];
    if (!(v >= 0)) throw new RangeError(`counter ${this.name}: cannot add ${v}`);
    this.add(l, v, false);
  }
}

/** A value that goes up and down (open connections, sessions, RTT). */
export class Gauge<L extends string = string> extends BaseStat<L> {
  readonly type = "gauge" as const;

  /** Set the series of `labels` (or the single series) to `value`. */
  set(labels: Labels<L> | number, value?: number): void {
    if (typeof labels === "number") this.add({}, labels, true);
    else this.add(labels, value ?? 0, true);
  }

  /** Add `value` (default 1). */
  inc(labels?: Labels<L> | number, value?: number): void {
    const [l, v] = typeof labels === "number" ? [{}, labels] : [labels ?? {}, value ?? 1];
    this.add(l, v, false);
  }

  /** Subtract `value` (default 1). */
  dec(labels?: Labels<L> | number, value?: number): void {
    const [l, v] = typeof labels === "number" ? [{}, labels] : [labels ?? {}, value ?? 1];
    this.add(l, -v, false);
  }
}

/** A counter, created once per name (a second call returns the first). */
export function counter<L extends string>(
  name: string,
  help: string,
  labelNames: readonly L[] = [],
  collect?: (this: Counter<L>) => void | Promise<void>,
): Counter<L> {
  const found = allStats.get(name);
  if (found) return found as Counter<L>;
  const c: Counter<L> = new Counter<L>(name, help, labelNames, collect && (() => collect.call(c)));
  return register(c);
}

/** A gauge, created once per name; `collect` refreshes it from live state before each read. */
export function gauge<L extends string>(
  name: string,
  help: string,
  labelNames: readonly L[] = [],
  collect?: (this: Gauge<L>) => void | Promise<void>,
): Gauge<L> {
  const found = allStats.get(name);
  if (found) return found as Gauge<L>;
  const g: Gauge<L> = new Gauge<L>(name, help, labelNames, collect && (() => collect.call(g)));
  return register(g);
}

/**
 * A counter whose value is read at scrape time from live state (cumulative counts kept by
 * the code that owns them), per label set: `read` returns `[labels, value]` pairs.
 */
export function collectedCounter<L extends string>(
  name: string,
  help: string,
  labelNames: readonly L[],
  read: () => [Labels<L>, number][],
): Counter<L> {
  return counter(name, help, labelNames, function () {
    this.reset();
    for (const [labels, v] of read()) if (v >= 0) this.inc(labels, v);
  });
}
