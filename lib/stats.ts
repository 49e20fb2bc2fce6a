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

/**
 * One series of a stat: its labels and value; a histogram's series carry the suffix of their
 * name (`_bucket` with an `le` label, `_sum`, `_count`).
 */
export type Sample = [labels: Labels<string>, value: number, suffix?: string];

/** What every stat has: identity, type and its current samples. */
export interface Stat {
  readonly name: string;
  readonly help: string;
  readonly type: "counter" | "gauge" | "histogram";
  readonly labelNames: readonly string[];
  /**
   * The name this stat was exported under before (kept for one release so dashboards
   * survive the rename; lib/metrics exports the series under both names).
   */
  readonly deprecatedName?: string;
  /**
   * Run the collect hook (if any), then return every series. None: the stat has nothing to
   * say in this process (a server gauge in a client) and is left out of the export.
   */
  samples(): Promise<Sample[]>;
}

/** Optional parts of a stat's definition. */
export interface StatOptions {
  /** See {@linkcode Stat.deprecatedName}. */
  deprecatedName?: string;
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

/**
 * The map key of a label set, the same whatever the order of its keys. Built by hand
 * (NUL between name and value, SOH after each pair: neither occurs in label names), not by
 * sorting and JSON-encoding pairs: it runs on every count of every connection and request.
 */
function keyOf(labels: Labels<string>): string {
  const keys = Object.keys(labels);
  if (keys.length > 1) keys.sort();
  let key = "";
  for (const k of keys) key += `${k}\u0000${labels[k]}\u0001`;
  return key;
}

abstract class BaseStat<L extends string> implements Stat {
  abstract readonly type: "counter" | "gauge";
  readonly #values = new Map<string, Sample>();
  readonly deprecatedName?: string;

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly L[],
    private readonly collect?: () => void | Promise<void>,
    opts: StatOptions = {},
  ) {
    this.deprecatedName = opts.deprecatedName;
  }

  /** Forget every series (a collect hook rebuilding them from live state starts here). */
  reset(): void {
    this.#values.clear();
  }

  /** The value of one series (0 when never set). */
  get(labels: Labels<L> = {}): number {
    return this.#values.get(keyOf(labels))?.[1] ?? 0;
  }

  protected add(
    labels: Labels<L>,
    delta: number,
    absolute: boolean,
    key: string = keyOf(labels),
  ): void {
    const cur = this.#values.get(key);
    if (cur) cur[1] = absolute ? delta : cur[1] + delta;
    else this.#values.set(key, [{ ...labels }, delta]);
  }

