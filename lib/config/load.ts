/**
 * TOML config files whose keys are a service's flag names: parsed with smol-toml, validated
 * with a zod schema derived from the flag definitions, every error naming the key and its line.
 * @module
 */

// Pinned inline, not through warren's deno.json: lib is imported from anywhere.
// deno-lint-ignore no-import-prefix
import { parse, TomlError } from "npm:smol-toml@1.9.1";
// deno-lint-ignore no-import-prefix
import { z } from "npm:zod@4.6.7";
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

/**
 * The zod schema of a config file for `flags`: a strict object (unknown keys are errors),
 * booleans for boolean flags, strings (numbers accepted and turned into their decimal text,
 * so `max-conns = 64` works) for string flags, arrays of those for repeatable flags.
 */
export function configSchema(
  flags: Record<string, ConfigFlag>,
): z.ZodType<Record<string, ConfigValue | undefined>> {
  const scalar = z.union([z.string(), z.number().transform((n) => String(n))]);
  const shape: Record<string, z.ZodType<ConfigValue | undefined>> = {};
  for (const [name, d] of Object.entries(flags)) {
    shape[name] = d.kind === "boolean"
      ? z.boolean().optional()
      : d.multiple
      ? z.union([z.array(scalar), scalar.transform((s) => [s])]).optional()
      : scalar.optional();
  }
  return z.strictObject(shape);
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
 * Throws `ConfigError` with the first problem: `path:line: key "x": …`.
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
  const result = configSchema(flags).safeParse(doc);
  if (result.success) {
    const out: Record<string, ConfigValue> = {};
    for (const [k, v] of Object.entries(result.data)) if (v !== undefined) out[k] = v;
    return out;
  }
  // Report one issue, the first by line, so the user fixes the file top to bottom.
  const problems = result.error.issues.flatMap((issue) => {
    if (issue.code === "unrecognized_keys") {
      return issue.keys.map((key) => {
        const line = keyLine(text, key);
        return new ConfigError(
          "unknown-key",
          `${source}:${line ?? "?"}: unknown key "${key}" (keys are the flag names, see --help)`,
          key,
          line,
        );
      });
    }
    const key = String(issue.path[0] ?? "");
    const line = keyLine(text, key);
    const def = flags[key];
    const got = describe(doc[key]);
    return [
      new ConfigError(
        "type",
        `${source}:${line ?? "?"}: key "${key}" must be ${
          def ? expected(def) : "valid"
        }, got ${got}`,
        key,
        line,
      ),
    ];
  });
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
