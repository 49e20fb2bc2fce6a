/**
 * Prometheus metrics: the text exposition of every stat of lib/stats.ts (where protocol
 * modules count without loading a metrics library), read at scrape time, plus the process's
 * own figures (RSS, CPU seconds, open fds, start time) and anything an embedding registers in
 * prom-client's registry ({@linkcode promRegistry}). A stat with no series in this process (a server gauge in a client)
 * is left out, so each service exports only what it has. The HTTP endpoint (`/metrics` beside
 * the status page) is lib/status `serveObservability`, the layer above.
 * @module
 */

// Pinned inline, not through warren's deno.json: lib is imported from anywhere. A type only
// here: the library itself is loaded by promRegistry(), when an embedding asks for it.
// deno-lint-ignore no-import-prefix
import type { Registry } from "npm:prom-client@15.1.3";
import { formatAddr, liveServers } from "./net/serve.ts";
import {
  allStats,
  collectedCounter,
  counter,
  gauge,
  type Labels,
  type Sample,
  type Stat,
} from "./stats.ts";

export { collectedCounter, counter, gauge, histogram } from "./stats.ts";

let registry: Registry | undefined;

/**
 * A prom-client registry for metrics an embedding keeps with prom-client itself; once asked
 * for, its text is appended to warren's at every scrape. prom-client is loaded on the first
 * call only: warren's services never ask, so their processes do not carry it (~4 MB of heap
 * that every full GC would mark again; issue 20).
 */
export async function promRegistry(): Promise<Registry> {
  if (registry === undefined) {
    // deno-lint-ignore no-import-prefix
    const client = await import("npm:prom-client@15.1.3");
    registry ??= new client.Registry();
  }
  return registry;
}

/** The Content-Type of {@linkcode metricsText}: Prometheus text format 0.0.4. */
export const metricsContentType = "text/plain; version=0.0.4; charset=utf-8";

function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

function formatLabels(labels: Labels<string>): string {
  const parts = Object.entries(labels)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}="${escapeLabel(String(v))}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
}

function family(name: string, help: string, type: Stat["type"], samples: Sample[]): string {
  let out = `# HELP ${name} ${help.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")}\n`;
  out += `# TYPE ${name} ${type}\n`;
  for (const [labels, v, suffix] of samples) {
    out += `${name}${suffix ?? ""}${formatLabels(labels)} ${formatValue(v)}\n`;
  }
  return out;
}

/**
 * The Prometheus text of every stat with series (and, for one release, each renamed stat
 * again under its deprecated name), then prom-client's registry if {@linkcode promRegistry}
 * made one.
 */
export async function metricsText(): Promise<string> {
  let out = "";
  for (const stat of allStats.values()) {
    const samples = await stat.samples();
    if (samples.length === 0) continue;
    out += family(stat.name, stat.help, stat.type, samples);
    if (stat.deprecatedName) {
      const help = `Deprecated, removed in the next release: use ${stat.name}. ${stat.help}`;
      out += family(stat.deprecatedName, help, stat.type, samples);
    }
  }
  // An empty prom-client registry writes one "\n": left out, as when there is none.
  const embedded = registry === undefined ? "" : await registry.metrics();
  return embedded.trim() === "" ? out : out + embedded;
}

// ---- every service's listeners (every lib/net serve() loop), by name and address ----

function listenerLabels(s: { addr: Deno.NetAddr; name?: string }): Labels<string> {
  const addr = formatAddr(s.addr);
  return { listener: s.name ?? addr, addr };
}

