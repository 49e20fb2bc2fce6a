/**
 * A CPU profile of a running Deno process through its inspector (`deno run --inspect=HOST:PORT`),
 * for finding where the microseconds of a request go (issue 20): V8's sampling profiler runs
 * for `--seconds` while the caller drives load, then the self time is summed per function
 * (and per category: GC, the event loop's native side, idle) and the top entries printed.
 * The raw profile is written to `--out` (open it in Chrome DevTools).
 *
 *   deno run -A bench/_cpuprof.ts --port 9229 --seconds 5 [--top 40] [--out x.cpuprofile]
 * @module
 */

import { benchFlags, procStat, procTicksPerSecond } from "./_util.ts";

/** One node of a V8 CPU profile (`Profiler.stop`'s result). */
interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

/** A V8 CPU profile. */
export interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** A connection to a Deno process's inspector: `call` sends one protocol command. */
export interface Inspector {
  call(method: string, params?: Record<string, unknown>): Promise<unknown>;
  close(): void;
}

/** Connect to the inspector of the process started with `--inspect=host:port` (its first target). */
export async function inspector(host: string, port: number): Promise<Inspector> {
  const targets = await (await fetch(`http://${host}:${port}/json/list`)).json() as {
    webSocketDebuggerUrl: string;
  }[];
  const ws = new WebSocket(targets[0].webSocketDebuggerUrl);
  await new Promise((ok, fail) => {
    ws.onopen = ok;
    ws.onerror = fail;
  });
  let nextId = 0;
  const waiting = new Map<number, (result: unknown) => void>();
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data) as { id?: number; result?: unknown };
    if (m.id === undefined) return; // an event, not an answer
    waiting.get(m.id)?.(m.result);
    waiting.delete(m.id);
  };
  return {
    call: (method, params = {}) =>
      new Promise<unknown>((ok) => {
        const id = ++nextId;
        waiting.set(id, ok);
        ws.send(JSON.stringify({ id, method, params }));
      }),
    close: () => ws.close(),
  };
}

/** Record a CPU profile of the process whose inspector listens on `host:port` for `ms`. */
export async function recordProfile(
  host: string,
  port: number,
  ms: number,
  intervalUs = 100,
): Promise<CpuProfile> {
  const { call, close } = await inspector(host, port);
  await call("Profiler.enable");
  await call("Profiler.setSamplingInterval", { interval: intervalUs });
  await call("Profiler.start");
  await new Promise((r) => setTimeout(r, ms));
  const { profile } = await call("Profiler.stop") as { profile: CpuProfile };
  close();
  return profile;
}

/**
 * What a sample weighs: `delta`, its own time delta (the profile's time); `even`, the
 * profile's mean interval for every sample, i.e. sample counts. On a loaded box a sample taken
 * after the thread was preempted carries the whole wait in its delta (one sample in an
 * op_write or a small function then weighs a microsecond per request): `even` does not.
 */
export type SampleWeight = "delta" | "even";

/**
 * Self time in ms per function (`name url:line`), largest first, each sample weighed by
 * `weight`.
 */
export function selfTimes(
  p: CpuProfile,
  weight: SampleWeight = "delta",
): { key: string; ms: number }[] {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const evenMs = (p.endTime - p.startTime) / 1000 / Math.max(1, p.samples.length);
  const ms = new Map<string, number>();
  for (let i = 0; i < p.samples.length; i++) {
    const n = byId.get(p.samples[i])!;
    const f = n.callFrame;
    const file = f.url.slice(f.url.lastIndexOf("/") + 1);
    const key = file ? `${f.functionName || "(anon)"} ${file}:${f.lineNumber + 1}` : f.functionName;
    const w = weight === "even" ? evenMs : (p.timeDeltas[i] ?? 0) / 1000;
    ms.set(key, (ms.get(key) ?? 0) + w);
  }
  return [...ms].map(([key, v]) => ({ key, ms: v })).sort((a, b) => b.ms - a.ms);
}

/**
 * Total time in ms per function (its samples and its callees', within one synchronous run:
 * an async function's time after an await is counted where it resumes), largest first.
 */
export function totalTimes(p: CpuProfile): { key: string; ms: number }[] {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const ms = new Map<string, number>();
  for (let i = 0; i < p.samples.length; i++) {
    const seen = new Set<string>();
    for (let id: number | undefined = p.samples[i]; id !== undefined; id = parent.get(id)) {
      const f = byId.get(id)!.callFrame;
      if (!f.url) continue;
      const key = `${f.functionName || "(anon)"} ${f.url.slice(f.url.lastIndexOf("/") + 1)}:${
        f.lineNumber + 1
      }`;
      if (seen.has(key)) continue;
      seen.add(key);
      ms.set(key, (ms.get(key) ?? 0) + (p.timeDeltas[i] ?? 0) / 1000);
    }
  }
  return [...ms].map(([key, v]) => ({ key, ms: v })).sort((a, b) => b.ms - a.ms);
}

