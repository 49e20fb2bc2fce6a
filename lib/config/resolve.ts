/**
 * Flag values from their three places, by precedence command line > environment > config
 * file > default, for every key alike; each value parsed by its kind (flags.ts) and each
 * error naming where the value came from (`--max-conns`, `SEAPROX_LISTEN`,
 * `seaprox.toml:3: key "max-conns"`). Secrets resolve `env:`/`file:` references and their
 * `--x-file` companion here, with a warning when one was typed on the command line. Pure
 * apart from reading secret files: the caller hands in argv, the environment and the file.
 * @module
 */

import type { ConfigFile, ConfigValue } from "./load.ts";
import {
  type FlagDef,
  type FlagDefs,
  FlagValueError,
  type FlagValues,
  parseFlagValue,
} from "./flags.ts";
import { resolveSecret, SecretError } from "./secret.ts";

/** Where a value came from; higher `rank` wins. */
export type ValueSource =
  | { kind: "flag"; name: string }
  | { kind: "env"; name: string }
  | { kind: "file"; path: string; key: string; line?: number }
  | { kind: "default" };

const rank = (s: ValueSource): number =>
  s.kind === "flag" ? 3 : s.kind === "env" ? 2 : s.kind === "file" ? 1 : 0;

/**
 * How `source` is named in messages, which read `<where> must be ...`: `--max-conns`,
 * `SEAPROX_LISTEN (--listen)`, `seaprox.toml:3: max-conns`.
 */
export function describeSource(source: ValueSource, flag: string): string {
  switch (source.kind) {
    case "flag":
      return `--${source.name}`;
    case "env":
      return `${source.name} (--${flag})`;
    case "file":
      return `${source.path}:${source.line ?? "?"}: ${source.key}`;
    case "default":
      return `default of --${flag}`;
  }
}

/** A value that cannot be used; the message names where it came from and why. */
export class FlagError extends Error {
  override name = "FlagError";
  constructor(readonly flag: string, message: string) {
    super(message);
  }
}

/** Values as lib/config `parseStrictArgv` (node:util parseArgs's rules) gives them, by flag name
 * (aliases included). */
export type ArgvValues = Record<string, string | boolean | (string | boolean)[] | undefined>;

/** What {@linkcode resolveFlags} reads. */
export interface ResolveInput {
  argv: ArgvValues;
  /** Environment lookup (tests pass a map; services the process environment). */
  env: (name: string) => string | undefined;
  file?: ConfigFile;
}

/** Resolved values, the warnings to log once (deprecated names, secrets on argv), sources. */
export interface Resolved<S extends FlagDefs> {
  values: FlagValues<S>;
  warnings: string[];
  sources: Record<string, ValueSource>;
}

/** The companion flag of secret `name`: a file whose first line is the secret. */
export const secretFileFlagName = (name: string): string => `${name}-file`;

/**
 * `defs` plus, for every secret flag, its `--<name>-file` companion (aliases too), which is
 * how the command line, `--help` and config files see them.
 */
export function withSecretFiles(defs: FlagDefs): FlagDefs {
  const out: FlagDefs = {};
  for (const [name, d] of Object.entries(defs)) {
    out[name] = d;
    if (d.kind !== "secret" || defs[secretFileFlagName(name)]) continue;
    out[secretFileFlagName(name)] = {
      kind: "string",
      arg: "path",
      help: `read --${name} from this file (first line)`,
      aliases: d.aliases?.map(secretFileFlagName),
      live: d.live,
    };
  }
  return out;
}

interface Raw {
  texts: string[];
  source: ValueSource;
}

const asTexts = (v: ConfigValue | string | boolean | (string | boolean)[]): string[] =>
  (Array.isArray(v) ? v : [v]).map(String);

