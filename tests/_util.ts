/**
 * Test helpers: loopback listeners on port 0, deterministic payloads with streaming
 * SHA-256, a Deno HTTP origin, and child-process services that report their addresses.
 */

import { createHash } from "node:crypto";
import v8 from "node:v8";
import vm from "node:vm";
import { type Duplex, writeAll } from "../lib/net/mod.ts";
import { watchChild } from "./_watchdog.ts";

/** Listen on 127.0.0.1 with a kernel-chosen port. */
export function listenLocal(): Deno.TcpListener {
  return Deno.listen({ hostname: "127.0.0.1", port: 0 });
}

/**
 * The lowest port of the kernel's ephemeral range, from which bind(0) and every outgoing
 * connection take their local ports (Linux default 32768).
 */
const ephemeralLowPort: number = (() => {
  try {
    const text = Deno.readTextFileSync("/proc/sys/net/ipv4/ip_local_port_range");
    return Number(text.trim().split(/\s+/)[0]) || 32768;
  } catch {
    return 32768; // not Linux, or /proc unreadable: the usual default
  }
})();

/** Ports below this are left to well-known services. */
const lowestPickedPort = 10_000;

/**
 * A random port below the kernel's ephemeral range with room for two more after it, or 0
 * where that range leaves too little room (then bind port 0). A port of the ephemeral range
 * (what bind(0) gives) can be taken by any outgoing connection or socket on the machine as
 * its local port before a service told that port binds it, which then fails with EADDRINUSE
 * (seen on a loaded box, where a service bound its ports 15 s after they were picked).
 */
export function portBelowEphemeral(): number {
  const span = ephemeralLowPort - 3 - lowestPickedPort;
  return span < 1000 ? 0 : lowestPickedPort + Math.floor(Math.random() * span);
}

/** A TCP port free on 127.0.0.1 now, for a service told its port (see portBelowEphemeral). */
export function freePort(): number {
  for (let tries = 1;; tries++) {
    try {
      const l = Deno.listen({ hostname: "127.0.0.1", port: portBelowEphemeral() });
      l.close();
      return l.addr.port;
    } catch (err) {
      if (!(err instanceof Deno.errors.AddrInUse) || tries >= 100) throw err;
    }
  }
}

/** A reusable block of random bytes: cheap to send many times for large transfers. */
export const randomBlock: Uint8Array = (() => {
  const b = new Uint8Array(1 << 20);
  for (let o = 0; o < b.length; o += 65536) crypto.getRandomValues(b.subarray(o, o + 65536));
  return b;
})();

/** SHA-256 (hex) of `total` bytes made by repeating `randomBlock` rotated by `seed`. */
export function blockStreamSha256(total: number, seed = 0): string {
  const h = createHash("sha256");
  for (const chunk of blockStream(total, seed)) h.update(chunk);
  return h.digest("hex");
}

/** The chunks of the payload `blockStreamSha256` hashes. */
export function* blockStream(total: number, seed = 0): Generator<Uint8Array> {
  let sent = 0;
  const rot = seed % randomBlock.length;
  const rotated = new Uint8Array(randomBlock.length);
  rotated.set(randomBlock.subarray(rot));
  rotated.set(randomBlock.subarray(0, rot), randomBlock.length - rot);
  while (sent < total) {
    const n = Math.min(rotated.length, total - sent);
    yield rotated.subarray(0, n);
    sent += n;
  }
}

/** Write the block stream of `total` bytes to `w`. */
export async function sendBlocks(w: Duplex, total: number, seed = 0): Promise<void> {
  for (const chunk of blockStream(total, seed)) await writeAll(w, chunk);
}

/**
 * Echo `s` until its EOF, each read's bytes sent back as writes of at most `writeBytes` all
 * issued in one turn (many small frames per read on a mux stream: what grows a session's
 * buffers), then half-close and close. Any tree's lib/mux Stream fits (bench/mux_mem.ts).
 */
export async function echoInWrites(s: Duplex, writeBytes: number): Promise<void> {
  const buf = new Uint8Array(64 * 1024);
  const writes: Promise<number>[] = [];
  for (let n = await s.read(buf); n !== null; n = await s.read(buf)) {
    for (let o = 0; o < n; o += writeBytes) {
      writes.push(s.write(buf.slice(o, Math.min(n, o + writeBytes))));
    }
  }
  await Promise.all(writes);
  await s.closeWrite();
  s.close();
}

/**
 * How long a test's read may wait for its next bytes (or EOF) before it counts as a hang: a
 * bound on silence, not on the whole transfer, so a slow box that still moves bytes never trips
 * it.
 */
