/**
 * Soak: `deno run -A bench/soak.ts --minutes N [--workers W]` (`deno task soak`).
 *
 * Spawns the depot (plain and --mux), tunnel and fusion stacks, drives mixed traffic through
 * all of them at once for N minutes — connections of random upload/download sizes opened
 * and closed continuously, some abandoned mid-transfer — and samples the RSS (VmRSS) and
 * open FDs (/proc/<pid>/fd) of every service process each second. It prints the curve, then
 * the idle baseline, the peak and the value after the load stopped and GC had a moment, and
 * every exchange's byte-exact verdict (SHA-256 both ways). `runSoak` is also what
 * tests/soak_short_test.ts runs for half a minute.
 * @module
 */

import { createHash } from "node:crypto";
import { closeQuietly, type Duplex, sleep, writeAll } from "../lib/net/mod.ts";
import {
  fdCount,
  rssKiB,
  type Stack,
  startDepotStack,
  startFusionStack,
  startTunnelStack,
} from "../tests/_soak.ts";
import { blockStream, blockStreamSha256, sha256, startOrigin } from "../tests/_util.ts";
import { benchFlags, MiB } from "./_util.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Options of {@linkcode runSoak}. */
export interface SoakOptions {
  /** Seconds of load. */
  loadSeconds: number;
  /** Concurrent client loops per stack. @default 3 */
  workers?: number;
  /** Largest upload and download of one exchange, in bytes. @default 1 MiB */
  maxExchangeBytes?: number;
  /** Fraction of exchanges the client abandons mid-transfer (closes early). @default 0.1 */
  abandonRatio?: number;
  /** Most seconds to wait after the load for FDs to return to the baseline. @default 15 */
  settleSeconds?: number;
  /**
   * Split the load into this many equal phases, each followed by the settle period; RSS
   * after each phase goes to `afterPhase` (a leak grows phase by phase, an allocator's
   * high-water mark does not). @default 1
   */
  phases?: number;
  /** Stacks to run, by name (depot, depot-mux, fusion, tunnel). @default all four */
  stacks?: string[];
  /** Print the per-second curve as it is sampled. @default false */
  printCurve?: boolean;
}

/** One process's numbers. */
export interface ProcSample {
  rssMiB: number;
  fds: number;
}

/** What a soak run measured. */
export interface SoakResult {
  /** Every process by "stack/role". */
  procs: string[];
  /** Idle, after one warm-up exchange per stack. */
  baseline: Record<string, ProcSample>;
  /** Highest values seen during the load. */
  peak: Record<string, ProcSample>;
  /** After the load stopped and the settle period. */
  final: Record<string, ProcSample>;
  /** After each load phase's settle period (the last one is `final`). */
  afterPhase: Record<string, ProcSample>[];
  /** Highest RSS of each process during each load phase. */
  peakPhase: Record<string, number>[];
  /** Per-second samples: seconds since the load started (negative: baseline; load ends at loadSeconds). */
  curve: { t: number; samples: Record<string, ProcSample> }[];
  /** Exchanges completed and verified, per stack. */
  ok: Record<string, number>;
  /** Exchanges abandoned on purpose, per stack. */
  abandoned: Record<string, number>;
  /** Exchanges whose bytes did not match or that failed (must be 0). */
  failed: Record<string, number>;
  /** First failures, for the report. */
  errors: string[];
  /** Warnings and errors the services logged, counted by process and message. */
  serviceWarnings: Record<string, number>;
  /** Payload bytes moved (both directions), per stack. */
  bytes: Record<string, number>;
}

/**
 * Target for depot and fusion: reads `X<up> <down> <seed>\n` and `up` bytes, answers the
 * SHA-256 of what it read as a hex line, then `down` block-stream bytes, then closes.
 */
