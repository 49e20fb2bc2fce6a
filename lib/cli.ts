/**
 * The service adapter: flag parsing with `--help`, one-line failures with a non-zero exit,
 * listening with a clear "port busy" message, and SIGINT/SIGTERM shutdown. Library code
 * never imports this; services do.
 * @module
 */

import { parseArgs } from "node:util";
import { Logger, type LogLevel, logLevels } from "./log.ts";
import { AddressError, type HostPort, parseHostPort } from "./net/addr.ts";
import { errorMessage } from "./net/errors.ts";
import { formatAddr, type Server } from "./net/serve.ts";
import { type HttpHandler, serveHttp } from "./http/server.ts";
import { type ConfigFlag, type ConfigValue, loadConfigFile } from "./config/mod.ts";

/** One flag of a service. */
export interface FlagDef {
  type: "string" | "boolean";
  /** One-line description for `--help`. */
  help: string;
  short?: string;
  /** Repeatable (collects an array). */
  multiple?: boolean;
  default?: string | boolean;
  /** Environment variable read when the flag is absent (for secrets: argv shows in `ps`). */
  env?: string;
  /** Placeholder shown in help, e.g. `host:port`. */
  arg?: string;
}

/** Flags every service takes. */
export const commonFlags = {
  help: { type: "boolean", short: "h", help: "show this help and exit" },
  "log-level": {
    type: "string",
    default: "info",
    arg: logLevels.join("|"),
    help: "lowest level to log",
    env: "WARREN_LOG_LEVEL",
  },
  metrics: {
    type: "string",
    arg: "host:port",
    help: "serve Prometheus metrics (and status) on this address",
  },
  config: {
    type: "string",
    arg: "path",
    env: "WARREN_CONFIG",
    help: "TOML file of flag values (keys are flag names; flags and env override it; " +
      "SIGHUP reloads it)",
  },
  "check-config": {
    type: "boolean",
    help: "check the flags and the --config file (names and types), print 'config ok', exit",
  },
} as const satisfies Record<string, FlagDef>;

type Value<D extends FlagDef> = D["type"] extends "boolean" ? boolean
  : D["multiple"] extends true ? string[]
  : string | undefined;

/** Parsed flag values, typed from their definitions. */
export type FlagValues<S extends Record<string, FlagDef>> = { [K in keyof S]: Value<S[K]> };

/** A service's command-line description. */
export interface Command<S extends Record<string, FlagDef>> {
  name: string;
  summary: string;
  flags: S;
  /** Extra help text (examples) printed after the flag list. */
  examples?: string[];
}

/** Print `msg` as one line to stderr and exit with `code` (2 = usage, 1 = runtime). */
export function fail(msg: string, code = 1): never {
  console.error(`error: ${msg}`);
  Deno.exit(code);
}

/** The `--help` text of a command. */
export function usage<S extends Record<string, FlagDef>>(cmd: Command<S>): string {
  const all: Record<string, FlagDef> = { ...cmd.flags, ...commonFlags };
  const lines = [`${cmd.name}: ${cmd.summary}`, "", `usage: ${cmd.name} [flags]`, "", "flags:"];
  for (const [name, d] of Object.entries(all)) {
    const left = `  ${d.short ? `-${d.short}, ` : ""}--${name}${
      d.type === "string" ? ` <${d.arg ?? "value"}>` : ""
    }`;
    const extra = [
      d.default !== undefined && d.default !== false ? `default ${d.default}` : "",
      d.multiple ? "repeatable" : "",
      d.env ? `env ${d.env}` : "",
    ].filter(Boolean).join(", ");
    lines.push(`${left.padEnd(38)} ${d.help}${extra ? ` (${extra})` : ""}`);
  }
  if (cmd.examples?.length) lines.push("", "examples:", ...cmd.examples.map((e) => `  ${e}`));
  return lines.join("\n");
}

/** Flags that make no sense in a config file. */
const commandOnlyFlags = new Set(["help", "config", "check-config"]);

/** Raw values as they come out of parsing, before defaults are applied. */
type RawValues = Record<string, string | boolean | (string | boolean)[] | undefined>;

/** What a reload needs: the flag set and the command-line values (they keep precedence). */
let parsed: { all: Record<string, FlagDef>; argv: RawValues } | undefined;

