/**
 * Small hand-written schema checkers for control messages: each checker validates one
 * untrusted JSON value and returns it typed, or throws a {@linkcode SchemaError} naming the
 * offending field. No dependency, no reflection: a message's schema is a plain object of
 * checkers, and its TypeScript type is inferred from it.
 * @module
 */

import { ProtocolError } from "../net/errors.ts";

/** A received value did not match its schema; `field` names the first offending path. */
export class SchemaError extends ProtocolError {
  /** Error class name. */
  override name = "SchemaError";
  /** `field` (a path like `a.b[2]`) failed with `message`. */
  constructor(readonly field: string, message: string) {
    super(`${field}: ${message}`, "schema");
  }
}

/** Validates one untrusted value at `path` and returns it typed; throws `SchemaError`. */
export interface Check<T> {
  (value: unknown, path: string): T;
  /** Set on checkers made by {@linkcode optional}: the field may be absent. */
  readonly optional?: true;
}

/** A checker for a field that may be absent (or `null`, read as absent). */
export type OptionalCheck<T> = Check<T | undefined> & { readonly optional: true };

/** The type a checker produces. */
export type Infer<C> = C extends Check<infer T> ? T : never;

/** An object schema: field name to checker. */
export type Shape = Record<string, Check<unknown>>;

type OptionalKeys<S extends Shape> = {
  [K in keyof S]: S[K] extends { readonly optional: true } ? K : never;
}[keyof S];
type RequiredKeys<S extends Shape> = Exclude<keyof S, OptionalKeys<S>>;
type Simplify<T> = { [K in keyof T]: T[K] } & unknown;

/** The object type an object schema produces (optional checkers give optional keys). */
export type InferShape<S extends Shape> = Simplify<
  & { [K in RequiredKeys<S>]: Infer<S[K]> }
  & { [K in OptionalKeys<S>]?: Exclude<Infer<S[K]>, undefined> }
>;

/** Options of {@linkcode str}. */
export interface StrOptions {
  /** Shortest accepted string in UTF-16 code units. @default 0 */
  minLength?: number;
  /** Longest accepted string in UTF-16 code units. @default 1024 */
  maxLength?: number;
  /** When set, the whole string must match. */
  pattern?: RegExp;
}

/** A string, bounded in length (so a peer cannot make us keep huge strings). */
export function str(opts: StrOptions = {}): Check<string> {
  const min = opts.minLength ?? 0;
  const max = opts.maxLength ?? 1024;
  return (v, path) => {
    if (typeof v !== "string") throw new SchemaError(path, "expected a string");
    if (v.length < min) throw new SchemaError(path, `shorter than ${min}`);
    if (v.length > max) throw new SchemaError(path, `longer than ${max}`);
    if (opts.pattern && !opts.pattern.test(v)) {
      throw new SchemaError(path, `does not match ${opts.pattern}`);
    }
    return v;
  };
}

/** Options of {@linkcode int} and {@linkcode num}. */
export interface NumOptions {
  /** Smallest accepted value. @default -Number.MAX_SAFE_INTEGER */
  min?: number;
  /** Largest accepted value. @default Number.MAX_SAFE_INTEGER */
  max?: number;
}

/** A finite number within bounds. */
export function num(opts: NumOptions = {}): Check<number> {
  const min = opts.min ?? -Number.MAX_SAFE_INTEGER;
  const max = opts.max ?? Number.MAX_SAFE_INTEGER;
  return (v, path) => {
    if (typeof v !== "number" || !Number.isFinite(v)) {
      throw new SchemaError(path, "expected a finite number");
    }
    if (v < min || v > max) throw new SchemaError(path, `out of range [${min}, ${max}]`);
    return v;
  };
}

/** An integer within bounds (safe integers only). */
export function int(opts: NumOptions = {}): Check<number> {
  const inner = num(opts);
  return (v, path) => {
    const n = inner(v, path);
    if (!Number.isSafeInteger(n)) throw new SchemaError(path, "expected an integer");
    return n;
  };
}

/** A boolean. */
export function bool(): Check<boolean> {
  return (v, path) => {
    if (typeof v !== "boolean") throw new SchemaError(path, "expected a boolean");
    return v;
  };
}

/** One of the given string literals. */
export function oneOf<const L extends readonly string[]>(...values: L): Check<L[number]> {
  return (v, path) => {
    if (typeof v !== "string" || !values.includes(v)) {
      throw new SchemaError(path, `expected one of ${values.join(", ")}`);
    }
    return v as L[number];
  };
}

/** An array of at most `maxItems` elements, each checked. */
export function arrayOf<T>(item: Check<T>, maxItems = 256): Check<T[]> {
  return (v, path) => {
    if (!Array.isArray(v)) throw new SchemaError(path, "expected an array");
    if (v.length > maxItems) throw new SchemaError(path, `more than ${maxItems} items`);
    return v.map((x, i) => item(x, `${path}[${i}]`));
  };
}

/** A field that may be absent; `null` counts as absent. */
export function optional<T>(inner: Check<T>): OptionalCheck<T> {
  const check = (v: unknown, path: string): T | undefined =>
    v === undefined || v === null ? undefined : inner(v, path);
  return Object.assign(check, { optional: true as const });
}

/** Whether `v` is a plain JSON object (not null, not an array). */
export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Check every field of `shape` in `value`. Unknown fields are dropped, not rejected, so a
 * newer peer may add optional fields without a version bump.
 */
export function checkShape<S extends Shape>(
  shape: S,
  value: unknown,
  path = "",
): InferShape<S> {
  if (!isRecord(value)) throw new SchemaError(path || "message", "expected an object");
  const out: Record<string, unknown> = {};
  for (const [key, check] of Object.entries(shape)) {
    const got = check(
      Object.hasOwn(value, key) ? value[key] : undefined,
      path ? `${path}.${key}` : key,
    );
    if (got !== undefined) out[key] = got;
  }
  return out as InferShape<S>;
}

/** A nested object field. */
export function object<S extends Shape>(shape: S): Check<InferShape<S>> {
  return (v, path) => checkShape(shape, v, path);
}