export function startExchangeTarget(): { port: number; close(): Promise<void> } {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const live = new Set<Deno.TcpConn>();
  const one = async (c: Deno.TcpConn) => {
    const buf = new Uint8Array(256 * 1024);
    let head = "";
    let rest = new Uint8Array(0);
    while (!head.includes("\n")) {
      const n = await c.read(buf);
      if (n === null) return;
      const s = dec.decode(buf.subarray(0, n));
      const i = s.indexOf("\n");
      if (i < 0) head += s;
      else {
        head += s.slice(0, i + 1);
        rest = buf.slice(enc.encode(s.slice(0, i + 1)).length, n);
      }
    }
    const [up, down, seed] = head.slice(1, -1).split(" ").map(Number);
    const h = createHash("sha256");
    let got = Math.min(rest.length, up);
    h.update(rest.subarray(0, got));
    while (got < up) {
      const n = await c.read(buf.subarray(0, Math.min(buf.length, up - got)));
      if (n === null) return;
      h.update(buf.subarray(0, n));
      got += n;
    }
    await writeAll(c, enc.encode(h.digest("hex") + "\n"));
    for (const chunk of blockStream(down, seed)) await writeAll(c, chunk);
  };
  const loop = (async () => {
    try {
      for await (const c of l) {
        live.add(c);
        one(c).catch(() => {
          // Abandoned exchanges reset their connections; the client side counts those.
        }).finally(() => {
          live.delete(c);
          closeQuietly(c);
        });
      }
    } catch {
      // listener closed
    }
  })();
  return {
    port: (l.addr as Deno.NetAddr).port,
    async close() {
      closeQuietly(l);
      await loop;
      for (const c of live) closeQuietly(c);
    },
  };
}

/** How long an abandoned exchange sends before the client closes it mid-transfer. */
const abandonAfterMs = 5;

/** Read everything until EOF (bounded by `max` bytes). */
async function readUpTo(c: Duplex, max: number): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let total = 0;
  const buf = new Uint8Array(256 * 1024);
  while (total <= max) {
    const n = await c.read(buf);
    if (n === null) break;
    parts.push(buf.slice(0, n));
    total += n;
  }
  const out = new Uint8Array(total);
  let o = 0;
  for (const p of parts) (out.set(p, o), o += p.length);
  return out;
}

/** One exchange through a depot or fusion stack; returns payload bytes moved. */
export async function rawExchange(
  c: Duplex,
  up: number,
  down: number,
  seed: number,
  abandon: boolean,
) {
  const send = (async () => {
    await writeAll(c, enc.encode(`X${up} ${down} ${seed}\n`));
    for (const chunk of blockStream(up, seed)) await writeAll(c, chunk);
  })();
  if (abandon) {
    await Promise.race([send, sleep(abandonAfterMs)]);
    return -1;
  }
  const [, back] = await Promise.all([send, readUpTo(c, down + 65 + 64)]);
  const line = dec.decode(back.subarray(0, 65));
  if (line !== blockStreamSha256(up, seed) + "\n") {
    throw new Error(`upload hash mismatch (${up} B)`);
  }
  const body = back.subarray(65);
  if (body.length !== down || sha256(body) !== blockStreamSha256(down, seed)) {
    throw new Error(`download mismatch: ${body.length} of ${down} B`);
  }
  return up + down;
}

/** One exchange through the tunnel (HTTP to the origin behind it). */
async function httpExchange(c: Duplex, up: number, down: number, seed: number, abandon: boolean) {
  // Abandoned exchanges are downloads: an upload cut mid-body makes the origin (Deno.serve)
  // print the body read error, which is noise here.
  const upload = up >= down && !abandon;
  const head = upload
    ? `POST /sha256 HTTP/1.1\r\nHost: app.test\r\nContent-Length: ${up}\r\nConnection: close\r\n\r\n`
    : `GET /bytes/${down}?seed=${seed} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n`;
  const send = (async () => {
    await writeAll(c, enc.encode(head));
    if (upload) { for (const chunk of blockStream(up, seed)) await writeAll(c, chunk); }
  })();
  if (abandon) {
    await Promise.race([send, sleep(abandonAfterMs)]);
    return -1;
  }
  const [, resp] = await Promise.all([send, readUpTo(c, Math.max(up, down) + 64 * 1024)]);
  const text = dec.decode(resp.subarray(0, 4096));
  const end = text.indexOf("\r\n\r\n");
  if (!text.startsWith("HTTP/1.1 200") || end < 0) {
    throw new Error(`tunnel: ${text.slice(0, 40).replaceAll("\r\n", " ")}`);
  }
  const headBytes = enc.encode(text.slice(0, end + 4)).length;
  let body = resp.subarray(headBytes);
  if (/transfer-encoding: chunked/i.test(text.slice(0, end))) body = dechunk(body);
  if (upload) {
    const j = JSON.parse(dec.decode(body)) as { sha256: string; bytes: number };
    if (j.bytes !== up || j.sha256 !== blockStreamSha256(up, seed)) {
      throw new Error(`tunnel upload mismatch: ${j.bytes} of ${up} B`);
    }
    return up;
  }
  if (body.length !== down || sha256(body) !== blockStreamSha256(down, seed)) {
    throw new Error(`tunnel download mismatch: ${body.length} of ${down} B`);
  }
  return down;
}