/** The raw text(s) of flag `name` from the strongest place that has it. */
function pick(name: string, d: FlagDef, input: ResolveInput, warnings: string[]): Raw | undefined {
  const names = [name, ...(d.aliases ?? [])];
  const given = names.filter((n) => {
    const v = input.argv[n];
    return v !== undefined && !(Array.isArray(v) && v.length === 0);
  });
  if (given.length > 1) {
    throw new FlagError(name, `--${given[1]} is an old name of --${name}: give only one`);
  }
  if (given.length === 1) {
    if (given[0] !== name) warnings.push(`--${given[0]} is deprecated: use --${name}`);
    return { texts: asTexts(input.argv[given[0]]!), source: { kind: "flag", name: given[0] } };
  }
  if (d.env) {
    const v = input.env(d.env);
    if (v !== undefined && !(d.multiple && v.trim() === "")) {
      const texts = d.multiple
        ? v.split(d.envSeparator === "comma" ? "," : /\s+/).map((s) => s.trim()).filter(Boolean)
        : [v];
      return { texts, source: { kind: "env", name: d.env } };
    }
  }
  const file = input.file;
  if (file) {
    const keys = names.filter((n) => file.values[n] !== undefined);
    if (keys.length > 1) {
      throw new FlagError(
        name,
        `${file.path}:${file.line(keys[1]) ?? "?"}: key "${keys[1]}" is an old name of ` +
          `"${name}": give only one`,
      );
    }
    if (keys.length === 1) {
      const key = keys[0];
      const line = file.line(key);
      if (key !== name) {
        warnings.push(`${file.path}:${line ?? "?"}: key "${key}" is deprecated: use "${name}"`);
      }
      return {
        texts: asTexts(file.values[key]),
        source: { kind: "file", path: file.path, key, line },
      };
    }
  }
  if (d.default !== undefined) return { texts: [String(d.default)], source: { kind: "default" } };
  return undefined;
}

function parseOne(name: string, d: FlagDef, text: string, source: ValueSource): unknown {
  try {
    return parseFlagValue(d, text);
  } catch (err) {
    if (err instanceof FlagValueError) {
      throw new FlagError(name, `${describeSource(source, name)} ${err.message}`);
    }
    throw err;
  }
}

/**
 * Resolve every flag of `defs` (already expanded with {@linkcode withSecretFiles}) from
 * `input`. Throws {@linkcode FlagError} at the first value that cannot be used.
 *
 * @example
 * ```ts
 * import { resolveFlags } from "./resolve.ts";
 * const defs = { "max-conns": { kind: "int", min: 1, default: "64", help: "", env: "MAX" } } as const;
 * const r = resolveFlags(defs, { argv: {}, env: (n) => n === "MAX" ? "10" : undefined });
 * console.assert(r.values["max-conns"] === 10);
 * ```
 */
export function resolveFlags<S extends FlagDefs>(defs: S, input: ResolveInput): Resolved<S> {
  const values: Record<string, unknown> = {};
  const sources: Record<string, ValueSource> = {};
  const warnings: string[] = [];
  for (const [name, d] of Object.entries(defs)) {
    const raw = pick(name, d, input, warnings);
    sources[name] = raw?.source ?? { kind: "default" };
    if (!raw) {
      values[name] = d.kind === "boolean" ? false : d.multiple ? [] : undefined;
      continue;
    }
    const parsed = raw.texts.map((t) => parseOne(name, d, t, raw.source));
    values[name] = d.multiple ? parsed : parsed[parsed.length - 1];
  }
  for (const [name, d] of Object.entries(defs)) {
    if (d.kind === "secret") {
      const secret = resolveSecretFlag(name, values, sources, input, warnings);
      if (secret && d.min !== undefined && secret.length < d.min) {
        throw new FlagError(
          name,
          `--${name} is ${secret.length} characters: too weak, a shared secret needs at least ` +
            `${d.min} (e.g. openssl rand -hex 16)`,
        );
      }
      values[name] = secret;
    }
  }
  return { values: values as FlagValues<S>, warnings, sources };
}

/**
 * The secret of flag `name`: from its `-file` companion or its own value (an `env:`/`file:`
 * reference or the secret itself), whichever came from the stronger place.
 */
function resolveSecretFlag(
  name: string,
  values: Record<string, unknown>,
  sources: Record<string, ValueSource>,
  input: ResolveInput,
  warnings: string[],
): string | undefined {
  const fileName = secretFileFlagName(name);
  const value = values[name] as string | undefined;
  const path = values[fileName] as string | undefined;
  const src = sources[name], fileSrc = sources[fileName];
  if (value !== undefined && path !== undefined && rank(src) === rank(fileSrc)) {
    throw new FlagError(
      name,
      `${describeSource(src, name)} and ${describeSource(fileSrc, fileName)}: give one, not both`,
    );
  }
  const fromFile = path !== undefined && (value === undefined || rank(fileSrc) > rank(src));
  try {
    if (fromFile) return resolveSecret(`file:${path}`, input.env);
    if (value === undefined) return undefined;
    if (src.kind === "flag" && !value.startsWith("env:") && !value.startsWith("file:")) {
      warnings.push(
        `--${src.name} on the command line is visible to every local user (ps); prefer ` +
          `--${fileName}, an env:VAR reference or its environment variable`,
      );
    }
    return resolveSecret(value, input.env);
  } catch (err) {
    if (err instanceof SecretError) {
      const where = fromFile ? describeSource(fileSrc, fileName) : describeSource(src, name);
      throw new FlagError(name, `${where}: ${err.message}`);
    }
    throw err;
  }
}