/**
 * Where the busy time went, by kind: Deno's ops (`op_*`: the syscalls and their bindings),
 * GC, V8's own work ("(program)"), Deno's JS runtime (ext: files), and each of our files; each
 * sample weighed by `weight` ({@linkcode selfTimes}).
 */
export function byKind(
  p: CpuProfile,
  weight: SampleWeight = "delta",
): { key: string; ms: number }[] {
  const kinds = new Map<string, number>();
  for (const r of selfTimes(p, weight)) {
    if (r.key === "(idle)") continue;
    // V8's own entries ("(program)", "(garbage collector)") have no file; an anonymous
    // function's key ("(anon) relay.ts:40") has one and counts to its file.
    const v8 = /^\([^)]*\)$/.test(r.key);
    const cut = v8 ? -1 : r.key.lastIndexOf(" ");
    const name = cut < 0 ? r.key : r.key.slice(0, cut);
    const where = cut < 0 ? "" : r.key.slice(cut + 1);
    const file = where.slice(0, where.lastIndexOf(":"));
    const kind = v8
      ? r.key
      : name.startsWith("op_")
      ? "ops (syscalls and bindings)"
      : /^\d\d_/.test(file) || file === ""
      ? "Deno runtime JS"
      : file;
    kinds.set(kind, (kinds.get(kind) ?? 0) + r.ms);
  }
  return [...kinds].map(([key, ms]) => ({ key, ms })).sort((a, b) => b.ms - a.ms);
}

if (import.meta.main) {
  const flags = benchFlags({
    numbers: { port: 9229, seconds: 5, top: 40, interval: 100 },
    strings: ["out", "host"],
  });
  const profile = await recordProfile(
    flags.host ?? "127.0.0.1",
    flags.port,
    flags.seconds * 1000,
    flags.interval,
  );
  if (flags.out) Deno.writeTextFileSync(flags.out, JSON.stringify(profile));
  const rows = selfTimes(profile);
  const total = rows.reduce((s, r) => s + r.ms, 0);
  const busy = rows.filter((r) => r.key !== "(idle)").reduce((s, r) => s + r.ms, 0);
  console.log(`profile ${total.toFixed(0)} ms, busy ${busy.toFixed(0)} ms`);
  for (const r of rows.slice(0, flags.top)) {
    console.log(
      `${r.ms.toFixed(1).padStart(8)} ms ${(100 * r.ms / busy).toFixed(1).padStart(5)} %  ${r.key}`,
    );
  }
}

/** A node of V8's sampling heap profile. */
export interface HeapNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: HeapNode[];
}

/**
 * Start V8's sampling CPU profiler (and with `heap` its heap sampler) in the process whose
 * inspector listens on `127.0.0.1:port`; call the result to stop both and get the profiles.
 */
export async function startProfile(
  port: number,
  heap: boolean,
): Promise<() => Promise<{ profile: CpuProfile; heap?: { head: HeapNode } }>> {
  const { call, close } = await inspector("127.0.0.1", port);
  await call("Profiler.enable");
  await call("Profiler.setSamplingInterval", { interval: 100 });
  await call("Profiler.start");
  if (heap) {
    await call("HeapProfiler.startSampling", {
      samplingInterval: 512,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: true,
    });
  }
  return async () => {
    const { profile } = await call("Profiler.stop") as { profile: CpuProfile };
    const sampled = heap
      ? (await call("HeapProfiler.stopSampling") as { profile: { head: HeapNode } }).profile
      : undefined;
    close();
    return { profile, heap: sampled };
  };
}

/** Print a heap profile as bytes allocated per connection (`n` of them), its `top` functions. */
export function printHeapTable(heap: { head: HeapNode }, n: number, top: number): void {
  const by = new Map<string, number>();
  const walk = (h: HeapNode) => {
    const f = h.callFrame;
    const key = `${f.functionName || "(anon)"} ${f.url.slice(f.url.lastIndexOf("/") + 1)}:${
      f.lineNumber + 1
    }`;
    by.set(key, (by.get(key) ?? 0) + h.selfSize);
    for (const c of h.children) walk(c);
  };
  walk(heap.head);
  const total = [...by.values()].reduce((a, b) => a + b, 0);
  console.log(`-- allocated ${(total / n).toFixed(0)} bytes/conn (sampled), top functions`);
  for (const [k, b] of [...by].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    console.log(`${(b / n).toFixed(0).padStart(8)} B  ${k}`);
  }
}

/** User and system CPU seconds of `p` so far (/proc/PID/stat utime, stime). */
export function userSys(p: { child: Deno.ChildProcess }): { user: number; sys: number } {
  const s = procStat(p.child.pid);
  return { user: s.utime / procTicksPerSecond, sys: s.stime / procTicksPerSecond };
}
