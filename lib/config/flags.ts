/**
 * Typed flag definitions: what a service accepts (integers with bounds, durations with units,
 * addresses, URLs, choices, secrets, repeatable lists), parsed and range-checked here once
 * instead of by hand in every service. The same definition serves the command line, the
 * environment and the config file (see resolve.ts).
 * @module
 */

import { AddressError, type HostPort, parseHostPort } from "../net/addr.ts";
import { formatDurationMs, parseDurationMs } from "./duration.ts";

/** What a flag's value is. */
export type FlagKind =
  | "string"
  | "boolean"
  | "int"
  | "duration"
  | "hostport"
  | "url"
  | "choice"
  | "secret";

/** One flag of a service. */
export interface FlagDef {
  kind: FlagKind;
  /** One-line description for `--help`. */
  help: string;
  short?: string;
  /** Repeatable: collects a list (the environment variable holds several, see `envSeparator`). */
  multiple?: boolean;
  /** Default, written as on the command line (`"30s"`, `"1024"`, `"127.0.0.1:8080"`). */
  default?: string | boolean;
  /** Environment variable read when the flag is absent (secrets: argv shows in `ps`). */
  env?: string;
  /** How a repeatable flag's environment variable separates items. @default "whitespace" */
  envSeparator?: "whitespace" | "comma";
  /** Placeholder shown in help, e.g. `host:port`. */
  arg?: string;
  /** Smallest value (int: the number; duration: milliseconds; secret: characters, "" exempt). */
  min?: number;
  /** Largest value (int: the number; duration: milliseconds). */
  max?: number;
  /** Allowed values of a `choice` flag. */
  choices?: readonly string[];
  /** Allowed schemes of a `url` flag (without `:`). */
  schemes?: readonly string[];
  /** Host of a `hostport` value written `:port`. @default "127.0.0.1" */
  defaultHost?: string;
  /** Old names still accepted (flag or config key); each use logs one deprecation line. */
  aliases?: readonly string[];
  /** Applied on SIGHUP without a restart (other keys that change are named in a warning). */
  live?: boolean;
}

/** A set of flags by name. */
export type FlagDefs = Record<string, FlagDef>;

type One<D extends FlagDef> = D extends { kind: "boolean" } ? boolean
  : D extends { kind: "int" | "duration" } ? number
  : D extends { kind: "hostport" } ? HostPort
  : D extends { kind: "choice"; choices: readonly (infer C extends string)[] } ? C
  : string;

/** The parsed value of one flag, typed from its definition. */
export type FlagValue<D extends FlagDef> = D extends { kind: "boolean" } ? boolean
  : D extends { multiple: true } ? One<D>[]
  : D extends { default: string } ? One<D>
  : One<D> | undefined;

/** Parsed flag values, typed from their definitions. */
export type FlagValues<S extends FlagDefs> = { -readonly [K in keyof S]: FlagValue<S[K]> };

/** One parsed value of any kind. */
export type ParsedValue = string | boolean | number | HostPort;

/** A value that does not fit its flag; `problem` says why, without naming where it came from. */
export class FlagValueError extends Error {
  override name = "FlagValueError";
}

/** Milliseconds or the duration text, for messages. */
const showMs = (ms: number): string => formatDurationMs(ms);

/**
 * Parse one textual value of a flag (command line, environment, config file, default).
 * Throws {@linkcode FlagValueError} with what is wrong. Secrets come back unresolved (the
 * resolver needs to know where they came from).
 */
export function parseFlagValue(def: FlagDef, text: string): ParsedValue {
  switch (def.kind) {
    case "string":
    case "secret":
      return text;
    case "boolean": {
      const t = text.trim().toLowerCase();
      if (["1", "true", "yes", "on"].includes(t)) return true;
      if (["0", "false", "no", "off", ""].includes(t)) return false;
      throw new FlagValueError(`must be true or false, got ${JSON.stringify(text)}`);
    }
    case "int": {
      const t = text.trim();
      const n = Number(t);
      if (!/^-?\d+$/.test(t) || !Number.isSafeInteger(n)) {
        throw new FlagValueError(`must be an integer, got ${JSON.stringify(text)}`);
      }
      if (def.min !== undefined && n < def.min) {
        throw new FlagValueError(`must be at least ${def.min}, got ${n}`);
      }
      if (def.max !== undefined && n > def.max) {
        throw new FlagValueError(`must be at most ${def.max}, got ${n}`);
      }
      return n;
    }
    case "duration": {
      const ms = parseDurationMs(text);
      if (ms === undefined) {
        throw new FlagValueError(
          `must be a duration (250ms, 30s, 5m, 1h; a bare number is ms), got ${
            JSON.stringify(text)
          }`,
        );
      }
      if (def.min !== undefined && ms < def.min) {
        throw new FlagValueError(`must be at least ${showMs(def.min)}, got ${showMs(ms)}`);
      }
      if (def.max !== undefined && ms > def.max) {
        throw new FlagValueError(`must be at most ${showMs(def.max)}, got ${showMs(ms)}`);
      }
      return ms;
    }
    case "hostport":
      try {
        return parseHostPort(text, def.defaultHost ?? "127.0.0.1");
      } catch (err) {
        if (err instanceof AddressError) throw new FlagValueError(err.message);
        throw err;
      }
    case "url": {
      let u: URL;
      try {
        u = new URL(text);
      } catch {
        throw new FlagValueError(`not a URL: ${JSON.stringify(text)}`);
      }
      const scheme = u.protocol.slice(0, -1);
      if (def.schemes && !def.schemes.includes(scheme)) {
        throw new FlagValueError(
          `must be a ${def.schemes.map((s) => `${s}://`).join(" or ")} URL, got ${scheme}://`,
        );
      }
      return text;
    }
    case "choice":
      if (!def.choices?.includes(text)) {
        throw new FlagValueError(
          `must be one of ${def.choices?.join(", ")}, got ${JSON.stringify(text)}`,
        );
      }
      return text;
  }
}
