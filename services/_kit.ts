/**
 * The services' process side, the only place that reads `Deno.args` and exits: flags from
 * argv + environment + `--config` file (lib/config), `--help`, `--version`, `--check-config`
 * (every check a start runs, then exit without binding), one-line failures with exit code 2
 * (bad config) or 1 (cannot run), SIGHUP reloads, and SIGINT/SIGTERM shutdown.
 *
 * A service is: `startService(command, validate)` -> construct from the config -> run.
 * `validate` is the whole of its config checking, so `--check-config` and a start (and a
 * reload) refuse exactly the same configs.
 * @module
 */

import { type LogFormat, Logger, type LogLevel } from "../lib/log.ts";
import type { HostPort } from "../lib/net/addr.ts";
import { errorMessage } from "../lib/net/errors.ts";
import {
  portSharingAvailable,
  setWorkerSlot,
  type WorkerSlot,
  workerSlot,
} from "../lib/net/worker_slot.ts";
import {
  ownCommandLine,
  workerCountEnv,
  workerIndexEnv,
  WorkerPool,
  workerReadyLine,
  workerSecretEnv,
  WorkerStartError,
} from "../lib/workers/mod.ts";
import { holdResets, resetSupport } from "../lib/net/reset.ts";
import { warrenVersion } from "../lib/version.ts";
import {
  allFlags,
  type ArgvValues,
  changedKeys,
  commandOnlyFlags,
  type commonFlags,
  configFileFlags,
  describeSource,
  type FlagDefs,
  type FlagValues,
  loadConfigFile,
  parseArgv,
  type Resolved,
  resolveFlags,
  type ServiceCommand,
  usage,
} from "../lib/config/mod.ts";

/** Print `msg` as one line to stderr and exit with `code` (2 = bad config, 1 = cannot run). */
export function fail(msg: string, code = 1): never {
  console.error(`error: ${msg}`);
  Deno.exit(code);
}

/** The values a service's `validate` sees: its flags and the common ones, typed. */
export type ServiceFlags<S extends FlagDefs> = FlagValues<S & typeof commonFlags>;

/** What a service's `validate` gets besides the flags. */
export interface ValidateContext {
  log: Logger;
  /** Where flag `name`'s value was written, for messages (`--host`, `t.toml:3: key "host"`). */
  where(name: string): string;
}

/** A service's config check: builds its config from the flags, throws (any Error) to refuse. */
export type Validate<S extends FlagDefs, C> = (
  flags: ServiceFlags<S>,
  ctx: ValidateContext,
) => C | Promise<C>;

/** A started service's config, logger and reload hook. */
export interface Started<S extends FlagDefs, C> {
  flags: ServiceFlags<S>;
  cfg: C;
  log: Logger;
  /**
   * Register what SIGHUP re-applies, given the re-validated config (the file re-read with the
   * same command line). Throw to refuse the reload: the old config stays. Keys that changed
   * and are not `live` in their definition are named in one warning line.
   */
  onReload(handler: (next: C, flags: ServiceFlags<S>) => void | Promise<void>): void;
}

/** The validate context of one resolution. */
function contextOf(r: Resolved<FlagDefs>, log: Logger): ValidateContext {
  return { log, where: (name) => describeSource(r.sources[name] ?? { kind: "default" }, name) };
}

const processEnv = (name: string): string | undefined => Deno.env.get(name);

/** Resolve the flags from argv, the environment and the config file (throws, never exits). */
function resolve<S extends FlagDefs>(defs: FlagDefs, argv: ArgvValues): Resolved<S> {
  const path = (argv.config as string | undefined) ?? processEnv("WARREN_CONFIG");
  const file = path ? loadConfigFile(path, configFileFlags(defs)) : undefined;
  return resolveFlags(defs, { argv, env: processEnv, file }) as unknown as Resolved<S>;
}

/**
 * Parse and validate the service's config, exiting 2 with one line when anything is wrong;
 * answer `--help` and `--version`; with `--check-config`, print `config ok` and exit 0 once
 * `validate` passed. Installs the SIGHUP reload.
 */