/** Decode a complete chunked body (small helper for the origin's JSON answers). */
function dechunk(b: Uint8Array): Uint8Array {
  const parts: Uint8Array[] = [];
  let o = 0;
  while (o < b.length) {
    let e = o;
    while (e + 1 < b.length && !(b[e] === 13 && b[e + 1] === 10)) e++;
    const size = parseInt(dec.decode(b.subarray(o, e)), 16);
    if (!(size > 0)) break;
    parts.push(b.subarray(e + 2, e + 2 + size));
    o = e + 2 + size + 2;
  }
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let p = 0;
  for (const x of parts) (out.set(x, p), p += x.length);
  return out;
}

function sampleAll(stacks: Stack[]): Record<string, ProcSample> {
  const out: Record<string, ProcSample> = {};
  for (const s of stacks) {
    for (const [role, p] of Object.entries(s.procs)) {
      out[`${s.name}/${role}`] = {
        rssMiB: Math.round(rssKiB(p.child.pid) / 102.4) / 10,
        fds: fdCount(p.child.pid),
      };
    }
  }
  return out;
}

/** Shortest settle period after a load phase. */
const settleMinMs = 6_000;

/** Run the soak: start the stacks, measure idle, load, settle, measure again, stop. */
export async function runSoak(opts: SoakOptions): Promise<SoakResult> {
  const workers = opts.workers ?? 3;
  const maxBytes = opts.maxExchangeBytes ?? MiB;
  const abandonRatio = opts.abandonRatio ?? 0.1;
  const target = startExchangeTarget();
  const origin = startOrigin();
  const stacks: Stack[] = [];
  const r: SoakResult = {
    procs: [],
    baseline: {},
    peak: {},
    final: {},
    afterPhase: [],
    peakPhase: [],
    curve: [],
    ok: {},
    abandoned: {},
    failed: {},
    errors: [],
    serviceWarnings: {},
    bytes: {},
  };
  try {
    const want = (name: string) => !opts.stacks || opts.stacks.includes(name);
    if (want("depot")) stacks.push(await startDepotStack(target.port));
    if (want("depot-mux")) stacks.push(await startDepotStack(target.port, { mux: true }));
    if (want("fusion")) stacks.push(await startFusionStack(target.port));
    if (want("tunnel")) stacks.push(await startTunnelStack(origin.port));
    const http = (s: Stack) => s.name === "tunnel";
    for (const s of stacks) (r.ok[s.name] = 0, r.abandoned[s.name] = 0, r.failed[s.name] = 0);
    for (const s of stacks) r.bytes[s.name] = 0;

    let seed = 1;
    const exchange = async (s: Stack, abandon: boolean) => {
      const up = Math.floor(Math.random() * maxBytes);
      const down = Math.floor(Math.random() * maxBytes);
      const c = await s.open();
      try {
        const run = http(s) ? httpExchange : rawExchange;
        return await run(c, up, down, seed++, abandon);
      } finally {
        closeQuietly(c);
      }
    };
    // Warm-up: one exchange each (JIT, pools, first connections), then the idle baseline.
    for (const s of stacks) await exchange(s, false);
    await sleep(2_000);
    const t0 = performance.now();
    const at = () => Math.round((performance.now() - t0) / 100) / 10;
    for (let i = 0; i < 3; i++) {
      r.curve.push({ t: at(), samples: sampleAll(stacks) });
      await sleep(500);
    }
    // Baseline: the mean of the idle samples (RSS), the last one (FDs).
    const idle = r.curve.slice(-3);
    r.procs = Object.keys(idle[0].samples);
    for (const k of r.procs) {
      r.baseline[k] = {
        rssMiB: Math.round(idle.reduce((a, x) => a + x.samples[k].rssMiB, 0) / idle.length * 10) /
          10,
        fds: idle[idle.length - 1].samples[k].fds,
      };
      r.peak[k] = { ...r.baseline[k] };
    }
    if (opts.printCurve) printHeader(r.procs);
    if (opts.printCurve) {
      for (const row of r.curve) printRow(row.t - at(), r.procs, row.samples);
    }

    const loadStart = performance.now();
    const settleMs = (opts.settleSeconds ?? 15) * 1000;
    const phases = Math.max(1, opts.phases ?? 1);
    const sampleNow = () => {
      const samples = sampleAll(stacks);
      const t = Math.round((performance.now() - loadStart) / 100) / 10;
      r.curve.push({ t, samples });
      if (opts.printCurve) printRow(t, r.procs, samples);
      return samples;
    };
    for (let phase = 0; phase < phases; phase++) {
      const loadEnd = performance.now() + (opts.loadSeconds * 1000) / phases;
      const sampler = (async () => {
        while (performance.now() < loadEnd) {
          await sleep(1_000);
          const samples = sampleNow();
          const pp = r.peakPhase[phase] ??= {};
          for (const k of r.procs) {
            pp[k] = Math.max(pp[k] ?? 0, samples[k].rssMiB);
            r.peak[k].rssMiB = Math.max(r.peak[k].rssMiB, samples[k].rssMiB);
            r.peak[k].fds = Math.max(r.peak[k].fds, samples[k].fds);
          }
        }
      })();
      const loops = stacks.flatMap((s) =>
        Array.from({ length: workers }, async () => {
          while (performance.now() < loadEnd) {
            const abandon = Math.random() < abandonRatio;
            try {
              const n = await exchange(s, abandon);
              if (n < 0) r.abandoned[s.name]++;
              else (r.ok[s.name]++, r.bytes[s.name] += n);
            } catch (err) {
              if (abandon) continue;
              r.failed[s.name]++;
              if (r.errors.length < 10) r.errors.push(`${s.name}: ${err}`);
            }
          }
        })
      );
      await Promise.all(loops);
      await sampler;
      // Settle: at least settleMinMs (V8's memory reducer acts a few seconds after the
      // allocation rate drops), until every FD count is back at its baseline or time is up.
      const settleStart = performance.now();
      while (true) {
        await sleep(1_000);
        r.final = sampleNow();
        const waited = performance.now() - settleStart;
        const fdsBack = r.procs.every((k) => r.final[k].fds <= r.baseline[k].fds);
        if ((fdsBack && waited >= Math.min(settleMinMs, settleMs)) || waited >= settleMs) break;
      }
      r.afterPhase.push(r.final);
    }
    for (const st of stacks) {
      for (const [role, p] of Object.entries(st.procs)) {
        for (const line of p.lines) {
          const m = /level=(warn|error) .*?msg="([^"]*)"/.exec(line);
          if (!m) continue;
          const key = `${st.name}/${role} ${m[1]}: ${m[2]}`;
          r.serviceWarnings[key] = (r.serviceWarnings[key] ?? 0) + 1;
        }
      }
    }
    return r;
  } finally {
    for (const s of stacks) await s.stop();
    await target.close();
    await origin.close();
  }
}

