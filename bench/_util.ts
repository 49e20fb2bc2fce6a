/**
 * The shared harness of the benchmarks in bench/: flags, child processes and their log lines,
 * ports, the outside tools (curl, wrk, hey) and their output, the length-prefixed byte source
 * several benches measure through, /proc readings and table formatting. One version of each,
 * so every bench starts, waits, measures and prints the same way.
 *
 * Line watching is tests/_netns.ts's `Watched` (the fusion tests use it too) and /proc sizes are
 * tests/_soak.ts's `procStatusKiB`, both re-exported here so benches import their harness from one
 * place.
 * @module
 */

import { parseArgs } from "node:util";
import {
  closeQuietly,
  dial,
  type Duplex,
  errorMessage,
  withPrefix,
  writeAll,
} from "../lib/net/mod.ts";
import { socks5Connect } from "../lib/socks5/mod.ts";
import { sh, Watched } from "../tests/_netns.ts";
import { procStatusKiB } from "../tests/_soak.ts";

export { procStatusKiB, sh, Watched };

// ---------------------------------------------------------------- units and limits

/** Bytes in a megabyte as the tables count them: decimal, like curl, wrk and iperf3. */
export const bytesPerMB = 1e6;
/** Bytes in a mebibyte: sizes given on the command line (`--bytes`, `--mib`) use it. */
export const MiB = 1 << 20;
/**
 * How long a helper process, port or condition may take to become ready. Generous: the
 * machine is shared and a cold `deno run` type-checks nothing but still compiles.
 */
export const readyTimeoutMs = 20_000;
/** Poll interval while waiting for a port or a condition. */
export const pollIntervalMs = 50;
/** Connect timeout of one readiness probe (a listener that is up answers at once). */
export const probeTimeoutMs = 1_000;

// ---------------------------------------------------------------- flags

/** The parsed flags of {@linkcode benchFlags}: numbers, booleans, optional strings. */
export type BenchFlags<N extends string, B extends string, S extends string> =
  & { [K in N]: number }
  & { [K in B]: boolean }
  & { [K in S]?: string };

/** One tree of a same-run comparison (`--trees`): its name, its checkout, the extra part. */
export interface BenchTree {
  name: string;
  /** The checkout's directory, without a trailing slash. */
  dir: string;
  /** What followed the directory after the bench's separator, its `+` read as `,`; "" if none. */
  extra: string;
}

/**
 * The trees a bench runs side by side: `--trees name=DIR[<sep>EXTRA],...`, or `fallback` when
 * the flag is unset. EXTRA is itself a comma-separated list (a variant's name, V8 flags), so its
 * commas are written as `+`.
 */
export function benchTrees(spec: string | undefined, fallback = "", sep = ""): BenchTree[] {
  return (spec ?? fallback).split(",").filter(Boolean).map((t) => {
    const [name, rest = ""] = t.split(/=(.*)/s);
    const at = sep === "" ? -1 : rest.indexOf(sep);
    const dir = (at < 0 ? rest : rest.slice(0, at)).replace(/\/$/, "");
    return { name, dir, extra: at < 0 ? "" : rest.slice(at + sep.length).replaceAll("+", ",") };
  });
}

/**
 * Parse a bench's `--name value` flags (also `--name=value`). Numbers fall back to their
 * default; a value that is not a number, or a flag the bench does not know, prints one line
 * on stderr and exits 2 (a typo must not silently run the default, which can take minutes).
 */
export function benchFlags<
  N extends string,
  B extends string = never,
  S extends string = never,
>(
  spec: { numbers?: Record<N, number>; booleans?: readonly B[]; strings?: readonly S[] },
  args: string[] = Deno.args,
): BenchFlags<N, B, S> {
  const numbers = (spec.numbers ?? {}) as Record<N, number>;
  const options: Record<string, { type: "string" | "boolean" }> = {};
  for (const k of Object.keys(numbers)) options[k] = { type: "string" };
  for (const k of spec.booleans ?? []) options[k] = { type: "boolean" };
  for (const k of spec.strings ?? []) options[k] = { type: "string" };
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({ args, options, strict: true, allowPositionals: false }).values;
  } catch (err) {
    console.error(`error: ${errorMessage(err)}`);
    Deno.exit(2);
  }
  const out: Record<string, number | boolean | string | undefined> = {};
  for (const [k, fallback] of Object.entries(numbers) as [N, number][]) {
    const raw = values[k];
    const v = raw === undefined ? fallback : Number(raw);
    if (!Number.isFinite(v)) {
      console.error(`error: --${k} takes a number, got "${raw}"`);
      Deno.exit(2);
    }
    out[k] = v;
  }
  for (const k of spec.booleans ?? []) out[k] = values[k] === true;
  for (const k of spec.strings ?? []) out[k] = values[k] as string | undefined;
  return out as BenchFlags<N, B, S>;
}

// ---------------------------------------------------------------- processes

/** Absolute path of `services/<name>`. */
export function servicePath(name: string): string {
  return new URL(`../services/${name}`, import.meta.url).pathname;
}

/** Absolute path of `bench/<name>` (the helper scripts, e.g. `_relay.ts`). */
export function benchPath(name: string): string {
  return new URL(`./${name}`, import.meta.url).pathname;
}

/**
 * What a bench does with a child's output:
 * - `lines`: both streams are read into `lines`, so `waitFor` can wait for a log line;
 * - `discard`: both go to /dev/null — outside peers whose logs would bury the table, and
 *   processes that fork children holding the pipes open (sshd) so `stop` never waits on them;
 * - `stderr`: stdout is discarded, stderr passes through, so a peer's own error shows.
 */
export type ChildOutput = "lines" | "discard" | "stderr";

/** A child process the bench started. */
export interface Proc {
  readonly name: string;
  readonly child: Deno.ChildProcess;
  /** Lines of stdout and stderr seen so far (always empty unless the output is `lines`). */
  readonly lines: string[];
  /**
   * The first line matching `re`, seen before or later; rejects after `timeoutMs`, at once if
   * the process exits first, and always when the output is not `lines`.
   */
  waitFor(re: RegExp, timeoutMs?: number): Promise<string>;
  /** Send `signal` (SIGTERM by default) and wait for the exit (and the end of its output). */
  stop(signal?: Deno.Signal): Promise<void>;
}

/** Options of {@linkcode spawn}. */
export interface SpawnOptions {
  env?: Record<string, string>;
  /** What happens to the output. @default "lines" */
  output?: ChildOutput;
  /** Name in error messages. @default the command's base name */
  name?: string;
  /** Flags of `deno run` itself, before the script (e.g. `--v8-flags=...`): {@linkcode spawnDeno} only. */
  denoFlags?: string[];
}

/**
 * `deno run -A <v8Flags> script args` with its stdout line-buffered: V8 prints its GC traces
 * (`--trace-gc`, `--trace-gc-nvp`) through C stdio, block-buffered into a pipe, so without
 * `stdbuf -oL` (coreutils) a round's lines arrive late or cut.
 */
export function spawnTraced(
  script: string,
  args: string[],
  v8Flags: string,
  opts: { env?: Record<string, string>; name?: string } = {},
): Proc {
  const deno = [Deno.execPath(), "run", "-A", v8Flags, script, ...args];
  return spawn("stdbuf", ["-oL", ...deno], {
    env: opts.env,
    name: opts.name ?? script.slice(script.lastIndexOf("/") + 1),
  });
}