export const readIdleMs = 60_000;

/**
 * One `r.read(buf)`, failing after `readIdleMs` of silence with `what` and the bytes read so far
 * (`sofar`): a peer that neither sends nor closes fails the test, named, instead of hanging it.
 */
export function readWithin(
  r: Pick<Duplex, "read">,
  buf: Uint8Array,
  what: string,
  sofar = 0,
): Promise<number | null> {
  return within(r.read(buf), () => `${what} (${sofar} bytes read so far)`, readIdleMs);
}

/**
 * The next item of a reader that returns one per `read()` (a frame, a datagram, a control
 * message, a text chunk), failing after `readIdleMs` with `what`: a peer that neither answers
 * nor closes fails the test, named, instead of hanging it.
 */
export function nextWithin<T>(r: { read(): Promise<T> }, what: string): Promise<T> {
  return within(r.read(), what, readIdleMs);
}

/**
 * The next stream or connection `l` accepts, failing after `readIdleMs` with `what`: a peer's
 * open that never arrives fails the test, named, instead of hanging it; so does a close (null).
 */
export async function acceptWithin<T>(
  l: { accept(): Promise<T | null> },
  what: string,
): Promise<T> {
  const got = await within(l.accept(), what, readIdleMs);
  if (got === null) throw new Error(`closed while waiting for ${what}`);
  return got;
}

/**
 * Read `r` to EOF; returns byte count and SHA-256 hex. Each read is bounded by `readIdleMs`
 * (see `readWithin`); `what` names the stream in that failure.
 */
export async function drainHash(
  r: Pick<Duplex, "read">,
  what = "bytes or EOF to hash",
): Promise<{ bytes: number; sha256: string }> {
  const h = createHash("sha256");
  const buf = new Uint8Array(256 * 1024);
  let bytes = 0;
  while (true) {
    const n = await readWithin(r, buf, what, bytes);
    if (n === null) break;
    h.update(buf.subarray(0, n));
    bytes += n;
  }
  return { bytes, sha256: h.digest("hex") };
}

/**
 * Read `r` to EOF into one array (small payloads only). Each read is bounded by `readIdleMs`
 * (see `readWithin`); `what` names the stream in that failure.
 */
export async function readAll(
  r: Pick<Duplex, "read">,
  what = "bytes or EOF",
): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  const buf = new Uint8Array(64 * 1024);
  let bytes = 0;
  while (true) {
    const n = await readWithin(r, buf, what, bytes);
    if (n === null) break;
    parts.push(buf.slice(0, n));
    bytes += n;
  }
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** SHA-256 hex of a byte array. */
export function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/**
 * An HTTP origin for tests: `GET /bytes/N?seed=S` streams the block stream of N bytes,
 * `POST /sha256` answers the SHA-256 and length of the body, `GET /hello` a short text.
 */
export function startOrigin(): { port: number; close(): Promise<void> } {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const url = new URL(req.url);
    const m = /^\/bytes\/(\d+)$/.exec(url.pathname);
    if (m) {
      const total = Number(m[1]);
      const seed = Number(url.searchParams.get("seed") ?? 0);
      const it = blockStream(total, seed);
      const body = new ReadableStream<Uint8Array>({
        pull(c) {
          const r = it.next();
          if (r.done) c.close();
          else c.enqueue(r.value.slice());
        },
      });
      return new Response(body, { headers: { "content-length": String(total) } });
    }
    if (url.pathname === "/sha256" && req.method === "POST") {
      const h = createHash("sha256");
      let n = 0;
      for await (const chunk of req.body ?? new ReadableStream()) {
        h.update(chunk);
        n += chunk.length;
      }
      return Response.json({ sha256: h.digest("hex"), bytes: n });
    }
    if (url.pathname === "/hello") return new Response(`hello ${url.searchParams.get("id") ?? ""}`);
    return new Response("not found", { status: 404 });
  });
  return { port: server.addr.port, close: () => server.shutdown() };
}

/**
 * What `within` (and so every bounded wait here) rejects with: a caller that turns a peer's
 * error into a value (a close instead of an answer) rethrows this one.
 */
export class TimedOutError extends Error {}

/**
 * `p`, or a rejection naming `what` after `timeoutMs`: a test waiting for something that never
 * comes fails quickly and says what it waited for (`what`, or what it returns at the timeout),
 * instead of hanging. Bounds are generous (the default 60 s): they are for hangs, never timing.
 */