export async function startService<S extends FlagDefs, C>(
  cmd: ServiceCommand<S>,
  validate: Validate<S, C>,
  args: string[] = Deno.args,
): Promise<Started<S, C>> {
  const defs = allFlags(cmd);
  let argv: ArgvValues;
  let resolved: Resolved<S & typeof commonFlags>;
  try {
    argv = parseArgv(defs, args);
    if (argv.help) {
      console.log(usage(cmd));
      Deno.exit(0);
    }
    if (argv.version) {
      console.log(`${cmd.name} (warren ${warrenVersion}, deno ${Deno.version.deno})`);
      Deno.exit(0);
    }
    resolved = resolve(defs, argv);
  } catch (err) {
    fail(errorMessage(err), 2);
  }
  const flags = resolved.values;
  const slot = workerSlotFromEnv();
  const log = new Logger(
    flags["log-level"] as LogLevel,
    slot ? { svc: cmd.name, worker: slot.index } : { svc: cmd.name },
    undefined,
    flags["log-format"] as LogFormat,
  );
  // Deprecations and secrets on argv are said once, not again at every reload.
  const warned = new Set<string>();
  const warnOnce = (warnings: string[]) => {
    for (const w of warnings.filter((w) => !warned.has(w))) {
      warned.add(w);
      log.warn(w);
    }
  };
  warnOnce(resolved.warnings);
  let cfg: C;
  try {
    cfg = await validate(flags, contextOf(resolved, log));
  } catch (err) {
    fail(errorMessage(err), 2);
  }
  if (flags["check-config"]) {
    console.log(`config ok${flags.config ? `: ${flags.config}` : ""}`);
    Deno.exit(0);
  }
  takeStopSignals(log);
  loadTrustStore();
  const workers = (flags as Record<string, unknown>).workers;
  if (slot) {
    setWorkerSlot(slot);
    // The supervisor holds our stdin open for its lifetime: its end (even a kill -9, even
    // while we are still starting) ends this worker rather than leave it unsupervised.
    const gone = () => supervisorGone();
    Deno.stdin.readable.pipeTo(new WritableStream()).then(gone, gone);
  } else if (typeof workers === "number" && workers > 1) {
    await superviseWorkers(log, workers);
  }
  const handlers: ((next: C, flags: ServiceFlags<S>) => void | Promise<void>)[] = [];
  // What runs: live keys follow reloads, the others keep their start value until a restart.
  const running: Record<string, unknown> = { ...flags };
  let reloading = Promise.resolve();
  const reload = async () => {
    let next: Resolved<S & typeof commonFlags>;
    try {
      next = resolve(defs, argv);
      warnOnce(next.warnings);
      const nextCfg = await validate(next.values, contextOf(next, log));
      for (const handler of handlers) await handler(nextCfg, next.values);
    } catch (err) {
      log.error("config reload failed, keeping the old config", { error: errorMessage(err) });
      return;
    }
    const values = next.values as Record<string, unknown>;
    const pending = changedKeys(running, values).filter((k) =>
      !commandOnlyFlags.has(k) && !defs[k]?.live
    );
    if (pending.length > 0) {
      log.warn("config changed keys that need a restart (not applied)", {
        keys: pending.join(","),
      });
    }
    for (const [k, d] of Object.entries(defs)) if (d.live) running[k] = values[k];
    // Logged before the level changes, so a switch to "warn" still shows that it happened.
    log.info("config reloaded", {
      file: (values.config as string | undefined) ?? "-",
      level: values["log-level"] as string,
    });
    log.level = values["log-level"] as LogLevel;
  };
  if (Deno.build.os !== "windows") {
    Deno.addSignalListener("SIGHUP", () => {
      log.info("SIGHUP: reloading config");
      reloading = reloading.then(reload);
    });
  }
  return { flags, cfg, log, onReload: (h) => void handlers.push(h) };
}

/**
 * Run `start` (which binds `addr`), exiting 1 with one line when the port is busy or the
 * address cannot be bound (a service that cannot listen has nothing to do).
 */
