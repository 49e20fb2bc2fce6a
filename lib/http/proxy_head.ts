/**
 * The HTTP proxy's rewriting of message heads for the next hop (RFC 9110 §7.6.1): what the
 * `Connection` fields say, which fields go on, and the head written in one buffer -- kept
 * fields copied in runs from the bytes as they came when those are known to be exactly
 * `name: value` lines, with the first body piece behind it so a small response is one write.
 * One pass over the fields each: this runs once per proxied request and response.
 * @module
 */

import { fieldNameIs, type HeaderFields, putLatin1 } from "./head.ts";

/** What the hop-by-hop fields of a head say, read in one pass over its fields. */
export interface HopFacts {
  /** A `close` option (in `Connection`, or `Proxy-Connection` when asked for). */
  close: boolean;
  /** A `keep-alive` option (same fields). */
  keepAlive: boolean;
  /** An `upgrade` option (same fields). */
  upgrade: boolean;
  /** The options of the `Connection` fields, lower-cased: fields the next hop must not see. */
  connection: string[];
  /** The options of the `Proxy-Connection` fields (empty unless asked for). */
  proxyConnection: string[];
  /** Whether a `Transfer-Encoding` field names a coding. */
  transferCoded: boolean;
}

/** The comma-separated tokens of `value`, lower-cased, pushed onto `out`. */
function pushTokens(value: string, out: string[]): void {
  for (const part of value.split(",")) {
    const t = part.trim().toLowerCase();
    if (t !== "") out.push(t);
  }
}

/**
 * The {@linkcode HopFacts} of `headers`; with `proxyConnection`, a client's non-standard
 * `Proxy-Connection` fields count like `Connection` ones.
 */
export function hopFacts(headers: HeaderFields, proxyConnection: boolean): HopFacts {
  const connection: string[] = [];
  const proxy: string[] = [];
  let transferCoded = false;
  for (const [k, v] of headers) {
    if (fieldNameIs(k, "connection")) pushTokens(v, connection);
    else if (proxyConnection && fieldNameIs(k, "proxy-connection")) pushTokens(v, proxy);
    else if (!transferCoded && fieldNameIs(k, "transfer-encoding")) {
      transferCoded = /[^,\s]/.test(v);
    }
  }
  const has = (t: string) => connection.includes(t) || proxy.includes(t);
  return {
    close: has("close"),
    keepAlive: has("keep-alive"),
    upgrade: has("upgrade"),
    connection,
    proxyConnection: proxy,
    transferCoded,
  };
}

/** No names: what `FieldNames.with` leaves out by default. */
const noNames: ReadonlySet<string> = new Set();

/**
 * Whether a field named `name` is to be dropped: a set of lower-case names with a mask of
 * their lengths, so most fields are passed without lower-casing their names.
 */
export class FieldNames {
  readonly #names = new Set<string>();
  /** Bit n set: some name has length n (names of 31 or more characters share bit 31). */
  #lengths = 0;

  /** A set of the lower-case `names`. */
  constructor(names: Iterable<string> = []) {
    for (const n of names) {
      this.#names.add(n);
      this.#lengths |= 1 << Math.min(n.length, 31);
    }
  }

