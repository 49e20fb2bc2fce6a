/**
 * TOML config files whose keys are a service's flag names: parsed with smol-toml, each value
 * checked against its flag's kind, every error naming the key and its line. (No schema
 * library: zod's ~3 MB of heap in every service process was more than this check needs;
 * issue 20.)
 * @module
 */

// Pinned inline, not through warren's deno.json: lib is imported from anywhere.
// deno-lint-ignore no-import-prefix
import { parse, TomlError } from "npm:smol-toml@1.9.1";
import type { FlagKind } from "./flags.ts";

/** The shape of one flag, as far as a config file cares (a subset of `FlagDef`). */
export interface ConfigFlag {
  /** Booleans are TOML booleans; every other kind is a string (or a number, kept as text). */
  kind: FlagKind;
  /** Repeatable: the file holds an array (a single string is taken as a one-item array). */
  multiple?: boolean;
}

/** A config value: what the same flag would give on the command line. */
export type ConfigValue = string | boolean | string[];

/** Why a config file was refused. */
export type ConfigErrorReason = "read" | "syntax" | "unknown-key" | "type";

/** A config file that cannot be used; the message names the file, line and key. */
export class ConfigError extends Error {
  override name = "ConfigError";
  constructor(
    readonly reason: ConfigErrorReason,
    message: string,
    readonly key?: string,
    readonly line?: number,
  ) {
    super(message);
  }
}

/** A string flag's value: a string, or a finite number as its decimal text (`max-conns = 64`). */
function scalar(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  return typeof v === "number" && Number.isFinite(v) ? String(v) : undefined;
}

/**
 * The value a config file gives flag `d`, as the command line would (undefined: the wrong
 * type): a boolean for a boolean flag, a string (or number) for a string flag, an array of
 * those (or one, taken as a one-item array) for a repeatable flag.
 */
export function configValue(d: ConfigFlag, v: unknown): ConfigValue | undefined {
  if (d.kind === "boolean") return typeof v === "boolean" ? v : undefined;
  if (!d.multiple) return scalar(v);
  if (!Array.isArray(v)) {
    const one = scalar(v);
    return one === undefined ? undefined : [one];
  }
  const all: string[] = [];
  for (const item of v) {
    const one = scalar(item);
    if (one === undefined) return undefined;
    all.push(one);
  }
  return all;
}

/**
 * The 1-based line where `key` is assigned in TOML `text` (a top-level `key =` or
 * `"key" =`), or undefined. smol-toml's parse result carries no positions, so we look.
 */
export function keyLine(text: string, key: string): number | undefined {
  const esc = key.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const re = new RegExp(`^\\s*(?:${esc}|"${esc}"|'${esc}')\\s*=`);
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) if (re.test(lines[i])) return i + 1;
  // A table header (`[key]`) is the other way to give a top-level key.
  const table = new RegExp(`^\\s*\\[\\s*(?:${esc}|"${esc}")\\s*[\\].]`);
  for (let i = 0; i < lines.length; i++) if (table.test(lines[i])) return i + 1;
  return undefined;
}

function describe(v: unknown): string {
  if (Array.isArray(v)) return "array";
  if (v === null) return "null";
  if (v instanceof Date) return "date";
  return typeof v === "object" ? "table" : typeof v;
}

function expected(d: ConfigFlag): string {
  if (d.kind === "boolean") return "a boolean (true/false)";
  return d.multiple ? "a string or an array of strings" : "a string (or a number)";
}

/**
 * Parse and validate config `text` against `flags`. `source` names the file in messages.
 * Throws `ConfigError` with the first problem: `path:line: key "x": ...`.
 */
export function parseConfig(
  text: string,
  flags: Record<string, ConfigFlag>,
  source = "config",
): Record<string, ConfigValue> {
  let doc: Record<string, unknown>;
  try {
    doc = parse(text) as Record<string, unknown>;
  } catch (err) {
    if (err instanceof TomlError) {
      const first = err.message.split("\n")[0];
      throw new ConfigError("syntax", `${source}:${err.line}: ${first}`, undefined, err.line);
    }
    throw err;
  }
  const out: Record<string, ConfigValue> = {};
  const problems: ConfigError[] = [];
  for (const [key, v] of Object.entries(doc)) {
    const def = Object.hasOwn(flags, key) ? flags[key] : undefined;
    const value = def && configValue(def, v);
    if (value !== undefined) {
      out[key] = value;
      continue;
    }
    const line = keyLine(text, key);
    const at = `${source}:${line ?? "?"}:`;
    problems.push(
      def === undefined
        ? new ConfigError(
          "unknown-key",
          `${at} unknown key "${key}" (keys are the flag names, see --help)`,
          key,
          line,
        )
        : new ConfigError(
          "type",
          `${at} key "${key}" must be ${expected(def)}, got ${describe(v)}`,
          key,
          line,
        ),
    );
  }
  if (problems.length === 0) return out;
  // Report one problem, the first by line, so the user fixes the file top to bottom.
  problems.sort((a, b) => (a.line ?? Infinity) - (b.line ?? Infinity));
  throw problems[0];
}

/** A parsed config file: its values by key, and where each key was written. */
export interface ConfigFile {
  path: string;
  values: Record<string, ConfigValue>;
  /** The 1-based line of `key`, for messages about its value. */
  line(key: string): number | undefined;
}

/** Read and parse the config file at `path` (see `parseConfig`). */
export function loadConfigFile(path: string, flags: Record<string, ConfigFlag>): ConfigFile {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (err) {
    throw new ConfigError("read", `${path}: ${err instanceof Error ? err.message : String(err)}`);
  }
  return { path, values: parseConfig(text, flags, path), line: (key) => keyLine(text, key) };
}