export async function bindOrExit<T>(
  what: string,
  addr: HostPort,
  start: () => T | Promise<T>,
): Promise<T> {
  try {
    return await start();
  } catch (err) {
    if (err instanceof Deno.errors.AddrInUse) {
      fail(`${what}: address ${addr.host}:${addr.port} is already in use`);
    }
    fail(`${what}: cannot listen on ${addr.host}:${addr.port}: ${errorMessage(err)}`);
  }
}

/**
 * Run `stop` once on the first SIGINT or SIGTERM; a second signal exits at once.
 * Returns a signal that aborts when shutdown begins. Every service calls it once it is up
 * (listening), so it also says, once, whether this process can reset connections.
 */
export function onShutdown(log: Logger, stop: () => Promise<void>): AbortSignal {
  // After binding: a busy port still exits with its one line. See lib/net/reset.ts.
  const resets = resetSupport();
  if (resets.available) log.info("connection resets available", { libc: resets.libc });
  else log.info("connection resets unavailable: a relay cut short ends in a FIN", resets);
  // libc kept open for resets while the service runs, not opened per reset (~2 ms each).
  const releaseResets = holdResets();
  const ac = new AbortController();
  const handler = (sig: Deno.Signal) => () => {
    if (ac.signal.aborted) {
      log.warn("second signal, exiting now", { signal: sig });
      Deno.exit(130);
    }
    log.info("shutting down", { signal: sig });
    ac.abort();
    stop().then(
      () => {
        releaseResets();
        log.info("stopped");
        Deno.exit(0);
      },
      (err) => {
        log.error("shutdown failed", { error: errorMessage(err) });
        Deno.exit(1);
      },
    );
  };
  takeStopSignals(log);
  stopSignal = (sig) => handler(sig)();
  if (workerSlot()) {
    // Listening: tell the supervisor. From now on its end shuts us down as SIGTERM does.
    Deno.stdout.writeSync(new TextEncoder().encode(`${workerReadyLine}\n`));
    supervisorGone = handler("SIGTERM");
  }
  return ac.signal;
}

/** What SIGINT/SIGTERM run once the service is up (`onShutdown`); undefined while it starts. */
let stopSignal: ((sig: Deno.Signal) => void) | undefined;
let stopSignalsTaken = false;

/**
 * Take SIGINT and SIGTERM from before the first listener is bound: a supervisor (or a test)
 * that signals right after a "listening" line must not meet the default action (death by the
 * signal, exit 143) in the gap before `onShutdown`. A signal while the service still starts
 * (binding its other listeners, reaching Redis) ends the process at once, as the default did,
 * but logged and with exit 0; the listeners bound so far close with it.
 */
function takeStopSignals(log: Logger): void {
  if (stopSignalsTaken) return;
  stopSignalsTaken = true;
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(sig, () => {
      if (stopSignal) return stopSignal(sig);
      log.info("shutting down", { signal: sig, while: "starting" });
      log.info("stopped");
      Deno.exit(0);
    });
  }
}

/**
 * What a worker does when its supervisor is gone (its stdin ended): exit while it starts,
 * shut down as on SIGTERM once it listens (`onShutdown`).
 */
let supervisorGone = (): void => fail("supervisor gone before this worker was ready");

/**
 * Load the TLS trust store now, as the service starts. Deno 2.9.6 loads it at the first TLS
 * client connection (or HTTP client) and keeps it for the process's life; a load that fails
 * then (out of file descriptors: "Warning: Ignoring extra certs from ... Too many open files")
 * drops the `NODE_EXTRA_CA_CERTS` certificates for good, so every later TLS dial to a server
 * under such a CA failed (UnknownIssuer). Creating an HTTP client loads it (about 1 ms, no
 * permission needed); tests/tls_trust_store_test.ts shows both.
 */
export function loadTrustStore(): void {
  Deno.createHttpClient({}).close();
}

/** Descriptors a service holds beside its connections: listeners, stdio, Redis, the runtime's. */
export const fdReserve = 64;

/** Soft and hard open-file limits (Infinity: unlimited). */
export interface FdLimits {
  soft: number;
  hard: number;
}

