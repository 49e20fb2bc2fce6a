/**
 * The live status model: services register snapshot providers (tables of what is connected
 * and a few numeric series); the hub samples them once a second and keeps about five
 * minutes of history per series for the status page's charts.
 * @module
 */

/** One table of the status page (connected exits, hosts, paths, connections ...). */
export interface StatusTable {
  title: string;
  columns: string[];
  rows: (string | number | boolean | null)[][];
}

/**
 * How a series' sampled value becomes a chart point: `gauge` as is; `rate` the per-second
 * increase of a cumulative counter over the last `rateWindowMs` (a smoothed rate: a steady
 * transfer plots as a flat line, not as alternating zeros and spikes); `share` that rate as a
 * percentage of the sum of the `share` series of the same chart (each fusion path's share).
 *
 * The page formats values by the chart's name: `... bytes/s` and `... bytes` in KiB/MiB/GiB,
 * `... ms` as durations, `... %` as percentages; table columns named `up`, `down`, `in`, `out`
 * or with `bytes` in bytes, `... ms` and `... s` as durations, ISO timestamps in local time.
 */
export type SeriesKind = "gauge" | "rate" | "share";

/** One sampled number; series with the same `chart` are drawn together. */
export interface StatusSeries {
  chart: string;
  name: string;
  value: number;
  kind?: SeriesKind;
}

/** What a provider returns at each sample. */
export interface StatusSnapshot {
  tables?: StatusTable[];
  series?: StatusSeries[];
}

/** A service's status source; called once per sample and once per page poll. */
export type StatusProvider = () => StatusSnapshot | Promise<StatusSnapshot>;

/** One chart's history: `times` in Unix seconds, one values array per series (null = gap). */
export interface ChartData {
  chart: string;
  names: string[];
  times: number[];
  values: (number | null)[][];
}

/** The JSON the status page polls. */
export interface StatusData {
  service: string;
  nowMs: number;
  uptimeMs: number;
  tables: StatusTable[];
  charts: ChartData[];
}

/** Options of a `StatusHub`. */
export interface StatusHubOptions {
  /** Shown as the page title. */
  service: string;
  /** @default 1000 */
  sampleIntervalMs?: number;
  /** Samples kept per series. @default 300 (five minutes at one a second) */
  historySize?: number;
  /** Window of `rate` and `share` series. @default 5000 */
  rateWindowMs?: number;
}

interface SeriesHistory {
  chart: string;
  name: string;
  kind: SeriesKind;
  /** Aligned with the hub's times; null where the series had no sample. */
  values: (number | null)[];
  /** Raw values of the rate window, oldest first. */
  raw: { value: number; atMs: number }[];
}

/**
 * Samples providers into bounded per-series histories (a ring of `historySize` samples).
 *
 * @example
 * ```ts
 * import { StatusHub } from "./hub.ts";
 * let n = 0;
 * const hub = new StatusHub({ service: "seaprox" });
 * hub.register(() => ({ series: [{ chart: "connections", name: "active", value: n }] }));
 * hub.start(); // samples every sampleIntervalMs (1 s) into a bounded history
 * n = 3;
 * await hub.sample(); // or one sample now
 * hub.stop();
 * ```
 */
export class StatusHub {
  readonly service: string;
  readonly sampleIntervalMs: number;
  readonly historySize: number;
  readonly rateWindowMs: number;
  readonly #providers: StatusProvider[] = [];
  readonly #times: number[] = [];
  readonly #series = new Map<string, SeriesHistory>();
  readonly #startedMs = Date.now();
  #timer: ReturnType<typeof setInterval> | undefined;
  #sampling = false;

  constructor(opts: StatusHubOptions) {
    this.service = opts.service;
    this.sampleIntervalMs = opts.sampleIntervalMs ?? 1000;
    this.historySize = opts.historySize ?? 300;
    this.rateWindowMs = opts.rateWindowMs ?? 5000;
  }

  /** Add a provider; its tables and series join the page. */
  register(provider: StatusProvider): void {
    this.#providers.push(provider);
  }