function printHeader(procs: string[]): void {
  console.log(["t(s)", ...procs.map((p) => `${p} RSS/FD`)].join("\t"));
}

function printRow(t: number, procs: string[], s: Record<string, ProcSample>): void {
  console.log([t.toFixed(1), ...procs.map((p) => `${s[p].rssMiB}/${s[p].fds}`)].join("\t"));
}

/** The summary table: baseline, peak, final per process; exchanges per stack. */
export function formatSoak(r: SoakResult): string {
  const phaseCols = r.afterPhase.map((_, i) => `after phase ${i + 1}`).join("\t");
  const lines = [`process\tidle RSS MiB/FDs\tpeak\t${phaseCols}`];
  for (const k of r.procs) {
    const b = r.baseline[k], p = r.peak[k];
    const after = r.afterPhase.map((a) => `${a[k].rssMiB}/${a[k].fds}`).join("\t");
    lines.push(`${k}\t${b.rssMiB}/${b.fds}\t${p.rssMiB}/${p.fds}\t${after}`);
  }
  lines.push("stack\texchanges ok\tabandoned\tfailed\tpayload MiB");
  for (const s of Object.keys(r.ok)) {
    lines.push(
      `${s}\t${r.ok[s]}\t${r.abandoned[s]}\t${r.failed[s]}\t${(r.bytes[s] / MiB).toFixed(0)}`,
    );
  }
  for (const e of r.errors) lines.push(`error: ${e}`);
  for (const [k, n] of Object.entries(r.serviceWarnings)) lines.push(`logged ${n}× ${k}`);
  return lines.join("\n");
}

if (import.meta.main) {
  const flags = benchFlags({
    numbers: { minutes: 2, phases: 2, workers: 3 },
    strings: ["stacks"],
  });
  const { minutes, phases, workers } = flags;
  const stacks = flags.stacks?.split(",");
  console.log(
    `soak: ${minutes} min of mixed traffic, ${workers} workers per stack ` +
      `(depot, depot --mux, fusion, tunnel); RSS MiB / open FDs per process each second`,
  );
  const r = await runSoak({
    loadSeconds: minutes * 60,
    workers,
    stacks,
    phases,
    printCurve: true,
  });
  console.log("\n" + formatSoak(r));
  const failed = Object.values(r.failed).reduce((a, b) => a + b, 0);
  Deno.exit(failed > 0 ? 1 : 0);
}