/** This process's open-file limits from `/proc/self/limits`; undefined where it cannot be read. */
export function fdLimits(): FdLimits | undefined {
  let text: string;
  try {
    text = Deno.readTextFileSync("/proc/self/limits");
  } catch {
    // No /proc (not Linux) or no read permission: the limits are not known, nothing to check.
    return undefined;
  }
  const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(text);
  if (!m) return undefined;
  const n = (v: string) => v === "unlimited" ? Infinity : Number(v);
  return { soft: n(m[1]), hard: n(m[2]) };
}

/**
 * Log the open-file limits at start-up, and warn when the soft one (Deno raises it to the
 * hard one as it starts) is below `conns` + {@linkcode fdReserve}: the connections the
 * configured limits let this process hold at once. Past the limit, accepts and dials fail
 * with EMFILE (the services back off and shed, but refuse meanwhile); the fix is the
 * service manager's (systemd `LimitNOFILE=`, `ulimit -n`, docker `--ulimit nofile=`).
 */
export function logFdLimits(log: Logger, conns?: number): void {
  const limits = fdLimits();
  if (!limits) {
    log.info("open-file limit not known (no read access to /proc/self/limits)");
    return;
  }
  const need = conns === undefined ? undefined : conns + fdReserve;
  const fields = { soft: String(limits.soft), hard: String(limits.hard) };
  if (need !== undefined && limits.soft < need) {
    log.warn("open-file limit below what the connection limits need: raise LimitNOFILE", {
      ...fields,
      need,
    });
  } else log.info("open-file limit", need === undefined ? fields : { ...fields, need });
}

/** The secret the `--workers` supervisor shares with its workers (undefined outside one). */
export function workerSecret(): string | undefined {
  return workerSlot() ? Deno.env.get(workerSecretEnv) : undefined;
}

/** This process's worker slot when a `--workers` supervisor started it. */
function workerSlotFromEnv(): WorkerSlot | undefined {
  const index = Number(Deno.env.get(workerIndexEnv) ?? "");
  const count = Number(Deno.env.get(workerCountEnv) ?? "");
  if (!Number.isInteger(index) || index < 1 || !Number.isInteger(count) || count < index) {
    return undefined;
  }
  return { index, count };
}

/**
 * Run `count` copies of this very command line as workers sharing its ports (SO_REUSEPORT)
 * and supervise them until a signal stops them; never returns. Signals are passed on: SIGHUP
 * to reload each worker, SIGINT/SIGTERM to drain and stop them (a second one: at once).
 */
async function superviseWorkers(
  log: Logger,
  count: number,
): Promise<never> {
  if (!portSharingAvailable()) {
    fail("--workers: sharing ports (SO_REUSEPORT) needs Linux and deno run --unstable-net", 2);
  }
  let args: string[];
  try {
    // Linux's copy of our own argv, with Deno's flags: each worker runs exactly what we do.
    args = ownCommandLine();
  } catch (err) {
    fail(`--workers: ${errorMessage(err)}`, 2);
  }
  const program = Deno.execPath();
  if (Deno.permissions.querySync({ name: "run", command: program }).state !== "granted") {
    fail(`--workers: starting workers needs --allow-run=${program}`, 2);
  }
  const pool = new WorkerPool({ program, args, count, log });
  log.info("starting workers", { count });
  try {
    await pool.start();
  } catch (err) {
    // The worker printed its one-line reason (a busy port, an unreadable certificate...).
    if (err instanceof WorkerStartError) Deno.exit(err.code || 1);
    fail(`--workers: ${errorMessage(err)}`);
  }
  log.info("workers ready", { count, pids: pool.workers().map((w) => w.pid).join(",") });
  Deno.addSignalListener("SIGHUP", () => {
    log.info("SIGHUP: passed to the workers");
    pool.signal("SIGHUP");
  });
  let stopping = false;
  stopSignal = (sig) => {
    if (stopping) {
      log.warn("second signal, passed to the workers", { signal: sig });
      pool.signal(sig);
      return;
    }
    stopping = true;
    log.info("shutting down", { signal: sig });
    pool.stop(sig).then(() => {
      log.info("stopped");
      Deno.exit(0);
    });
  };
  return await new Promise<never>(() => {});
}