  /** Sample now and then every `sampleIntervalMs` (the timer does not keep the process up). */
  start(): void {
    if (this.#timer !== undefined) return;
    void this.sample();
    const timer = setInterval(() => void this.sample(), this.sampleIntervalMs);
    Deno.unrefTimer(timer);
    this.#timer = timer;
  }

  /** Stop sampling. */
  stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  async #collect(): Promise<StatusSnapshot[]> {
    const out: StatusSnapshot[] = [];
    for (const p of this.#providers) {
      try {
        out.push(await p());
      } catch (err) {
        // A failing provider must not take the page down: show why in a table instead.
        out.push({
          tables: [{ title: "status error", columns: ["error"], rows: [[String(err)]] }],
        });
      }
    }
    return out;
  }

  /** Take one sample of every provider's series (the timer calls it; tests may too). */
  async sample(nowMs: number = Date.now()): Promise<void> {
    if (this.#sampling) return;
    this.#sampling = true;
    try {
      const snaps = await this.#collect();
      const series = snaps.flatMap((s) => s.series ?? []);
      this.#times.push(nowMs / 1000);
      const seen = new Set<string>();
      const shareTotals = new Map<string, number>();
      const points = new Map<string, number | null>();
      for (const s of series) {
        const key = `${s.chart}\u0000${s.name}`;
        seen.add(key);
        let h = this.#series.get(key);
        if (!h) {
          h = {
            chart: s.chart,
            name: s.name,
            kind: s.kind ?? "gauge",
            values: new Array(this.#times.length - 1).fill(null),
            // A counter that appears mid-run (a new failure reason, a new path) counted from 0
            // since the previous sample: its first events are charted, not lost.
            raw: this.#times.length > 1 && s.kind !== undefined && s.kind !== "gauge"
              ? [{ value: 0, atMs: this.#times[this.#times.length - 2] * 1000 }]
              : [],
          };
          this.#series.set(key, h);
        }
        let point: number | null = s.value;
        if (h.kind !== "gauge") {
          // A counter that went down (its source restarted) starts a fresh window.
          const last = h.raw.at(-1);
          if (last && s.value < last.value) h.raw = [];
          h.raw.push({ value: s.value, atMs: nowMs });
          while (h.raw.length > 2 && nowMs - h.raw[1].atMs >= this.rateWindowMs) h.raw.shift();
          const first = h.raw[0];
          point = nowMs > first.atMs
            ? (s.value - first.value) / ((nowMs - first.atMs) / 1000)
            : null;
          if (h.kind === "share" && point !== null) {
            shareTotals.set(s.chart, (shareTotals.get(s.chart) ?? 0) + point);
          }
        }
        points.set(key, point);
      }
      for (const [key, h] of this.#series) {
        let point = seen.has(key) ? points.get(key) ?? null : null;
        if (h.kind === "share" && point !== null) {
          const total = shareTotals.get(h.chart) ?? 0;
          point = total > 0 ? (100 * point) / total : null;
        }
        h.values.push(point);
      }
      // Bounded history: drop the oldest sample, and series with nothing left to show.
      while (this.#times.length > this.historySize) {
        this.#times.shift();
        for (const h of this.#series.values()) h.values.shift();
      }
      for (const [key, h] of this.#series) {
        if (!seen.has(key) && h.values.every((v) => v === null)) this.#series.delete(key);
      }
    } finally {
      this.#sampling = false;
    }
  }

  /** Current tables and the charts' histories. */
  async data(): Promise<StatusData> {
    const snaps = await this.#collect();
    const charts = new Map<string, ChartData>();
    for (const h of this.#series.values()) {
      let c = charts.get(h.chart);
      if (!c) {
        c = { chart: h.chart, names: [], times: [...this.#times], values: [] };
        charts.set(h.chart, c);
      }
      c.names.push(h.name);
      c.values.push([...h.values]);
    }
    return {
      service: this.service,
      nowMs: Date.now(),
      uptimeMs: Date.now() - this.#startedMs,
      tables: snaps.flatMap((s) => s.tables ?? []),
      charts: [...charts.values()],
    };
  }
}
