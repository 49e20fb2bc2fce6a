/**
 * A service's command line as data: its flags plus the common ones, `--help` text, and argv
 * parsing. Nothing here reads `Deno.args` or exits: services/_kit.ts is the process side.
 * @module
 */

import { type ArgvOption, parseStrictArgv } from "./argv.ts";
import { type LogFormat, logFormats, type LogLevel, logLevels } from "../log.ts";
import { formatDurationMs } from "./duration.ts";
import type { FlagDef, FlagDefs } from "./flags.ts";
import { type ArgvValues, FlagError, withSecretFiles } from "./resolve.ts";

/** The type of {@linkcode commonFlags} (spelled out for the package's public API). */
export interface CommonFlags extends FlagDefs {
  help: { kind: "boolean"; short: string; help: string };
  version: { kind: "boolean"; help: string };
  "log-level": {
    kind: "choice";
    choices: readonly LogLevel[];
    default: string;
    arg: string;
    help: string;
    env: string;
    live: true;
  };
  "log-format": {
    kind: "choice";
    choices: readonly LogFormat[];
    default: string;
    arg: string;
    help: string;
    env: string;
  };
  metrics: { kind: "hostport"; arg: string; help: string };
  "status-auth": { kind: "secret"; arg: string; env: string; help: string };
  config: { kind: "string"; arg: string; env: string; help: string };
  "check-config": { kind: "boolean"; help: string };
}

/** Flags every service takes. */
export const commonFlags: CommonFlags = {
  help: { kind: "boolean", short: "h", help: "show this help and exit" },
  version: { kind: "boolean", help: "print warren's and Deno's versions and exit" },
  "log-level": {
    kind: "choice",
    choices: logLevels,
    default: "info",
    arg: logLevels.join("|"),
    help: "lowest level to log",
    env: "WARREN_LOG_LEVEL",
    live: true,
  },
  "log-format": {
    kind: "choice",
    choices: logFormats,
    default: "logfmt",
    arg: logFormats.join("|"),
    help: "log line format: logfmt, or one JSON object per line",
    env: "WARREN_LOG_FORMAT",
  },
  metrics: {
    kind: "hostport",
    arg: "host:port",
    help: "serve Prometheus metrics, /status and the status page on this address " +
      "(host defaults to 127.0.0.1)",
  },
  "status-auth": {
    kind: "secret",
    arg: "user:pass|bearer:token",
    env: "WARREN_STATUS_AUTH",
    help: "protect --metrics (page, /status, /metrics; not /healthz) with HTTP Basic " +
      "user:pass or a bearer token (prefer the env variable or --status-auth-file)",
  },
  config: {
    kind: "string",
    arg: "path",
    env: "WARREN_CONFIG",
    help: "TOML file of flag values (keys are flag names; flags and env override it; " +
      "SIGHUP reloads it)",
  },
  "check-config": {
    kind: "boolean",
    help: "run every check a start runs (values, secrets, files, certificates), without " +
      "binding; print 'config ok' and exit",
  },
};

/** Common flags that only make sense on the command line, never in a config file. */
export const commandOnlyFlags: ReadonlySet<string> = new Set([
  "help",
  "version",
  "config",
  "check-config",
]);

/** A service's command-line description. */
export interface ServiceCommand<S extends FlagDefs> {
  name: string;
  summary: string;
  flags: S;
  /** Extra help text (examples) printed after the flag list. */
  examples?: readonly string[];
}

/**
 * Every flag of `cmd`: its own, the common ones, and the secrets' `-file` companions (typed
 * as plain string flags by name lookup).
 */
export function allFlags<S extends FlagDefs>(cmd: ServiceCommand<S>): S & CommonFlags {
  return withSecretFiles({ ...cmd.flags, ...commonFlags }) as S & CommonFlags;
}

const takesValue = (d: FlagDef): boolean => d.kind !== "boolean";

function defaultText(d: FlagDef): string {
  if (d.default === undefined || d.default === false) return "";
  if (d.kind === "duration" && /^\d+$/.test(String(d.default))) {
    return `default ${formatDurationMs(Number(d.default))}`;
  }
  return `default ${d.default}`;
}

/** The `--help` text of a command. */
export function usage<S extends FlagDefs>(cmd: ServiceCommand<S>): string {
  const lines = [`${cmd.name}: ${cmd.summary}`, "", `usage: ${cmd.name} [flags]`, "", "flags:"];
  for (const [name, d] of Object.entries(allFlags(cmd) as FlagDefs)) {
    const arg = d.arg ?? (d.kind === "duration" ? "duration" : d.kind === "int" ? "n" : "value");
    const left = `  ${d.short ? `-${d.short}, ` : ""}--${name}${takesValue(d) ? ` <${arg}>` : ""}`;
    const extra = [
      defaultText(d),
      d.multiple ? "repeatable" : "",
      d.env ? `env ${d.env}` : "",
      d.aliases?.length ? `was ${d.aliases.map((a) => `--${a}`).join(", ")}` : "",
    ].filter(Boolean).join(", ");
    lines.push(`${left.padEnd(38)} ${d.help}${extra ? ` (${extra})` : ""}`);
  }
  lines.push(
    "",
    "durations take units: 250ms, 30s, 5m, 1h (a bare number is milliseconds); secrets may be " +
      "env:VAR or file:PATH",
  );
  if (cmd.examples?.length) lines.push("", "examples:", ...cmd.examples.map((e) => `  ${e}`));
  return lines.join("\n");
}

/**
 * Parse `args` against `defs` (with {@linkcode allFlags}); old names (aliases) are accepted
 * under their own key for the resolver to report. Throws {@linkcode FlagError} on an
 * unknown flag, a missing value or a positional argument.
 */
export function parseArgv(defs: FlagDefs, args: string[]): ArgvValues {
  const options: Record<string, ArgvOption> = {};
  for (const [name, d] of Object.entries(defs)) {
    for (const n of [name, ...(d.aliases ?? [])]) {
      options[n] = {
        type: takesValue(d) ? "string" : "boolean",
        ...(d.short && n === name ? { short: d.short } : {}),
        ...(d.multiple ? { multiple: true } : {}),
      };
    }
  }
  try {
    return parseStrictArgv(args, options);
  } catch (err) {
    throw new FlagError("", `${err instanceof Error ? err.message : String(err)} (see --help)`);
  }
}

/** The keys a config file may hold for `defs` (names and old names, no command-only flags). */
export function configFileFlags(defs: FlagDefs): Record<string, FlagDef> {
  const out: Record<string, FlagDef> = {};
  for (const [name, d] of Object.entries(defs)) {
    if (commandOnlyFlags.has(name)) continue;
    for (const n of [name, ...(d.aliases ?? [])]) out[n] = d;
  }
  return out;
}