export function within<T>(
  p: Promise<T>,
  what: string | (() => string),
  timeoutMs = 60_000,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const said = typeof what === "string" ? what : what();
      reject(new TimedOutError(`timed out after ${timeoutMs} ms waiting for ${said}`));
    }, timeoutMs);
  });
  return Promise.race([p, expired]).finally(() => clearTimeout(timer));
}

/** `fetch(url, init)` and its text body, bounded by `within`: a hung service fails, named. */
export function fetchText(url: string, init?: RequestInit): Promise<string> {
  return within(fetch(url, init).then((r) => r.text()), `GET ${url}`);
}

/** `fetch(url, init)` and its JSON body, bounded by `within`: a hung service fails, named. */
export async function fetchJson<T>(url: string, init?: RequestInit): Promise<T> {
  return await within(fetch(url, init).then((r) => r.json()), `GET ${url}`) as T;
}

/**
 * Poll `cond` every 10 ms until it holds; after `timeoutMs` (default 60 s) throw naming `what`.
 * For a state that must come (a log line, a counter, a datagram's answer): the bound is for a
 * hang, never a timing assertion.
 */
export async function until(
  what: string,
  cond: () => boolean | Promise<boolean>,
  timeoutMs = 60_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * Run a command to completion, returning its exit code and decoded output. A command still
 * running after `timeoutMs` (default 300 s: a hang, not a slow box) is killed and the call
 * throws, naming the command.
 */
export async function run(
  cmd: string,
  args: string[],
  opts: { stdin?: Uint8Array; env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<{ code: number; stdout: string; stderr: string; raw: Uint8Array }> {
  const child = new Deno.Command(cmd, {
    args,
    stdin: opts.stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
    env: opts.env,
  }).spawn();
  const timeoutMs = opts.timeoutMs ?? 300_000;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch {
      // It exited at this very moment: output() returns what it wrote.
    }
  }, timeoutMs);
  let out: Deno.CommandOutput;
  try {
    if (opts.stdin) {
      const w = child.stdin.getWriter();
      await w.write(opts.stdin);
      await w.close();
    }
    out = await child.output();
  } finally {
    clearTimeout(timer);
  }
  if (timedOut) {
    throw new Error(
      `${cmd} ${args.join(" ")}: still running after ${timeoutMs} ms, killed:\n` +
        new TextDecoder().decode(out.stderr),
    );
  }
  const dec = new TextDecoder();
  return {
    code: out.code,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
    raw: out.stdout,
  };
}

/** A service started as a child process; `addrs` maps listener names to their bound port. */
export interface ServiceProcess {
  child: Deno.ChildProcess;
  /** Every log line seen so far (stderr). */
  lines: string[];
  /** Resolves when a log line matches (from index `from` on, when given); rejects after 60 s. */
  waitFor(re: RegExp, timeoutMs?: number, from?: number): Promise<string>;
  /** `name=… addr=host:port` of each "listening" line seen so far. */
  addrs: Map<string, string>;
  /** SIGTERM, then wait for exit; returns the exit code (throws after `stopTimeoutMs`). */
  stop(signal?: Deno.Signal): Promise<number>;
}

/** How long a stopped service may take to exit before it is killed and the stop throws. */
export const stopTimeoutMs = 60_000;

/**
 * Start `deno run -A services/<script>` with `args`, waiting until `readyCount` "listening"
 * lines were logged. `denoArgs` go before the script (`--node-modules-dir=none`); `root` is
 * the tree whose services/ runs (default: this checkout).
 */
export async function startService(
  script: string,
  args: string[],
  opts: {
    readyCount?: number;
    env?: Record<string, string>;
    ready?: RegExp;
    denoArgs?: string[];
    root?: URL;
    /** Deno permission flags instead of -A (e.g. tools/install.ts servicePermissions). */
    permissions?: string[];
  } = {},
): Promise<ServiceProcess> {
  const path = new URL(`services/${script}`, opts.root ?? new URL("../", import.meta.url));
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...opts.permissions ?? ["-A"], ...opts.denoArgs ?? [], path.pathname, ...args],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
    env: opts.env,
  }).spawn();
  const lines: string[] = [];
  const addrs = new Map<string, string>();
  const waiters: { re: RegExp; resolve: (l: string) => void }[] = [];
  const consume = async (stream: ReadableStream<Uint8Array>) => {
    let pending = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      pending += chunk;
      let i;
      while ((i = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, i);
        pending = pending.slice(i + 1);
        lines.push(line);
        if (Deno.env.get("WARREN_TEST_VERBOSE")) console.error(`[${script}] ${line}`);
        // logfmt, or the same line as JSON (--log-format json)
        const m = /msg="listening".* name=(\S+).* addr=(\S+)/.exec(line) ??
          /"msg":"listening".*"name":"([^"]+)".*"addr":"([^"]+)"/.exec(line);
        if (m) addrs.set(m[1], m[2]);
        for (const w of [...waiters]) {
          if (w.re.test(line)) {
            waiters.splice(waiters.indexOf(w), 1);
            w.resolve(line);
          }
        }
      }
    }
  };
  const unwatch = watchChild({ name: script, lines, kill: () => child.kill("SIGKILL") });
  const done = Promise.all([consume(child.stdout), consume(child.stderr)]);
  void child.status.then(unwatch);
  const waitFor = (re: RegExp, timeoutMs = 60_000, from = 0): Promise<string> => {
    const hit = lines.slice(from).find((l) => re.test(l));
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        waiters.splice(waiters.findIndex((w) => w.re === re), 1);
        reject(
          new Error(`${script}: no line matching ${re} in ${timeoutMs} ms:\n${lines.join("\n")}`),
        );
      }, timeoutMs);
      waiters.push({ re, resolve: (l) => (clearTimeout(t), resolve(l)) });
    });
  };
  let stopped: Promise<number> | undefined;
  const stop = (signal: Deno.Signal = "SIGTERM") => {
    stopped ??= (async () => {
      try {
        child.kill(signal);
      } catch {
        // already exited
      }
      const exited = Promise.all([child.status, done]);
      try {
        return (await within(exited, `${script} to exit after ${signal}`, stopTimeoutMs))[0].code;
      } catch (err) {
        try {
          child.kill("SIGKILL");
        } catch {
          // It exited at this very moment: the error still says it was late.
        }
        await child.status;
        throw new Error(`${(err as Error).message} (killed):\n${lines.join("\n")}`);
      }
    })();
    return stopped;
  };
  const svc = { child, lines, waitFor, addrs, stop };
  try {
    if (opts.ready) await waitFor(opts.ready);
    const want = opts.readyCount ?? 1;
    const deadline = Date.now() + 60_000;
    while (addrs.size < want) {
      const status = await Promise.race([child.status, new Promise((r) => setTimeout(r, 20))]);
      if (status) throw new Error(`${script} exited early:\n${lines.join("\n")}`);
      if (Date.now() > deadline) throw new Error(`${script} not listening:\n${lines.join("\n")}`);
    }
  } catch (err) {
    await stop("SIGKILL");
    throw err;
  }
  return svc;
}