/** One GC's `--trace-gc-nvp` object (the fields are V8's: `gc`, `pause`, `promoted`, ...). */
export type GcLine = Record<string, number | string | boolean>;

/** The `--trace-gc-nvp` objects among a process's output lines (one JSON object per GC). */
export function gcTraceLines(lines: readonly string[]): GcLine[] {
  const out: GcLine[] = [];
  for (const line of lines) {
    const at = line.indexOf("GC: {");
    if (at < 0) continue;
    try {
      out.push(JSON.parse(line.slice(at + 4)) as GcLine);
    } catch {
      // A line cut by another writer: left out.
    }
  }
  return out;
}

/** A number field of a GC object; 0 when V8 did not print it. */
export function gcNum(g: GcLine, k: string): number {
  const v = g[k];
  return typeof v === "number" ? v : 0;
}

/**
 * One process's row of a GC bench (bench/_depot_gc.ts, bench/_tunnel_gc.ts): its CPU µs per
 * unit, median [each round], then per unit (`units`: the connections or requests of all
 * rounds) its scavenges per 1,000 and their survived and promoted bytes and pause µs.
 */
export function gcRow(
  name: string,
  side: string,
  cpu: readonly number[],
  scavenges: readonly GcLine[],
  units: number,
  cpuWidth: number,
): string {
  const per = (k: string, scale = 1) =>
    fixed(scavenges.reduce((a, g) => a + gcNum(g, k), 0) * scale / units, 1);
  return `${name.padEnd(8)} ${side.padEnd(6)} CPU ${fixed(median(cpu)).padStart(cpuWidth)} [${
    cpu.map((x) => fixed(x)).join(" ")
  }]  scavenges ${fixed(scavenges.length * 1000 / units, 2)}/1k  survived ${
    per("new_space_survived")
  } B  promoted ${per("promoted")} B  pause ${per("pause", 1000)} µs`;
}

/** A GC bench's `--each` lines: every GC of each server in the last round, promoted/survived KB. */
export function gcEachLines(
  servers: readonly { name: string; gcs: readonly GcLine[] }[],
): string[] {
  return [
    "\nevery GC of each server in the last round (s: scavenge, else a mark-compact), KB:",
    ...servers.map(({ name, gcs }) =>
      `${name}: ${
        gcs.map((g) =>
          `${g.gc} ${fixed(gcNum(g, "promoted") / 1024)}/${
            fixed(gcNum(g, "new_space_survived") / 1024)
          }`
        ).join(", ")
      }  (promoted/survived)`
    ),
  ];
}

/** Wrap a child spawned with piped stdout and stderr (e.g. in a namespace) as a {@linkcode Proc}. */
export function watch(child: Deno.ChildProcess, name: string): Proc {
  const w = new Watched(child, name);
  return {
    name,
    child,
    lines: w.lines,
    waitFor: (re, timeoutMs = readyTimeoutMs) => w.waitFor(re, timeoutMs),
    stop: (signal) => w.stop(signal),
  };
}

/**
 * Start `cmd args` with stdin closed. Throws `Deno.errors.NotFound` when `cmd` is not installed
 * (check optional peers with {@linkcode hasCommand} first).
 */
export function spawn(cmd: string, args: string[], opts: SpawnOptions = {}): Proc {
  const output = opts.output ?? "lines";
  const name = opts.name ?? cmd.slice(cmd.lastIndexOf("/") + 1);
  const child = new Deno.Command(cmd, {
    args,
    env: opts.env,
    stdin: "null",
    stdout: output === "lines" ? "piped" : "null",
    stderr: output === "lines" ? "piped" : output === "stderr" ? "inherit" : "null",
  }).spawn();
  if (output === "lines") return watch(child, name);
  return {
    name,
    child,
    lines: [],
    waitFor: (re) =>
      Promise.reject(new Error(`${name}: output not watched, cannot wait for ${re}`)),
    stop: async (signal = "SIGTERM") => {
      try {
        child.kill(signal);
      } catch {
        // already exited
      }
      await child.status;
    },
  };
}

/** `deno run -A <script> ...args` as a {@linkcode spawn}ed child. */
export function spawnDeno(script: string, args: string[] = [], opts: SpawnOptions = {}): Proc {
  const name = opts.name ?? script.slice(script.lastIndexOf("/") + 1);
  const denoFlags = opts.denoFlags ?? [];
  return spawn(Deno.execPath(), ["run", "-A", ...denoFlags, script, ...args], { ...opts, name });
}

/**
 * Stop every process: all are signalled first, in order, then awaited together, so one slow
 * exit does not hold the others (and a client never outlives its server for long).
 */
export async function stopAll(procs: Proc[], signal: Deno.Signal = "SIGTERM"): Promise<void> {
  await Promise.all(procs.map((p) => p.stop(signal)));
}

/** Whether `cmd` is an executable file on PATH (or at that path): optional outside peers. */
export function hasCommand(cmd: string): boolean {
  const dirs = cmd.includes("/") ? [""] : (Deno.env.get("PATH") ?? "").split(":");
  return dirs.some((d) => {
    try {
      const st = Deno.statSync(d ? `${d}/${cmd}` : cmd);
      return st.isFile && ((st.mode ?? 0o111) & 0o111) !== 0;
    } catch {
      return false;
    }
  });
}