  /**
   * This set with the lower-case names of `more` not in `except` added (itself when it holds
   * them all already, the usual case: the options of a `Connection` field are hop-by-hop
   * names or `close`).
   */
  with(more: readonly string[], except: ReadonlySet<string> = noNames): FieldNames {
    const add = more.filter((n) => !except.has(n) && !this.#names.has(n));
    return add.length === 0 ? this : new FieldNames([...this.#names, ...add]);
  }

  /** Whether the set holds `name`, ignoring case. */
  has(name: string): boolean {
    if ((this.#lengths & (1 << Math.min(name.length, 31))) === 0) return false;
    return this.#names.has(name) || this.#names.has(name.toLowerCase());
  }
}

/** Bytes of one `name: value` CRLF line. */
function fieldBytes(k: string, v: string): number {
  return k.length + v.length + 4;
}

/** A head to write for the next hop; see {@linkcode buildHead}. */
export interface HeadPlan {
  /** The start line without its CRLF; undefined: the start line of `raw`, as it came. */
  start?: string;
  /** The fields as received. */
  fields: HeaderFields;
  /**
   * The head's bytes as received, when every line of it was exactly `name: value` CRLF (see
   * `readResponseHeadRaw`): kept fields are then copied from it instead of re-encoded.
   */
  raw?: Uint8Array;
  /** Which received fields to leave out. */
  drop: FieldNames;
  /** When set, the first field named Host gets this value (later ones are dropped). */
  host?: string;
  /** Fields the proxy adds at the end (after a Host it had to add). */
  extra: HeaderFields;
  /**
   * Bytes left free behind the head, for a first body piece to go out in the same write.
   * @default 0
   */
  room?: number;
}

/** Where {@linkcode buildHead} notes what becomes of each field (reused: it never awaits). */
let marks = new Uint8Array(128);

/**
 * The head of `plan` as bytes, then `plan.room` free bytes: the start line, the received
 * fields `drop` does not name (Host rewritten or added when `host` is set), the `extra`
 * fields, the empty line. The bytes go into `alloc(n)` (a pooled buffer; it may be longer:
 * the result is a view of its first n bytes). Throws HttpError for a character above U+00FF
 * in a value of ours.
 */
export function buildHead(
  plan: HeadPlan,
  alloc: (n: number) => Uint8Array = (n) => new Uint8Array(n),
): Uint8Array {
  const { fields, raw, drop, host, extra } = plan;
  if (plan.start === undefined && raw === undefined) throw new TypeError("no start line");
  // Field i of a canonical `raw` starts where the lengths of the ones before it end.
  let fieldsBytes = 0;
  for (const [k, v] of fields) fieldsBytes += fieldBytes(k, v);
  const rawFieldsAt = raw ? raw.length - 2 - fieldsBytes : 0;
  // What becomes of each field: dropped, kept, or (the first Host) given `host`.
  if (marks.length < fields.length) marks = new Uint8Array(fields.length * 2);
  const what = marks.fill(0, 0, fields.length);
  let hostAt = -1;
  let n = plan.start === undefined ? rawFieldsAt : plan.start.length + 2;
  for (let i = 0; i < fields.length; i++) {
    const [k, v] = fields[i];
    if (drop.has(k)) continue;
    if (host !== undefined && fieldNameIs(k, "host")) {
      if (hostAt >= 0) continue; // a second Host: the target's authority is the only one
      hostAt = i;
      what[i] = rewrite;
      n += fieldBytes(k, host);
    } else {
      what[i] = kept;
      n += fieldBytes(k, v);
    }
  }
  if (host !== undefined && hostAt < 0) n += fieldBytes("Host", host);
  for (const [k, v] of extra) n += fieldBytes(k, v);
  n += 2 + (plan.room ?? 0);

  const out = alloc(n).subarray(0, n);
  let o = 0;
  if (plan.start === undefined) {
    out.set(raw!.subarray(0, rawFieldsAt));
    o = rawFieldsAt;
  } else {
    o = putLine(out, 0, plan.start);
  }
  // Runs of kept fields of `raw` are copied whole; the others are written field by field.
  let at = rawFieldsAt;
  let runStart = -1;
  for (let i = 0; i < fields.length; i++) {
    const [k, v] = fields[i];
    if (what[i] === kept && raw) {
      if (runStart < 0) runStart = at;
    } else {
      if (runStart >= 0) {
        out.set(raw!.subarray(runStart, at), o);
        o += at - runStart;
        runStart = -1;
      }
      if (what[i] === kept) o = putField(out, o, k, v);
      else if (what[i] === rewrite) o = putField(out, o, k, host!);
    }
    at += fieldBytes(k, v);
  }
  if (runStart >= 0) {
    out.set(raw!.subarray(runStart, at), o);
    o += at - runStart;
  }
  if (host !== undefined && hostAt < 0) o = putField(out, o, "Host", host);
  for (const [k, v] of extra) o = putField(out, o, k, v);
  out[o++] = 0x0d;
  out[o] = 0x0a;
  return out;
}

/** Marks of {@linkcode buildHead}'s fields (0: dropped). */
const kept = 1;
const rewrite = 2;

/** `s` CRLF at `o`; returns the end. */
function putLine(out: Uint8Array, o: number, s: string): number {
  o = putLatin1(out, o, s);
  out[o++] = 0x0d;
  out[o++] = 0x0a;
  return o;
}

/** `k: v` CRLF at `o`; returns the end. */
function putField(out: Uint8Array, o: number, k: string, v: string): number {
  o = putLatin1(out, o, k);
  out[o++] = 0x3a;
  out[o++] = 0x20;
  return putLine(out, o, v);
}