gauge("warren_listener_connections_active", "Connections open now, by listener", [
  "listener",
  "addr",
], function () {
  this.reset();
  for (const s of liveServers) this.set(listenerLabels(s), s.stats.active);
});
collectedCounter(
  "warren_listener_connections_total",
  "Connections accepted, by listener (refused ones included)",
  ["listener", "addr"],
  () => [...liveServers].map((s) => [listenerLabels(s), s.stats.total]),
);
collectedCounter(
  "warren_listener_errors_total",
  "Connections refused or failed at the listener, by reason (limit, shed: an idle one " +
    "closed for a newcomer at the limit, handshake-timeout, handler-error, accept: a failed " +
    "accept such as EMFILE, retried)",
  ["listener", "addr", "reason"],
  () =>
    [...liveServers].flatMap((s) => {
      const l = listenerLabels(s);
      return [
        [{ ...l, reason: "limit" }, s.stats.rejected],
        [{ ...l, reason: "shed" }, s.stats.shed ?? 0],
        [{ ...l, reason: "handshake-timeout" }, s.stats.handshakeTimeouts],
        [{ ...l, reason: "handler-error" }, s.stats.errors],
        [{ ...l, reason: "accept" }, s.stats.acceptErrors],
      ] as [Labels<string>, number][];
    }),
);

// ---- the process (the names every Prometheus client library uses) ----

/**
 * `read(path)` when /proc can be read without a prompt (an installed service may not have
 * the permission; other systems have no /proc); undefined otherwise.
 */
function fromProc<T>(path: string, read: (path: string) => T): T | undefined {
  try {
    if (Deno.permissions.querySync({ name: "read", path }).state !== "granted") return undefined;
    return read(path);
  } catch {
    // No /proc here (not Linux) or no permission API answer: the figure is left out.
    return undefined;
  }
}

/**
 * Deno's getrusage (user and system µs of the whole process): the function node:process's
 * `cpuUsage()` calls, read here so the process figures load no node layer (~2 MB of heap in
 * every service, bench/RESULTS.md weight2). Not in Deno's published types, hence the check.
 */
const denoCpuUsage = (Deno as unknown as { cpuUsage?: () => { user: number; system: number } })
  .cpuUsage;
/** Clock ticks per second of /proc/self/stat's times (Linux's USER_HZ, 100 everywhere). */
const procTicksPerSecond = 100;

/**
 * CPU seconds (user + system) this process has used: getrusage when this Deno has it, else
 * /proc/self/stat's utime + stime (what Prometheus' own process collector reads); undefined
 * when neither can be read.
 */
export function cpuSeconds(): number | undefined {
  if (typeof denoCpuUsage === "function") {
    const u = denoCpuUsage();
    return (u.user + u.system) / 1e6;
  }
  return fromProc("/proc/self/stat", (p) => procStatCpuSeconds(Deno.readTextFileSync(p)));
}

/** utime + stime of a `/proc/PID/stat` line, in seconds (NaN if it is not one). */
export function procStatCpuSeconds(stat: string): number {
  // The fields after the command name (which may hold spaces and parentheses): state first.
  const f = stat.slice(stat.lastIndexOf(") ") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / procTicksPerSecond; // utime, stime: fields 14, 15
}

gauge("process_resident_memory_bytes", "Resident memory size in bytes", [], function () {
  this.set(Deno.memoryUsage().rss);
});
gauge("process_heap_bytes", "JavaScript heap in use (V8), in bytes", [], function () {
  this.set(Deno.memoryUsage().heapUsed);
});
counter(
  "process_cpu_seconds_total",
  "User and system CPU time spent, in seconds",
  [],
  function () {
    const seconds = cpuSeconds();
    this.reset();
    if (seconds !== undefined) this.inc(seconds);
  },
);
gauge(
  "process_start_time_seconds",
  "Start time of the process since the Unix epoch, in seconds",
  [],
  function () {
    this.set(Math.round(performance.timeOrigin) / 1000);
  },
);
gauge(
  "process_open_fds",
  "Open file descriptors (needs read access to /proc/self/fd)",
  [],
  function () {
    this.reset();
    const n = fromProc("/proc/self/fd", (p) => [...Deno.readDirSync(p)].length);
    if (n !== undefined) this.set(n - 1); // less the descriptor of the listing itself
  },
);
gauge(
  "process_max_fds",
  "Limit of open file descriptors (needs read access to /proc)",
  [],
  function () {
    this.reset();
    const limits = fromProc("/proc/self/limits", Deno.readTextFileSync) ?? "";
    const m = /^Max open files\s+(\d+)/m.exec(limits);
    if (m) this.set(Number(m[1]));
  },
);