/** A kernel-chosen free port on 127.0.0.1 (bound and released: fine for a benchmark). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = l.addr.port;
  l.close();
  return port;
}

/** Poll `ready` (a throw counts as not yet) until it is true; throws after `timeoutMs`. */
export async function waitUntil(
  what: string,
  ready: () => Promise<boolean>,
  timeoutMs: number = readyTimeoutMs,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await ready().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`${what} not ready in ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, pollIntervalMs));
  }
}

/** Wait until 127.0.0.1:`port` accepts a connection (a child that binds a port it was given). */
export async function waitPort(
  port: number,
  what = `port ${port}`,
  timeoutMs: number = readyTimeoutMs,
): Promise<void> {
  await waitUntil(what, async () => {
    closeQuietly(await dial("127.0.0.1", port, { timeoutMs: probeTimeoutMs }));
    return true;
  }, timeoutMs);
}

/** A running {@linkcode startHelloNginx}. */
export interface HelloNginx {
  proc: Proc;
  /** Its 127.0.0.1 port. */
  port: number;
  /** Its directory (config, pid, logs, temp paths): remove it once `proc` is stopped. */
  dir: string;
}

/**
 * nginx as the small-response origin of the tunnel benches: one process (no master), every
 * GET answered `hello world\n` on kept-alive connections without a request limit, in a temp
 * directory of its own (`prefix`), ready when this resolves.
 */
export async function startHelloNginx(prefix = "warren-bench-nginx-"): Promise<HelloNginx> {
  const dir = Deno.makeTempDirSync({ prefix });
  const port = freePort();
  Deno.writeTextFileSync(
    `${dir}/nginx.conf`,
    [
      "master_process off;",
      "daemon off;",
      `pid ${dir}/nginx.pid;`,
      `error_log ${dir}/error.log;`,
      "events { worker_connections 4096; }",
      "http {",
      "  access_log off;",
      "  keepalive_requests 1000000;",
      `  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy;`,
      `  fastcgi_temp_path ${dir}/fcgi; uwsgi_temp_path ${dir}/uwsgi;`,
      `  scgi_temp_path ${dir}/scgi;`,
      `  server { listen 127.0.0.1:${port}; location / { return 200 "hello world\\n"; } }`,
      "}",
      "",
    ].join("\n"),
  );
  const proc = spawn("nginx", ["-c", `${dir}/nginx.conf`, "-p", dir], { output: "discard" });
  await waitPort(port, `nginx (see ${dir}/error.log)`);
  return { proc, port, dir };
}

/**
 * An haproxy configuration in TCP mode (the C peer of our relays): a `listen` section a
 * listener, on 127.0.0.1:`port`, round robin over its `targets` (127.0.0.1 ports).
 */
export function haproxyTcpConfig(
  listeners: readonly { port: number; targets: readonly number[] }[],
): string {
  return [
    "global",
    "  maxconn 8192",
    "defaults",
    "  mode tcp",
    "  timeout connect 5s",
    "  timeout client 60s",
    "  timeout server 60s",
    ...listeners.flatMap(({ port, targets }, l) => [
      `listen front${l || ""}`,
      `  bind 127.0.0.1:${port}`,
      "  balance roundrobin",
      ...targets.map((t, i) => `  server s${i} 127.0.0.1:${t}`),
    ]),
    "",
  ].join("\n");
}

/**
 * haproxy in TCP mode (the C peer of our relays) on a free port, round robin over `targets`
 * (127.0.0.1 ports), its config `dir/name.cfg`; ready when this resolves.
 */
export async function startHaproxyTcp(
  dir: string,
  name: string,
  targets: readonly number[],
): Promise<{ proc: Proc; port: number }> {
  const port = freePort();
  const cfg = `${dir}/${name}.cfg`;
  Deno.writeTextFileSync(cfg, haproxyTcpConfig([{ port, targets }]));
  const proc = spawn("haproxy", ["-f", cfg, "-db"], { output: "discard", name });
  try {
    await waitPort(port, name);
  } catch (err) {
    await proc.stop();
    throw err;
  }
  return { proc, port };
}

/**
 * The C peer of the tunnel's two hops: two haproxy processes in TCP mode in series in front
 * of `target` (configs in `dir`). `port`: the first hop's; `hops`: front first.
 */
export async function startHaproxyHops(
  dir: string,
  target: number,
): Promise<{ port: number; hops: Proc[] }> {
  const back = await startHaproxyTcp(dir, "haproxy-hop1", [target]);
  try {
    const front = await startHaproxyTcp(dir, "haproxy-hop0", [back.port]);
    return { port: front.port, hops: [front.proc, back.proc] };
  } catch (err) {
    await back.proc.stop();
    throw err;
  }
}

/** The `key=value` field of a logfmt line (unquoted values), or undefined. */
export function logField(line: string, key: string): string | undefined {
  return new RegExp(`(?:^| )${key}=(\\S+)`).exec(line)?.[1];
}

/**
 * tunnel-client of the tree at `dir` (its `services/tunnel-client.ts`) for the tunnel-server
 * on 127.0.0.1:`serverPort` as identifier `id`, forwarding to 127.0.0.1:`localPort`, at info
 * level (plus `args`); pushed onto `procs` before the wait, so a failed start is stopped with
 * the rest; resolves once it logs `connected`. `env` goes beside TUNNEL_IDENTIFIER.
 */
export async function startTunnelClient(
  dir: string,
  serverPort: number,
  localPort: number,
  id: string,
  procs: Proc[],
  opts: { args?: string[]; env?: Record<string, string>; denoFlags?: string[] } = {},
): Promise<Proc> {
  const client = spawnDeno(`${dir}/services/tunnel-client.ts`, [
    "--server",
    `http://127.0.0.1:${serverPort}`,
    "--local",
    `127.0.0.1:${localPort}`,
    "--log-level",
    "info",
    ...opts.args ?? [],
  ], { env: { ...opts.env, TUNNEL_IDENTIFIER: id }, denoFlags: opts.denoFlags });
  procs.push(client);
  await client.waitFor(/msg="connected"/);
  return client;
}

/**
 * The port of a service's `msg="listening"` log line (the one named `listener`, or the first):
 * services bound to port 0 say where they listen this way.
 */
export async function listeningPort(proc: Proc, listener?: string): Promise<number> {
  const re = listener ? new RegExp(`msg="listening" name=${listener} `) : /msg="listening"/;
  const addr = logField(await proc.waitFor(re), "addr") ?? "";
  return Number(addr.slice(addr.lastIndexOf(":") + 1));
}

/**
 * A bench/_relay.ts process (a plain lib/net relay, one user-space hop) in front of
 * 127.0.0.1:`targetPort`: the reference row for what relaying alone costs on this machine
 * (`script`: another tree's, for a same-run before/after).
 */