/**
 * Merge, by precedence, command line > environment (`env:` of the flag) > config file
 * (`--config` / WARREN_CONFIG) > default. Throws (ConfigError, Error) instead of exiting so
 * a reload can keep the old values.
 */
function resolveValues(all: Record<string, FlagDef>, argv: RawValues): RawValues {
  const values: RawValues = { ...argv };
  const configPath = (argv.config as string | undefined) ?? Deno.env.get("WARREN_CONFIG");
  let file: Record<string, ConfigValue> = {};
  if (configPath) {
    const fileFlags: Record<string, ConfigFlag> = {};
    for (const [name, d] of Object.entries(all)) {
      if (!commandOnlyFlags.has(name)) {
        fileFlags[name] = {
          kind: d.type === "boolean" ? "boolean" : "string",
          multiple: d.multiple,
        };
      }
    }
    file = loadConfigFile(configPath, fileFlags).values;
  }
  for (const [name, d] of Object.entries(all)) {
    const given = values[name];
    if (given === undefined || (Array.isArray(given) && given.length === 0)) {
      values[name] = undefined;
      if (d.env) {
        const fromEnv = Deno.env.get(d.env);
        if (fromEnv !== undefined) values[name] = d.type === "boolean" ? fromEnv === "1" : fromEnv;
      }
    }
    if (values[name] === undefined && file[name] !== undefined) values[name] = file[name];
    if (values[name] === undefined) {
      values[name] = d.multiple ? [] : d.type === "boolean" ? (d.default ?? false) : d.default;
    }
  }
  if (configPath) values.config = configPath;
  if (!logLevels.includes(values["log-level"] as LogLevel)) {
    throw new Error(`--log-level must be one of ${logLevels.join(", ")}`);
  }
  return values;
}

/**
 * Parse `args` against the command's flags plus the common ones, then fill what is absent
 * from the environment, the `--config` TOML file and the defaults (in that order).
 * `--help` prints usage and exits 0; an unknown flag, a bad value or a bad config file
 * exits 2 with one line (the file's errors name the key and its line).
 */
export function parseFlags<S extends Record<string, FlagDef>>(
  cmd: Command<S>,
  args: string[] = Deno.args,
): FlagValues<S & typeof commonFlags> {
  const all: Record<string, FlagDef> = { ...cmd.flags, ...commonFlags };
  const options: Record<
    string,
    { type: "string" | "boolean"; short?: string; multiple?: boolean }
  > = {};
  for (const [name, d] of Object.entries(all)) {
    options[name] = {
      type: d.type,
      ...(d.short ? { short: d.short } : {}),
      ...(d.multiple ? { multiple: true } : {}),
    };
  }
  let argv: RawValues;
  try {
    ({ values: argv } = parseArgs({ args, options, strict: true, allowPositionals: false }));
  } catch (err) {
    fail(`${errorMessage(err)} (see --help)`, 2);
  }
  if (argv.help) {
    console.log(usage(cmd));
    Deno.exit(0);
  }
  let values: RawValues;
  try {
    values = resolveValues(all, argv);
  } catch (err) {
    fail(errorMessage(err), 2);
  }
  if (values["check-config"]) {
    console.log(`config ok${values.config ? `: ${values.config}` : ""}`);
    Deno.exit(0);
  }
  parsed = { all, argv };
  return values as FlagValues<S & typeof commonFlags>;
}

/** A service's reaction to a reloaded config; throw to refuse it (the old one stays). */
export type ReloadHandler<V> = (next: V) => void | Promise<void>;

const reloadHandlers: ReloadHandler<RawValues>[] = [];

/**
 * Register what a service re-applies on SIGHUP, given the flags re-resolved from the same
 * command line and the re-read config file. Handlers run in order; one that throws stops the
 * reload (validate before applying, so a refused reload changes nothing). The log level is
 * reloaded for every service by `serviceLogger`.
 *
 * @example
 * onReload<typeof flags>((next) => server.setToken(next.token ?? ""));
 */
export function onReload<V>(handler: ReloadHandler<V>): void {
  reloadHandlers.push(handler as unknown as ReloadHandler<RawValues>);
}

let reloading: Promise<void> = Promise.resolve();

/**
 * Re-resolve the flags (command line, environment, config file) and run the reload
 * handlers; on any error keep the old config and log why. Runs one reload at a time.
 * Returns once this reload is done (SIGHUP calls it; exported for tests and services).
 */