/**
 * Set process `pid`'s soft open-file limit (prlimit; the hard one stays, so the soft one can
 * be raised again): to `limit`, or to what it has open now plus `openPlus`. For the
 * fd-shortage tests; returns the soft limit it had (to set it back).
 */
export async function setFdLimit(
  pid: number,
  limit: number | { openPlus: number },
): Promise<number> {
  const limits = await Deno.readTextFile(`/proc/${pid}/limits`);
  const was = Number(/^Max open files\s+(\d+)/m.exec(limits)![1]);
  let n = typeof limit === "number" ? limit : limit.openPlus;
  if (typeof limit !== "number") { for await (const _ of Deno.readDir(`/proc/${pid}/fd`)) n++; }
  const out = await new Deno.Command("prlimit", {
    args: ["--pid", String(pid), `--nofile=${n}:`],
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`prlimit: ${new TextDecoder().decode(out.stderr)}`);
  return was;
}

/** Port of a `host:port` string. */
export function portOf(addr: string): number {
  return Number(addr.slice(addr.lastIndexOf(":") + 1));
}

/**
 * Run a full garbage collection (V8's `gc`, exposed at run time), so memory assertions
 * measure what is retained, not garbage a collection has not reached yet.
 */
export const collectGarbage: () => void = (() => {
  v8.setFlagsFromString("--expose-gc");
  return vm.runInNewContext("gc") as () => void;
})();

/**
 * How many times `Deno.dlopen` ran while `fn` ran (this process): a library opened per
 * connection or per listener is CPU on the event loop (~2 ms each here), so tests count them.
 */
export async function countDlopens(fn: () => Promise<void>): Promise<number> {
  const real = Deno.dlopen;
  let opens = 0;
  Deno.dlopen = ((path, symbols) => {
    opens++;
    return real(path, symbols);
  }) as typeof Deno.dlopen;
  try {
    await fn();
  } finally {
    Deno.dlopen = real;
  }
  return opens;
}