export async function startRelay(
  targetPort: number,
  script: string = benchPath("_relay.ts"),
): Promise<{ proc: Proc; port: number }> {
  const proc = spawnDeno(script, [], {
    env: { BENCH_TARGET: `127.0.0.1:${targetPort}` },
  });
  const { port } = JSON.parse(await proc.waitFor(/^\{"port"/)) as { port: number };
  return { proc, port };
}

/**
 * A bench/floor_proxy.ts process (the least a Deno proxy can do per connection) as a SOCKS5
 * proxy, or with `targetPort` as a static relay to 127.0.0.1:`targetPort`; `extras` adds
 * TCP_NODELAY and a dial signal (what any real proxy pays).
 */
export async function startFloor(
  targetPort?: number,
  extras = false,
  script: string = benchPath("floor_proxy.ts"),
  denoFlags: string[] = [],
): Promise<{ proc: Proc; port: number }> {
  const env: Record<string, string> = targetPort === undefined
    ? { BENCH_MODE: "socks5" }
    : { BENCH_MODE: "static", BENCH_TARGET: `127.0.0.1:${targetPort}` };
  if (extras) env.BENCH_FLOOR_EXTRAS = "1";
  const proc = spawnDeno(script, [], { env, denoFlags });
  const { port } = JSON.parse(await proc.waitFor(/^\{"port"/)) as { port: number };
  return { proc, port };
}

/**
 * A bench/_source.ts process (the length source, {@linkcode serveLengthSource}, in its own
 * process) on 127.0.0.1:`port` (0: a free one), once it listens: the far end every TCP, SOCKS5
 * and CONNECT path of the benches reaches.
 */
export async function startLengthSource(port = 0): Promise<{ proc: Proc; port: number }> {
  const proc = spawnDeno(benchPath("_source.ts"), [], {
    env: { BENCH_PORT: String(port) },
    name: "source",
  });
  try {
    const listening = JSON.parse(await proc.waitFor(/^\{"port"/)) as { port: number };
    return { proc, port: listening.port };
  } catch (e) {
    await proc.stop();
    throw e;
  }
}

/** The four listener ports of a benchmarked depot-server. */
export interface DepotPorts {
  control: number;
  socks: number;
  tunnel: number;
  status: number;
}

/**
 * depot-server's arguments in a bench: warn-level logs (nothing per connection) and its
 * control, SOCKS, tunnel and status listeners on 127.0.0.1 at `p`'s ports.
 */
export function depotServerArgs(p: DepotPorts): string[] {
  return [
    ...["--log-level", "warn"],
    ...["--control", `127.0.0.1:${p.control}`, "--socks", `127.0.0.1:${p.socks}`],
    ...["--tunnel", `127.0.0.1:${p.tunnel}`, "--status", `127.0.0.1:${p.status}`],
  ];
}

// ---------------------------------------------------------------- OpenSSH ssh -R

/** A throwaway sshd and its `ssh -N -R` client: the known peer for reverse tunnels. */
export interface SshReverse {
  /** sshd and ssh (their output discarded: sshd forks children that hold pipes). */
  procs: Proc[];
  /** Keys and config; {@linkcode SshReverse.close} removes it. */
  dir: string;
  /** Stop both and remove `dir`. */
  close(): Promise<void>;
}

/**
 * Start a throwaway sshd on loopback and `ssh -N -R forward` against it, then wait until
 * `listenPort` (the port the forward opens) accepts. `forward` is OpenSSH's `-R` argument:
 * `127.0.0.1:PORT` for a reverse dynamic SOCKS proxy, `127.0.0.1:PORT:HOST:HOSTPORT` for a
 * reverse TCP forward (what a tunnel client does). `via` may put something (a delay proxy)
 * between ssh and sshd: it gets sshd's port and returns the one ssh dials.
 */
export async function startSshReverse(
  forward: string,
  listenPort: number,
  via?: (sshdPort: number) => Promise<number>,
): Promise<SshReverse> {
  const dir = Deno.makeTempDirSync({ prefix: "warren-bench-ssh-" });
  const procs: Proc[] = [];
  const close = async () => {
    await stopAll(procs);
    Deno.removeSync(dir, { recursive: true });
  };
  try {
    const keygen = (name: string) =>
      sh("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", `${dir}/${name}`]);
    await keygen("host_key");
    await keygen("user_key");
    Deno.copyFileSync(`${dir}/user_key.pub`, `${dir}/authorized_keys`);
    const sshdPort = freePort();
    Deno.writeTextFileSync(
      `${dir}/sshd_config`,
      [
        `Port ${sshdPort}`,
        "ListenAddress 127.0.0.1",
        `HostKey ${dir}/host_key`,
        `AuthorizedKeysFile ${dir}/authorized_keys`,
        `PidFile ${dir}/sshd.pid`,
        "UsePAM no",
        "StrictModes no",
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "AllowTcpForwarding yes",
        "",
      ].join("\n"),
    );
    Deno.mkdirSync("/run/sshd", { recursive: true }); // sshd's privilege-separation directory
    procs.push(
      spawn("/usr/sbin/sshd", ["-D", "-e", "-f", `${dir}/sshd_config`], { output: "discard" }),
    );
    await waitPort(sshdPort, "sshd");
    const sshPort = via ? await via(sshdPort) : sshdPort;
    procs.push(spawn("ssh", [
      "-N",
      "-i",
      `${dir}/user_key`,
      "-o",
      "StrictHostKeyChecking=no",
      "-o",
      "UserKnownHostsFile=/dev/null",
      "-o",
      "BatchMode=yes",
      "-o",
      "ExitOnForwardFailure=yes",
      "-p",
      String(sshPort),
      "-R",
      forward,
      `${Deno.env.get("USER") ?? "root"}@127.0.0.1`,
    ], { output: "discard" }));
    await waitPort(listenPort, "ssh -R");
  } catch (err) {
    await close();
    throw err;
  }
  return { procs, dir, close };
}

// ---------------------------------------------------------------- /proc

/** Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ: 100 on Linux). */
export const procTicksPerSecond = 100;

/** The fields of a `/proc/.../stat` line the benches read; times in clock ticks. */
export interface ProcStat {
  /** The command (thread) name: may hold spaces and parentheses. */
  comm: string;
  /** One letter: R, S, D, Z (a zombie, exited and not yet waited for), ... */
  state: string;
  ppid: number;
  utime: number;
  stime: number;
  /** User ticks of the children already waited for. */
  cutime: number;
  /** System ticks of the children already waited for. */
  cstime: number;
}

/**
 * `/proc/<pid>/stat`, or a thread's (`/proc/<pid>/task/<tid>/stat`), parsed in one place: the
 * command name may hold spaces and ")", so the fields are counted from its last ")". `pid` may
 * be "self". Throws (NotFound) once the process or thread is gone.
 */
export function procStat(pid: number | "self", tid?: number | string): ProcStat {
  const stat = Deno.readTextFileSync(
    tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`,
  );
  const end = stat.lastIndexOf(")");
  // After the name: state is field 3, ppid 4, utime 14, stime 15, cutime 16, cstime 17.
  const f = stat.slice(end + 2).split(" ");
  return {
    comm: stat.slice(stat.indexOf("(") + 1, end),
    state: f[0],
    ppid: Number(f[1]),
    utime: Number(f[11]),
    stime: Number(f[12]),
    cutime: Number(f[13]),
    cstime: Number(f[14]),
  };
}

/** utime, stime, cutime, cstime of `/proc/<pid>/stat`, in ticks, and the pid's live children. */
function procTicks(pid: number): { ticks: number; children: number[] } {
  try {
    const s = procStat(pid);
    const ticks = s.utime + s.stime + s.cutime + s.cstime;
    const children: number[] = [];
    for (const t of Deno.readDirSync(`/proc/${pid}/task`)) {
      const list = Deno.readTextFileSync(`/proc/${pid}/task/${t.name}/children`).trim();
      if (list) children.push(...list.split(" ").map(Number));
    }
    return { ticks, children };
  } catch {
    // Exited (or exiting): nothing more to count; its parent's cutime has it once reaped.
    return { ticks: 0, children: [] };
  }
}

/**
 * CPU seconds (user + system) the processes have used so far, each with its whole tree (live
 * descendants and the children it has reaped): read before and after a run to see what a path
 * costs, not only how fast it went. The tree matters for peers that fork per connection or
 * session (socat, sshd). A process that is gone counts 0.
 */
export function procCpuSeconds(procs: readonly Proc[]): number {
  let ticks = 0;
  const todo = procs.map((p) => p.child.pid);
  for (let pid = todo.pop(); pid !== undefined; pid = todo.pop()) {
    const t = procTicks(pid);
    ticks += t.ticks;
    todo.push(...t.children);
  }
  return ticks / procTicksPerSecond;
}

/**
 * Run `run` (which makes `count` connections) and return its result with the CPU microseconds
 * per connection each of `procs` spent meanwhile (same order): the steadier figure on a shared
 * machine, where rates move with whatever else runs.
 */
export async function cpuPerConn<T>(
  procs: readonly Proc[],
  count: number,
  run: () => Promise<T>,
): Promise<{ result: T; usPerConn: number[] }> {
  const before = procs.map((p) => procCpuSeconds([p]));
  const result = await run();
  const usPerConn = procs.map((p, i) => (procCpuSeconds([p]) - before[i]) * 1e6 / count);
  return { result, usPerConn };
}

// ---------------------------------------------------------------- the whole box (`--box`)

/**
 * One reading of the whole box for a bench's `--box` view: /proc/stat's CPU line (busy and
 * idle ticks over all cores, softirq apart), its context switch count, this process's own CPU
 * and its reaped children's (cutime + cstime: wrk's once `wrk()` has waited for it), and per
 * hop (a process of the path, with its live descendants: sshd forks per session) its threads'
 * context switches, run-queue wait and main-thread sleeps.
 */
export interface BoxSample {
  busy: number;
  idle: number;
  softirq: number;
  ctxt: number;
  /** This process's own ticks (utime + stime): a bench whose client runs in-process. */
  self: number;
  children: number;
  /** Context switches (voluntary, involuntary) of each hop's threads. */
  hopSwitches: [number, number][];
  /** Run-queue wait of each hop's threads (ns: runnable, not running; /proc schedstat). */
  hopWaitNs: number[];
  /**
   * Voluntary switches of each hop's main threads (the thread whose tid is its pid): each is
   * one sleep of an event loop (epoll_wait, or poll for OpenSSH) that something woke, so the
   * wake-ups; worker threads (V8's GC and compiler helpers) are left out.
   */
  hopWakes: number[];
  /** Kernel-mode ticks (stime + cstime) of each hop's tree: its syscalls and their softirq. */
  hopSys: number[];
  /** Ticks of every process on the box outside this bench's tree (kernel threads too). */
  others: number;
}

/** The pid and its live descendants (a hop that forks per session counts with its children). */
export function procTree(pid: number): number[] {
  const all: number[] = [];
  for (let p: number | undefined = pid, todo: number[] = []; p !== undefined; p = todo.pop()) {
    all.push(p);
    todo.push(...procTicks(p).children);
  }
  return all;
}

/** Sum of `f` over the threads of `pid` and of its live descendants (0 once gone). */
function overThreads(pid: number, f: (task: string) => number): number {
  let sum = 0;
  for (const p of procTree(pid)) {
    try {
      for (const t of Deno.readDirSync(`/proc/${p}/task`)) sum += f(`/proc/${p}/task/${t.name}`);
    } catch {
      // A thread ended between the listing and its read: counted up to there.
    }
  }
  return sum;
}

/**
 * Ticks (utime + stime + cutime + cstime) of every process on the box that is not this one or
 * a descendant of it: what else ran. A process that exits and is reaped between two samples
 * moves into its parent's cutime, so the difference still holds it.
 */
function otherTicks(): number {
  const self = Deno.pid;
  const parent = new Map<number, number>();
  const ticks = new Map<number, number>();
  for (const e of Deno.readDirSync("/proc")) {
    const pid = Number(e.name);
    if (!Number.isInteger(pid)) continue;
    try {
      const s = procStat(pid);
      parent.set(pid, s.ppid);
      ticks.set(pid, s.utime + s.stime + s.cutime + s.cstime);
    } catch {
      // Gone meanwhile.
    }
  }
  let sum = 0;
  for (const [pid, t] of ticks) {
    let p = pid;
    while (p > 1 && p !== self) p = parent.get(p) ?? 0;
    if (p !== self) sum += t;
  }
  return sum;
}

/** Voluntary and involuntary context switches of one task (`/proc/<pid>/task/<tid>`). */
function taskSwitches(task: string): [number, number] {
  const status = Deno.readTextFileSync(`${task}/status`);
  return [
    Number(/\nvoluntary_ctxt_switches:\s+(\d+)/.exec(status)?.[1] ?? 0),
    Number(/nonvoluntary_ctxt_switches:\s+(\d+)/.exec(status)?.[1] ?? 0),
  ];
}

/** Voluntary and involuntary context switches summed over the threads of `pid`'s tree. */
function threadSwitches(pid: number): [number, number] {
  let vol = 0;
  const invol = overThreads(pid, (task) => {
    const [v, i] = taskSwitches(task);
    vol += v;
    return i;
  });
  return [vol, invol];
}

/** Voluntary switches of the main thread of every process in `pid`'s tree. */
function mainThreadSleeps(pid: number): number {
  let sum = 0;
  for (const p of procTree(pid)) {
    try {
      sum += taskSwitches(`/proc/${p}/task/${p}`)[0];
    } catch {
      // Gone meanwhile.
    }
  }
  return sum;
}

/** Kernel-mode ticks (stime + cstime) of `pid`'s tree. */
function sysTicks(pid: number): number {
  let sum = 0;
  for (const p of procTree(pid)) {
    try {
      const s = procStat(p);
      sum += s.stime + s.cstime;
    } catch {
      // Gone meanwhile.
    }
  }
  return sum;
}

/**
 * On-CPU ns so far of the threads of `pid`'s tree: schedstat's first field (exact to the ns,
 * where `/proc/.../stat` counts 10 ms ticks).
 */
export function threadRunNs(pid: number): number {
  return overThreads(
    pid,
    (task) => Number(Deno.readTextFileSync(`${task}/schedstat`).split(" ")[0]),
  );
}

/**
 * On-CPU ns so far of the threads of `pid`'s tree whose name (`comm`) matches `name`: e.g.
 * V8's helper threads (`/^V8 /`: GC and compiler jobs) apart from the main thread's work.
 */
export function namedThreadRunNs(pid: number, name: RegExp): number {
  return overThreads(pid, (task) => {
    if (!name.test(Deno.readTextFileSync(`${task}/comm`).trim())) return 0;
    return Number(Deno.readTextFileSync(`${task}/schedstat`).split(" ")[0]);
  });
}

/** Run-queue wait (ns) summed over the threads of `pid`'s tree: schedstat's second field. */
function threadWaitNs(pid: number): number {
  return overThreads(
    pid,
    (task) => Number(Deno.readTextFileSync(`${task}/schedstat`).split(" ")[1]),
  );
}

/** The box now (see {@linkcode BoxSample}); `hops` are the path's processes. */
export function boxSample(hops: readonly Proc[]): BoxSample {
  const stat = Deno.readTextFileSync("/proc/stat");
  // cpu user nice system idle iowait irq softirq steal ...
  const cpu = stat.slice(0, stat.indexOf("\n")).split(/\s+/).slice(1).map(Number);
  const own = procStat("self");
  return {
    busy: cpu[0] + cpu[1] + cpu[2] + cpu[5] + cpu[6] + cpu[7],
    idle: cpu[3] + cpu[4],
    softirq: cpu[6],
    ctxt: Number(/^ctxt (\d+)/m.exec(stat)?.[1] ?? 0),
    self: own.utime + own.stime,
    children: own.cutime + own.cstime,
    hopSwitches: hops.map((h) => threadSwitches(h.child.pid)),
    hopWaitNs: hops.map((h) => threadWaitNs(h.child.pid)),
    hopWakes: hops.map((h) => mainThreadSleeps(h.child.pid)),
    hopSys: hops.map((h) => sysTicks(h.child.pid)),
    others: otherTicks(),
  };
}

/** Two {@linkcode BoxSample}s' difference per unit of work (a request or a connection). */
export interface BoxRun {
  /** Idle share of all cores over the run (0..1). */
  idle: number;
  /** CPU µs per unit: the whole box, this process, its reaped children, softirq (inside). */
  boxUs: number;
  selfUs: number;
  childrenUs: number;
  softirqUs: number;
  /** Context switches per unit: the whole box, and each hop's (voluntary + involuntary). */
  ctxt: number;
  hopCtxt: number[];
  /** Involuntary share of the hops' switches (preempted, not waiting). */
  hopInvol: number;
  /** The hops' run-queue wait per unit (µs): runnable but not on a core. */
  hopWaitUs: number;
  /** Each hop's event-loop wake-ups per unit (its main threads' voluntary switches). */
  hopWakes: number[];
  /** The hops' kernel-mode CPU µs per unit, together. */
  hopSysUs: number;
  /** CPU µs per unit of everything outside this bench's tree. */
  othersUs: number;
}

/** What happened on the box between `a` and `b`, per each of `units` requests or connections. */
export function boxRun(a: BoxSample, b: BoxSample, units: number): BoxRun {
  const us = (ticks: number) => ticks / procTicksPerSecond * 1e6 / units;
  const total = b.busy - a.busy + b.idle - a.idle;
  const sw = b.hopSwitches.map(([v, i], k) => [v - a.hopSwitches[k][0], i - a.hopSwitches[k][1]]);
  const all = sw.reduce((n, [v, i]) => n + v + i, 0);
  return {
    idle: total > 0 ? (b.idle - a.idle) / total : NaN,
    boxUs: us(b.busy - a.busy),
    selfUs: us(b.self - a.self),
    childrenUs: us(b.children - a.children),
    softirqUs: us(b.softirq - a.softirq),
    ctxt: (b.ctxt - a.ctxt) / units,
    hopCtxt: sw.map(([v, i]) => (v + i) / units),
    hopInvol: all > 0 ? sw.reduce((n, [, i]) => n + i, 0) / all : NaN,
    hopWaitUs: b.hopWaitNs.reduce((n, w, k) => n + w - a.hopWaitNs[k], 0) / 1e3 / units,
    hopWakes: b.hopWakes.map((w, k) => (w - a.hopWakes[k]) / units),
    hopSysUs: us(b.hopSys.reduce((n, t, k) => n + t - a.hopSys[k], 0)),
    othersUs: us(b.others - a.others),
  };
}

/** How long a process preloading bench/_promise_count.ts may take to answer SIGUSR2. */
const promiseCountWaitMs = 2_000;

/**
 * The promises `pid` created so far: bench/_promise_count.ts, preloaded into it, writes its
 * count to `/tmp/promise_count.<pid>` on SIGUSR2 (handled on the process's next turn). A count of
 * work per request or connection that a loaded box does not blur.
 */
export async function promiseCount(pid: number): Promise<number> {
  const file = `/tmp/promise_count.${pid}`;
  await Deno.remove(file).catch(() => {});
  Deno.kill(pid, "SIGUSR2");
  const deadline = Date.now() + promiseCountWaitMs;
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 10));
    try {
      const text = await Deno.readTextFile(file);
      if (text !== "") return Number(text);
    } catch {
      // Not written yet.
    }
  }
  throw new Error(`no promise count from ${pid} in ${promiseCountWaitMs} ms`);
}

// ---------------------------------------------------------------- measuring

/** Throughput in MB/s (decimal) of `bytes` moved in `ms` milliseconds. */
export function mbPerSec(bytes: number, ms: number): number {
  return bytes / bytesPerMB / (ms / 1000);
}

/**
 * The highest of `runs` results of `measure`: the machine is shared, and the best run is the
 * least disturbed one.
 */
export async function bestOf(runs: number, measure: () => Promise<number>): Promise<number> {
  let top = 0;
  for (let i = 0; i < runs; i++) top = Math.max(top, await measure());
  return top;
}

/**
 * A fake connection for in-process benches: its reads hand out `chunks`, one per read, then
 * EOF; its writes are taken whole and dropped. No sockets, no waking: what a protocol's own
 * code costs per connection.
 */
export class ScriptedConn implements Duplex {
  #next = 0;
  constructor(readonly chunks: readonly Uint8Array[]) {}
  read(p: Uint8Array): Promise<number | null> {
    const c = this.chunks[this.#next++];
    if (!c) return Promise.resolve(null);
    p.set(c);
    return Promise.resolve(c.length);
  }
  write(p: Uint8Array): Promise<number> {
    return Promise.resolve(p.length);
  }
  closeWrite(): Promise<void> {
    return Promise.resolve();
  }
  close(): void {}
}

/** Read `r` to EOF into `buf` (overwritten), returning the byte count. */
export async function readToEnd(r: Pick<Duplex, "read">, buf: Uint8Array): Promise<number> {
  let total = 0;
  while (true) {
    const n = await r.read(buf);
    if (n === null) return total;
    total += n;
  }
}

/** Write exactly `bytes` bytes to `w`, `block` (its content) at a time. */
export async function sendBytes(
  w: Pick<Duplex, "write">,
  bytes: number,
  block: Uint8Array,
): Promise<void> {
  for (let left = bytes; left > 0; left -= block.length) {
    await writeAll(w, left >= block.length ? block : block.subarray(0, left));
  }
}

// ---------------------------------------------------------------- the length source

/**
 * Read and write size of the bulk paths (source and client): large, so per-call overhead in
 * Deno does not cap what a relay under test can show.
 */
export const bulkChunkBytes = 4 * MiB;
/** Answer size of one small exchange (set-up cost, not bandwidth). */
export const smallAnswerBytes = 1024;
/** Read buffer of a small exchange. */
const smallBufferBytes = 4096;
/** Set in a request word: the client uploads that many bytes instead of downloading them. */
export const uploadBit: bigint = 1n << 63n;
/** Size of the request word and of the upload's answer. */
const wordBytes = 8;

/** The 8-byte big-endian request word asking the length source for (or sending) `n` bytes. */
export function lengthHeader(n: number, upload = false): Uint8Array {
  const head = new Uint8Array(wordBytes);
  new DataView(head.buffer).setBigUint64(0, BigInt(n) | (upload ? uploadBit : 0n));
  return head;
}

/** Read one 8-byte big-endian word (a request or an upload's answer); null on an early EOF. */
async function readWord(r: Pick<Duplex, "read">): Promise<bigint | null> {
  const word = new Uint8Array(wordBytes);
  for (let got = 0; got < wordBytes;) {
    const n = await r.read(word.subarray(got));
    if (n === null) return null;
    got += n;
  }
  return new DataView(word.buffer).getBigUint64(0);
}

/**
 * Serve the length source on `listener`, forever: per connection, read the 8-byte big-endian
 * word n; if its top bit is clear send n zero bytes and FIN, if set read n bytes, answer the
 * 8-byte count and FIN; then wait for the client's FIN. Run in its own process, so the client's
 * event loop measures only the path under test.
 */
export async function serveLengthSource(listener: Deno.Listener): Promise<void> {
  const zeros = new Uint8Array(bulkChunkBytes);
  for await (const c of listener) {
    (async () => {
      try {
        const word = await readWord(c);
        if (word === null) return;
        if (word & uploadBit) {
          let left = Number(word & ~uploadBit);
          const buf = new Uint8Array(bulkChunkBytes);
          let total = 0;
          while (left > 0) {
            const n = await c.read(buf);
            if (n === null) break;
            left -= n;
            total += n;
          }
          const answer = new Uint8Array(wordBytes);
          new DataView(answer.buffer).setBigUint64(0, BigInt(total));
          await writeAll(c, answer);
        } else {
          await sendBytes(c, Number(word), zeros);
        }
        await c.closeWrite();
        const sink = new Uint8Array(64);
        while ((await c.read(sink)) !== null) { /* wait for the client's FIN */ }
      } catch {
        // A client that vanished mid-answer (some phases cut them on purpose): nothing to do.
      } finally {
        closeQuietly(c);
      }
    })();
  }
}

/** A way to the length source: one named path of a bench's table. */
export interface Route {
  name: string;
  /** A connection whose bytes reach the source. */
  open(): Promise<Duplex>;
}

/** A plain TCP path to 127.0.0.1:`port` (the source itself, or a relay in front of it). */
export function tcpRoute(name: string, port: number): Route {
  return { name, open: () => dial("127.0.0.1", port) };
}

/** Through the SOCKS5 proxy on 127.0.0.1:`port` to 127.0.0.1:`dest`. */
export function socksRoute(name: string, port: number, dest: number): Route {
  return {
    name,
    open: async () => {
      const c = await dial("127.0.0.1", port);
      try {
        const { leftover } = await socks5Connect(c, { host: "127.0.0.1", port: dest });
        return withPrefix(c, leftover);
      } catch (err) {
        closeQuietly(c);
        throw err;
      }
    },
  };
}

/** Read an HTTP response head byte by byte (nothing past it); returns its status code. */
async function readHeadStatus(c: Duplex): Promise<number> {
  let head = "";
  const one = new Uint8Array(1);
  while (!head.endsWith("\r\n\r\n")) {
    if ((await c.read(one)) === null) throw new Error(`EOF in CONNECT answer: ${head}`);
    head += String.fromCharCode(one[0]);
  }
  return Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
}

/** Through the HTTP proxy on 127.0.0.1:`port` to 127.0.0.1:`dest` (a CONNECT tunnel). */
export function connectRoute(name: string, port: number, dest: number): Route {
  const request = new TextEncoder().encode(
    `CONNECT 127.0.0.1:${dest} HTTP/1.1\r\nHost: 127.0.0.1:${dest}\r\n\r\n`,
  );
  return {
    name,
    open: async () => {
      const c = await dial("127.0.0.1", port);
      try {
        await writeAll(c, request);
        const status = await readHeadStatus(c);
        if (status !== 200) throw new Error(`CONNECT answered ${status}`);
        return c;
      } catch (err) {
        closeQuietly(c);
        throw err;
      }
    },
  };
}

/** One connection downloads `bytes` from the source; MB/s including the set-up. */
export async function downloadMBps(route: Route, bytes: number): Promise<number> {
  const buf = new Uint8Array(bulkChunkBytes);
  const t0 = performance.now();
  const c = await route.open();
  try {
    await writeAll(c, lengthHeader(bytes));
    const got = await readToEnd(c, buf);
    if (got !== bytes) throw new Error(`${route.name}: got ${got} of ${bytes} bytes`);
  } finally {
    closeQuietly(c);
  }
  return mbPerSec(bytes, performance.now() - t0);
}

/** One connection uploads `bytes` to the source; MB/s until the source confirmed the count. */
export async function uploadMBps(route: Route, bytes: number): Promise<number> {
  const block = new Uint8Array(bulkChunkBytes);
  const t0 = performance.now();
  const c = await route.open();
  try {
    await writeAll(c, lengthHeader(bytes, true));
    await sendBytes(c, bytes, block);
    // Read the 8-byte answer before our FIN: some proxies (microsocks) do not keep half-close.
    const word = await readWord(c);
    const got = word === null ? -1 : Number(word);
    if (got !== bytes) throw new Error(`${route.name}: target got ${got} of ${bytes}`);
  } finally {
    closeQuietly(c);
  }
  return mbPerSec(bytes, performance.now() - t0);
}

/** One small exchange: connect, 8-byte request, `smallAnswerBytes` answer, close. */
export async function smallExchange(route: Route, buf: Uint8Array): Promise<void> {
  const c = await route.open();
  try {
    await writeAll(c, lengthHeader(smallAnswerBytes));
    const got = await readToEnd(c, buf);
    if (got !== smallAnswerBytes) throw new Error(`${route.name}: short answer ${got}`);
  } finally {
    closeQuietly(c);
  }
}

/** Mean milliseconds of one of `count` sequential small exchanges (connection set-up cost). */
export async function sequentialMs(route: Route, count: number): Promise<number> {
  const buf = new Uint8Array(smallBufferBytes);
  const t0 = performance.now();
  for (let i = 0; i < count; i++) await smallExchange(route, buf);
  return (performance.now() - t0) / count;
}

/**
 * Small exchanges per second: `count` of them run by `workers` concurrent loops; with
 * `latenciesMs`, each exchange's time (connect to EOF) is pushed there too.
 */
export async function concurrentRps(
  route: Route,
  count: number,
  workers: number,
  latenciesMs?: number[],
): Promise<number> {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: workers }, async () => {
      const buf = new Uint8Array(smallBufferBytes);
      while (next++ < count) {
        if (!latenciesMs) {
          await smallExchange(route, buf);
          continue;
        }
        const start = performance.now();
        await smallExchange(route, buf);
        latenciesMs.push(performance.now() - start);
      }
    }),
  );
  return count / ((performance.now() - t0) / 1000);
}

/**
 * `items` with their indexes in the order round `round` (1-based) measures them: forward in
 * odd rounds, backward in even ones, so a path compared with its neighbour (an old tree's
 * row beside the new one) does not always run second, right after the same other path.
 */
export function roundOrder<T>(items: readonly T[], round: number): [number, T][] {
  const order = [...items.entries()];
  return round % 2 === 1 ? order : order.reverse();
}

/** A buffer sized for {@linkcode smallExchange} (e.g. for one warm-up exchange). */
export function smallBuffer(): Uint8Array {
  return new Uint8Array(smallBufferBytes);
}

// ---------------------------------------------------------------- outside tools

/** What one curl transfer reported (`-w`). */
export interface CurlResult {
  /** curl's exit code (0: the transfer completed). */
  exit: number;
  /** HTTP status of the last response (0 if none). */
  status: number;
  /** Body bytes received. */
  sizeDownload: number;
  /** Mean download speed, MB/s. */
  downloadMBps: number;
  /** Mean upload speed, MB/s. */
  uploadMBps: number;
  stderr: string;
}

/** Options of {@linkcode curl}. */
export interface CurlOptions {
  /** Feed this many zero bytes on curl's stdin (a pipe, as in `head -c N /dev/zero | curl`). */
  stdinZeros?: number;
  /** Throw unless curl exited 0 with this HTTP status. */
  expectStatus?: number;
  /** Throw unless curl exited 0 having received this many body bytes. */
  expectBytes?: number;
  /** Names the transfer in the error. @default the last argument */
  what?: string;
}

/**
 * One curl transfer (`curl -sS -o /dev/null` plus `args`), measured by curl itself. Without
 * expectations it never throws: the caller's table shows what curl saw.
 */
export async function curl(args: string[], opts: CurlOptions = {}): Promise<CurlResult> {
  const format = "%{http_code} %{size_download} %{speed_download} %{speed_upload}";
  const curlArgs = ["-sS", "-o", "/dev/null", "-w", format, ...args];
  // With stdin, a shell pipes `head` into curl: the body streams from a pipe (chunked upload),
  // not from this process; "$@" passes the arguments without quoting them.
  const out = opts.stdinZeros === undefined
    ? await new Deno.Command("curl", { args: curlArgs, stdout: "piped", stderr: "piped" }).output()
    : await new Deno.Command("sh", {
      args: ["-c", `head -c ${opts.stdinZeros} /dev/zero | curl "$@"`, "sh", ...curlArgs],
      stdout: "piped",
      stderr: "piped",
    }).output();
  const dec = new TextDecoder();
  const [status, size, down, up] = dec.decode(out.stdout).trim().split(" ").map(Number);
  const r: CurlResult = {
    exit: out.code,
    status: status || 0,
    sizeDownload: size || 0,
    downloadMBps: (down || 0) / bytesPerMB,
    uploadMBps: (up || 0) / bytesPerMB,
    stderr: dec.decode(out.stderr).trim(),
  };
  const checked = opts.expectStatus !== undefined || opts.expectBytes !== undefined;
  const bad = r.exit !== 0 ||
    (opts.expectStatus !== undefined && r.status !== opts.expectStatus) ||
    (opts.expectBytes !== undefined && r.sizeDownload !== opts.expectBytes);
  if (checked && bad) {
    const of = opts.expectBytes === undefined ? "" : ` of ${opts.expectBytes}`;
    const why = r.stderr ? `: ${r.stderr}` : "";
    const what = opts.what ?? args.at(-1);
    throw new Error(
      `curl ${what}: exit ${r.exit}, HTTP ${r.status}, ${r.sizeDownload} B${of}${why}`,
    );
  }
  return r;
}

/**
 * The bulk rows' upload: curl POSTs `bytes` zeros to `url` (`/discard` of the origin) as a
 * chunked body streamed from a pipe (`head -c N /dev/zero | curl -T -`), no `Expect:`
 * round trip, with `Host: host` where given.
 */
export function curlUpload(url: string, bytes: number, host?: string): Promise<CurlResult> {
  return curl([
    ...(host ? ["-H", `Host: ${host}`] : []),
    "-H",
    "Content-Type: application/octet-stream",
    "-H",
    "Expect:",
    "-X",
    "POST",
    "-T",
    "-",
    url,
  ], { stdinZeros: bytes });
}

/** What one wrk run reported. */
export interface WrkResult {
  rps: number;
  /** Requests completed in the run. */
  requests: number;
  /** Latency percentiles in ms (NaN if wrk printed none). */
  p50Ms: number;
  p99Ms: number;
  /** The other percentiles wrk prints, and the mean and standard deviation (ms). */
  p75Ms?: number;
  p90Ms?: number;
  meanMs?: number;
  stdevMs?: number;
  /** Responses that were not 2xx or 3xx. */
  non2xx: number;
  /** Socket errors (connect, read, write, timeout) wrk counted (0 where not read). */
  errors?: number;
}

/** Options of {@linkcode wrk}. */
export interface WrkOptions {
  seconds: number;
  /** @default 2 */
  threads?: number;
  /** Keep-alive connections. @default 50 */
  connections?: number;
  /** Host header (a vhost behind the same address). */
  host?: string;
  /** More request header lines (`Name: value`), e.g. `Connection: close`. */
  headers?: string[];
}

/** `wrk --latency` against `url`: requests per second and latency percentiles. */
export async function wrk(url: string, opts: WrkOptions): Promise<WrkResult> {
  const args = [
    `-t${opts.threads ?? 2}`,
    `-c${opts.connections ?? 50}`,
    `-d${opts.seconds}s`,
    "--latency",
    url,
  ];
  if (opts.host) args.unshift("-H", `Host: ${opts.host}`);
  for (const h of opts.headers ?? []) args.unshift("-H", h);
  const out = await new Deno.Command("wrk", { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout);
  const ms = (label: string): number => {
    const m = new RegExp(`\\s${label}\\s+([\\d.]+)(us|ms|s)\\b`).exec(text);
    if (!m) return NaN;
    const v = Number(m[1]);
    return m[2] === "us" ? v / 1000 : m[2] === "s" ? v * 1000 : v;
  };
  return {
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(text)?.[1] ?? 0),
    requests: Number(/(\d+) requests in /.exec(text)?.[1] ?? 0),
    p50Ms: ms("50%"),
    p99Ms: ms("99%"),
    p75Ms: ms("75%"),
    p90Ms: ms("90%"),
    meanMs: ms("Latency"),
    stdevMs: stdevMs(text),
    non2xx: Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(text)?.[1] ?? 0),
    errors:
      (/Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text) ?? [])
        .slice(1).reduce((n, x) => n + Number(x), 0),
  };
}

/**
 * `wrk -t2 -c50` on GET /hello with `Host: v.test` through `port` for `seconds` (every request
 * `Connection: close` with `close`): the requests it made. The tunnel A/B and profile benches'
 * load on a tunnel to {@linkcode startHelloNginx}.
 */
export async function wrkHello(port: number, seconds: number, close = false): Promise<number> {
  const headers = close ? ["Connection: close"] : [];
  return (await wrk(`http://127.0.0.1:${port}/hello`, { seconds, host: "v.test", headers }))
    .requests;
}

/** wrk's latency standard deviation in ms (the second figure of its `Latency` line). */
function stdevMs(text: string): number {
  const m = /\sLatency\s+[\d.]+(?:us|ms|s)\s+([\d.]+)(us|ms|s)\b/.exec(text);
  if (!m) return NaN;
  const v = Number(m[1]);
  return m[2] === "us" ? v / 1000 : m[2] === "s" ? v * 1000 : v;
}

/**
 * `hey -n requests -c concurrency ...args`: requests per second; throws unless every request
 * answered 200 (a proxy that drops some must not look fast). hey gives each worker
 * `requests / concurrency` requests, rounded down, so that many times `concurrency` are sent.
 */
export async function hey(
  requests: number,
  concurrency: number,
  args: string[],
): Promise<number> {
  const text = await sh("hey", ["-n", String(requests), "-c", String(concurrency), ...args]);
  const m = /Requests\/sec:\s+([\d.]+)/.exec(text);
  const ok = Number(/\[200\]\s+(\d+) responses/.exec(text)?.[1] ?? 0);
  const sent = Math.floor(requests / concurrency) * concurrency;
  if (!m || ok !== sent) throw new Error(`hey ${args.join(" ")}: unexpected output\n${text}`);
  return Number(m[1]);
}

// ---------------------------------------------------------------- tables

/** The median of `values` (NaN when empty): the per-round figure the tables print for CPU. */
export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const v = [...values].sort((a, b) => a - b);
  const mid = v.length >> 1;
  return v.length % 2 === 1 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

/** `v` with `digits` decimals, or "-" when it is not a number (a failed or skipped row). */
export function fixed(v: number, digits = 0): string {
  return Number.isFinite(v) ? v.toFixed(digits) : "-";
}

/** `v / base` with `digits` decimals, or "-" when either is missing or the base is 0. */
export function ratio(v: number, base: number, digits = 2): string {
  return Number.isFinite(v) && Number.isFinite(base) && base > 0 ? (v / base).toFixed(digits) : "-";
}

/** Column alignment of {@linkcode formatTable}. */
export type Align = "left" | "right";

/** Options of {@linkcode formatTable}. */
export interface TableOptions {
  /**
   * `markdown`: `| a | b |` rows under a `| --- | ---: |` rule (pastes into a README);
   * `plain`: columns two spaces apart under a dashed rule. @default "markdown"
   */
  style?: "markdown" | "plain";
  /** Per column. @default the first column left, the others right (numbers) */
  align?: Align[];
}

/** A table with every column padded to its widest cell, as one string (no final newline). */
export function formatTable(head: string[], rows: string[][], opts: TableOptions = {}): string {
  const style = opts.style ?? "markdown";
  const align = (i: number): Align => opts.align?.[i] ?? (i === 0 ? "left" : "right");
  const minWidth = style === "markdown" ? 3 : 1;
  const widths = head.map((h, i) =>
    Math.max(minWidth, h.length, ...rows.map((r) => (r[i] ?? "").length))
  );
  const pad = (cells: string[]) =>
    widths.map((w, i) =>
      align(i) === "left" ? (cells[i] ?? "").padEnd(w) : (cells[i] ?? "").padStart(w)
    );
  if (style === "plain") {
    return [
      pad(head).join("  "),
      widths.map((w) => "-".repeat(w)).join("  "),
      ...rows.map((r) => pad(r).join("  ")),
    ].join("\n");
  }
  const rule = widths.map((w, i) => align(i) === "right" ? `${"-".repeat(w - 1)}:` : "-".repeat(w));
  return [head, ...rows].map(pad).map((cells) => `| ${cells.join(" | ")} |`)
    .toSpliced(1, 0, `| ${rule.join(" | ")} |`).join("\n");
}