export function reloadConfig(log: Logger): Promise<void> {
  reloading = reloading.then(async () => {
    if (!parsed) return;
    let next: RawValues;
    try {
      next = resolveValues(parsed.all, parsed.argv);
    } catch (err) {
      log.error("config reload failed, keeping the old config", { error: errorMessage(err) });
      return;
    }
    for (const handler of reloadHandlers) {
      try {
        await handler(next);
      } catch (err) {
        log.error("config reload failed, keeping the old config", { error: errorMessage(err) });
        return;
      }
    }
    // Logged before the level changes, so a switch to "warn" still shows that it happened.
    log.info("config reloaded", {
      file: (next.config as string | undefined) ?? "-",
      level: next["log-level"] as string,
    });
    log.level = next["log-level"] as LogLevel;
  });
  return reloading;
}

/** Parse a `host:port` flag value, exiting 2 with the flag's name when malformed. */
export function hostPortFlag(flag: string, value: string, defaultHost = "127.0.0.1"): HostPort {
  try {
    return parseHostPort(value, defaultHost);
  } catch (err) {
    if (err instanceof AddressError) fail(`--${flag}: ${err.message}`, 2);
    throw err;
  }
}

/** Parse a non-negative integer flag, exiting 2 when malformed. */
export function intFlag(flag: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) fail(`--${flag} must be a non-negative integer`, 2);
  return n;
}

let sighupInstalled = false;

/**
 * The service's root logger, named and levelled from the flags. Also installs the SIGHUP
 * handler (`reloadConfig`): the level of this logger and all its children follows reloads.
 */
export function serviceLogger(name: string, level: string | undefined): Logger {
  const log = new Logger((level ?? "info") as LogLevel, { svc: name });
  if (!sighupInstalled && Deno.build.os !== "windows") {
    sighupInstalled = true;
    Deno.addSignalListener("SIGHUP", () => {
      log.info("SIGHUP: reloading config");
      void reloadConfig(log);
    });
  }
  return log;
}

/**
 * Run `start` (which binds `addr`), exiting 1 with one line when the port is busy or the
 * address cannot be bound (a service that cannot listen has nothing to do). Serves TCP
 * listeners, `Deno.serve` (metrics, status) and anything else that binds.
 */
export function bindOrExit<T>(what: string, addr: HostPort, start: () => T): T {
  try {
    return start();
  } catch (err) {
    if (err instanceof Deno.errors.AddrInUse) {
      fail(`${what}: address ${addr.host}:${addr.port} is already in use`);
    }
    fail(`${what}: cannot listen on ${addr.host}:${addr.port}: ${errorMessage(err)}`);
  }
}

/** `Deno.listen` on `addr`, or exit 1 with one line (see {@linkcode bindOrExit}). */
export function listenOrExit(addr: HostPort, what: string): Deno.TcpListener {
  return bindOrExit(what, addr, () => Deno.listen({ hostname: addr.host, port: addr.port }));
}

/**
 * Serve the fetch `handler` on `addr` (the `--admin` API) through lib/http `serveHttp` (a
 * connection cap, head and exchange timers; an fd shortage never ends the process), logging
 * the standard `listening` line with `name: what`, or exit 1 with one line (see
 * {@linkcode bindOrExit}). `shutdown()` stops it like `stop()`.
 */
export function serveOrExit(
  addr: HostPort,
  what: string,
  log: Logger,
  handler: HttpHandler,
): Server & { shutdown(): Promise<void> } {
  const listener = listenOrExit(addr, what);
  const server = serveHttp(listener, handler, { log: log.child({ listener: what }) });
  log.info("listening", { name: what, addr: formatAddr(server.addr) });
  return { ...server, shutdown: () => server.stop() };
}

/**
 * Run `stop` once on the first SIGINT or SIGTERM; a second signal exits at once.
 * Returns a signal that aborts when shutdown begins.
 */
export function onShutdown(log: Logger, stop: () => Promise<void>): AbortSignal {
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
        log.info("stopped");
        Deno.exit(0);
      },
      (err) => {
        log.error("shutdown failed", { error: errorMessage(err) });
        Deno.exit(1);
      },
    );
  };
  for (const sig of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(sig, handler(sig));
  return ac.signal;
}