  async samples(): Promise<Sample[]> {
    if (this.collect) await this.collect();
    // A plain stat without labels always has its one series (0 until counted); a collect
    // hook or labels decide for themselves which series exist.
    if (this.#values.size === 0 && !this.collect && this.labelNames.length === 0) return [[{}, 0]];
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

  /**
   * The series of `labels`, its key built once: its `inc` skips building the label key on
   * every count (per-connection counts of a busy proxy).
   */
  series(labels: Labels<L>): { inc(value?: number): void } {
    const l = { ...labels };
    const key = keyOf(l);
    return {
      inc: (value = 1) => {
        if (!(value >= 0)) throw new RangeError(`counter ${this.name}: cannot add ${value}`);
        this.add(l, value, false, key);
      },
    };
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

  /** The series of `labels`, its key built once (see `Counter.series`). */
  series(labels: Labels<L>): { inc(value?: number): void; dec(value?: number): void } {
    const l = { ...labels };
    const key = keyOf(l);
    return {
      inc: (value = 1) => this.add(l, value, false, key),
      dec: (value = 1) => this.add(l, -value, false, key),
    };
  }
}

/** Upper bounds (seconds) of a latency histogram: 1 ms to 30 s. */
export const latencyBucketsSeconds: readonly number[] = [
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
];

interface HistogramSeries {
  labels: Labels<string>;
  /** Observations per bucket (not cumulative), one more than the bounds for +Inf. */
  counts: number[];
  sum: number;
  count: number;
}

/** A distribution of observations (durations, RTTs) in fixed buckets, per label set. */
export class Histogram<L extends string = string> implements Stat {
  readonly type = "histogram" as const;
  readonly #series = new Map<string, HistogramSeries>();
  readonly deprecatedName?: string;

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly L[],
    readonly buckets: readonly number[] = latencyBucketsSeconds,
    opts: StatOptions = {},
  ) {
    this.deprecatedName = opts.deprecatedName;
  }

  /** Record one observation (`value` in the histogram's unit, seconds for latencies). */
  observe(labels: Labels<L> | number, value?: number): void {
    const [l, v] = typeof labels === "number" ? [{}, labels] : [labels, value ?? 0];
    this.#observe(l, v, keyOf(l));
  }

  /** The series of `labels`, its key built once (see `Counter.series`). */
  series(labels: Labels<L>): { observe(value: number): void } {
    const l = { ...labels };
    const key = keyOf(l);
    return { observe: (value) => this.#observe(l, value, key) };
  }

  #observe(l: Labels<string>, v: number, key: string): void {
    let s = this.#series.get(key);
    if (!s) {
      s = {
        labels: { ...l },
        counts: new Array(this.buckets.length + 1).fill(0),
        sum: 0,
        count: 0,
      };
      this.#series.set(key, s);
    }
    let i = 0;
    while (i < this.buckets.length && v > this.buckets[i]) i++;
    s.counts[i]++;
    s.sum += v;
    s.count++;
  }

  /** Observations so far of one series. */
  count(labels: Labels<L> = {}): number {
    return this.#series.get(keyOf(labels))?.count ?? 0;
  }

  /** Cumulative `_bucket` series (with `le`), `_sum` and `_count`; none before the first observation. */
  samples(): Promise<Sample[]> {
    const out: Sample[] = [];
    for (const s of this.#series.values()) {
      let cum = 0;
      this.buckets.forEach((b, i) => {
        cum += s.counts[i];
        out.push([{ ...s.labels, le: String(b) }, cum, "_bucket"]);
      });
      out.push([{ ...s.labels, le: "+Inf" }, s.count, "_bucket"]);
      out.push([{ ...s.labels }, s.sum, "_sum"]);
      out.push([{ ...s.labels }, s.count, "_count"]);
    }
    return Promise.resolve(out);
  }
}

/** A counter, created once per name (a second call returns the first). */
export function counter<L extends string>(
  name: string,
  help: string,
  labelNames: readonly L[] = [],
  collect?: (this: Counter<L>) => void | Promise<void>,
  opts?: StatOptions,
): Counter<L> {
  const found = allStats.get(name);
  if (found) return found as Counter<L>;
  const c: Counter<L> = new Counter<L>(
    name,
    help,
    labelNames,
    collect && (() => collect.call(c)),
    opts,
  );
  return register(c);
}

/** A gauge, created once per name; `collect` refreshes it from live state before each read. */
export function gauge<L extends string>(
  name: string,
  help: string,
  labelNames: readonly L[] = [],
  collect?: (this: Gauge<L>) => void | Promise<void>,
  opts?: StatOptions,
): Gauge<L> {
  const found = allStats.get(name);
  if (found) return found as Gauge<L>;
  const g: Gauge<L> = new Gauge<L>(
    name,
    help,
    labelNames,
    collect && (() => collect.call(g)),
    opts,
  );
  return register(g);
}

/** A histogram, created once per name; `buckets` are upper bounds (default: latencies in s). */
export function histogram<L extends string>(
  name: string,
  help: string,
  labelNames: readonly L[] = [],
  buckets: readonly number[] = latencyBucketsSeconds,
): Histogram<L> {
  const found = allStats.get(name);
  if (found) return found as Histogram<L>;
  return register(new Histogram<L>(name, help, labelNames, buckets));
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
  opts?: StatOptions,
): Counter<L> {
  return counter(name, help, labelNames, function () {
    this.reset();
    for (const [labels, v] of read()) if (v >= 0) this.inc(labels, v);
  }, opts);
}
