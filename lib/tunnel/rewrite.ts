/**
 * Per-host header rewrites of a tunnel server (frp's `host_header_rewrite` and
 * `requestHeaders.set`, ngrok's `--request-header-add/remove`, and the same for responses):
 * the Host the local app sees, request headers set, added or removed on their way to the
 * client, response headers on their way back. Set on the server's host entry (flags, admin
 * API, state file) or by the client for its hosts in its handshake; the server applies them.
 *
 * Framing and hop-by-hop headers (Content-Length, Transfer-Encoding, Connection, Upgrade, ...)
 * cannot be touched: the tunnel reads bodies by them. Host only through `host`. Header values
 * may be credentials toward the app: the admin API and logs show header names only.
 * @module
 */

import { type HeaderFields, hopByHopFields, parseAuthority } from "../http/mod.ts";

/** Headers set, added and removed, in that order: remove, then set (replaces), then add. */
export interface HeaderRules {
  /** `[name, value]`: every field of that name is replaced by this one. */
  set?: [string, string][];
  /** `[name, value]`: appended, whatever is there. */
  add?: [string, string][];
  /** Names whose fields are dropped. */
  remove?: string[];
}

/** The rewrites of one host, as flags, the admin API, the state file and clients give them. */
export interface HostRewriteSpec {
  /** The Host header the local app sees (`host[:port]`) instead of the public one. */
  host?: string;
  /** Rules for requests on their way to the app. */
  request?: HeaderRules;
  /** Rules for responses on their way to the public client. */
  response?: HeaderRules;
}

/** What the admin API shows of a host's rewrites: header names, no values. */
export interface HostRewriteInfo {
  host?: string;
  request: { set: string[]; add: string[]; remove: string[] };
  response: { set: string[]; add: string[]; remove: string[] };
}

/** A rewrite that cannot be used (names the header, never its value). */
export class RewriteError extends Error {
  override name = "RewriteError";
}

/** Most rules in one list (set, add or remove of requests or responses). */
export const maxRewriteRules = 32;
/** Most bytes of names and values in one host's rules (they travel in a 64 KiB handshake). */
export const maxRewriteBytes = 16 * 1024;
/** Longest header value a rule may set. */
export const maxRewriteValueBytes = 1024;

/** Never touched by a rule: hop-by-hop (RFC 9110 §7.6.1) and the body framing. */
const untouchable = new Set([...hopByHopFields, "content-length"]);

const token = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$/;
/** A field value: visible characters, spaces and tabs inside (no CR, LF or NUL). */
const fieldValue = /^(?:[\x21-\x7e\x80-\xff](?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?$/;

interface CompiledRules {
  /** Lower-case names dropped first: removed ones and set ones. */
  drop: Set<string>;
  /** Fields appended after the drop: set ones, then added ones. */
  append: [string, string][];
  /** The names of each list, for the admin API. */
  names: HostRewriteInfo["request"];
}

interface Step {
  host?: string;
  request: CompiledRules;
  response: CompiledRules;
}

/**
 * Every step's rules of one direction as one (for the byte-level rewrite of a head): step after
 * step, `out = filter(in, drop) ++ append` folds into `filter(in, drops joined) ++ appends`,
 * where each step's drop also filters the appends of the steps before it.
 */
interface FlatRules {
  /** Lower-case names dropped, as bytes (few: a byte compare per field line and name). */
  drop: Uint8Array[];
  /** The fields appended, as `Name: value` CRLF lines. */
  append: Uint8Array;
}

const CR = 0x0d;
const LF = 0x0a;
const COLON = 0x3a;
/** Lower-case names of the X-Forwarded-* fields the fronts add to a request. */
const forwardedNames = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"];

/** `s` as latin-1 bytes (a rule's names and values are checked to be latin-1). */
function latin1(s: string): Uint8Array {
  return Uint8Array.from(s, (c) => c.charCodeAt(0));
}

/** The rules of `steps` in one direction as one {@linkcode FlatRules}. */
function flatten(steps: readonly Step[], where: "request" | "response"): FlatRules {
  const drop = new Set<string>();
  let append: [string, string][] = [];
  for (const s of steps) {
    const r = s[where];
    for (const n of r.drop) drop.add(n);
    append = append.filter(([k]) => !r.drop.has(k.toLowerCase())).concat(r.append);
  }
  return {
    drop: [...drop].map(latin1),
    append: latin1(append.map(([k, v]) => `${k}: ${v}\r\n`).join("")),
  };
}

/** ASCII lower case of each byte (names are tchar: ASCII; `toLowerCase` changes A-Z only). */
const lower = Uint8Array.from({ length: 256 }, (_, c) => c >= 0x41 && c <= 0x5a ? c | 0x20 : c);

/** Whether the field name at `b[at..at+len)` is one of `drop` (lower case), in any case. */
function dropped(b: Uint8Array, at: number, len: number, drop: readonly Uint8Array[]): boolean {
  for (const d of drop) {
    if (d.length !== len) continue;
    let i = 0;
    while (i < len && lower[b[at + i]] === d[i]) i++;
    if (i === len) return true;
  }
  return false;
}

function compileRules(
  rules: HeaderRules | undefined,
  where: "request" | "response",
  budget: { bytes: number },
): CompiledRules {
  const set = pairs(rules?.set, `${where}.set`);
  const add = pairs(rules?.add, `${where}.add`);
  const remove = rules?.remove ?? [];
  if (!Array.isArray(remove) || remove.some((n) => typeof n !== "string")) {
    throw new RewriteError(`${where}.remove must be a list of header names`);
  }
  if (remove.length > maxRewriteRules) {
    throw new RewriteError(`${where}.remove: at most ${maxRewriteRules} names`);
  }
  const check = (name: string, what: string) => {
    if (!token.test(name)) {
      throw new RewriteError(`${what}: ${JSON.stringify(name)} is no header name`);
    }
    const l = name.toLowerCase();
    if (untouchable.has(l)) {
      throw new RewriteError(
        `${what}: ${name} is a framing or hop-by-hop header: it cannot be changed`,
      );
    }
    if (l === "host") throw new RewriteError(`${what}: the Host header is rewritten with "host"`);
    budget.bytes += name.length;
  };
  for (const n of remove) check(n, `${where}.remove`);
  for (const [what, list] of [["set", set], ["add", add]] as const) {
    for (const [n, v] of list) {
      check(n, `${where}.${what}`);
      if (v.length > maxRewriteValueBytes || !fieldValue.test(v)) {
        throw new RewriteError(
          `${where}.${what} ${n}: the value must be printable, no line breaks, ` +
            `at most ${maxRewriteValueBytes} characters`,
        );
      }
      budget.bytes += v.length;
    }
  }
  if (budget.bytes > maxRewriteBytes) {
    throw new RewriteError(`the rules of one host hold at most ${maxRewriteBytes} bytes`);
  }
  return {
    drop: new Set([...remove, ...set.map(([n]) => n)].map((n) => n.toLowerCase())),
    append: [...set, ...add],
    names: { set: set.map(([n]) => n), add: add.map(([n]) => n), remove: [...remove] },
  };
}

/** `[name, value]` pairs from a list of pairs or an object (`{name: value}`). */
function pairs(v: unknown, what: string): [string, string][] {
  if (v === undefined) return [];
  const list = Array.isArray(v)
    ? v
    : typeof v === "object" && v !== null
    ? Object.entries(v)
    : undefined;
  if (
    !list || list.length > maxRewriteRules ||
    list.some((p) =>
      !Array.isArray(p) || p.length !== 2 || typeof p[0] !== "string" || typeof p[1] !== "string"
    )
  ) {
    throw new RewriteError(
      `${what} must be {name: value} or [[name, value], \u2026], at most ${maxRewriteRules}`,
    );
  }
  return (list as [string, string][]).map(([n, val]) => [n, ows(val)]);
}

/** `s` without the spaces and tabs around it (a line break stays, and is refused). */
function ows(s: string): string {
  return s.replace(/^[ \t]+|[ \t]+$/g, "");
}

function applyRules(headers: HeaderFields, r: CompiledRules): HeaderFields {
  const out = r.drop.size ? headers.filter(([k]) => !r.drop.has(k.toLowerCase())) : [...headers];
  for (const f of r.append) out.push(f);
  return out;
}

/** `host`, lower case, as bytes (the Host rewrite's field). */
const hostName = [latin1("host")];

/**
 * Copy the field lines of a head written as a serialiser writes it (`name: value` CRLF, no
 * CR inside a line) from `b[from..to)` into `out` at `o`, without the fields `drop` names and
 * with `host` as the value of a Host field when given; returns the end in `out`.
 */
function copyFields(
  b: Uint8Array,
  from: number,
  to: number,
  out: Uint8Array,
  o: number,
  drop: readonly Uint8Array[],
  host: Uint8Array | undefined,
): number {
  for (let i = from; i < to;) {
    let colon = i;
    while (colon < to && b[colon] !== COLON) colon++;
    let end = colon;
    while (end < to && b[end] !== CR) end++;
    end = Math.min(end + 2, to); // past the CRLF
    if (host && colon - i === 4 && dropped(b, i, 4, hostName)) {
      out.set(b.subarray(i, colon + 2), o); // the name as written, ": "
      o += colon + 2 - i;
      out.set(host, o);
      o += host.length;
      out[o++] = CR;
      out[o++] = LF;
    } else if (!dropped(b, i, colon - i, drop)) {
      out.set(b.subarray(i, end), o);
      o += end - i;
    }
    i = end;
  }
  return o;
}

/**
 * `bytes` (a response head of `headLength` bytes written as `serializeResponseHead` writes one,
 * then whatever follows it) with the head's fields named in `drop` left out and `append` (field
 * lines) added after the others; what follows the head comes after the new head unchanged.
 */
function rewriteResponseBytes(
  bytes: Uint8Array,
  headLength: number,
  drop: readonly Uint8Array[],
  append: Uint8Array,
): Uint8Array {
  const out = new Uint8Array(bytes.length + append.length);
  const start = firstLineEnd(bytes);
  out.set(bytes.subarray(0, start));
  let o = copyFields(bytes, start, headLength - 2, out, start, drop, undefined);
  out.set(append, o);
  o += append.length;
  out[o++] = CR;
  out[o++] = LF;
  out.set(bytes.subarray(headLength), o);
  return out.subarray(0, o + bytes.length - headLength);
}

/** `connection`, lower case, as bytes. */
const connectionName = [latin1("connection")];
/** The field line a response gets when its public connection ends after it. */
const closeLine = latin1("Connection: close\r\n");
/** `close`, lower case, as bytes. */
const closeToken = latin1("close");

/**
 * A response whose public connection ends after it while its stream is kept (the standalone
 * front took the request's `close` option out, see {@linkcode withoutCloseBytes}), made at
 * byte level: `bytes` starts with a head of `headLength` bytes written as
 * `serializeResponseHead` writes one (as `scanResponseHead` accepts it), which loses its
 * Connection fields and gets `Connection: close` as its last field; its body follows unchanged.
 * The head's bytes are those `serializeResponseHead` gives for the parsed head with the same
 * change made to its field list (front_http.ts `rewritten`), without a field list or a string.
 */
export function closingResponseBytes(bytes: Uint8Array, headLength: number): Uint8Array {
  return rewriteResponseBytes(bytes, headLength, connectionName, closeLine);
}

/**
 * A request head's bytes without its `close` connection option, made at byte level: `fields`
 * is a head written as `serializeRequestHead` writes one, up to and with its last field line
 * (no empty line: `forwardHeadParts`' first piece). Its Connection fields are left out when
 * each holds just `close` (any case): the bytes `serializeRequestHead` gives for the parsed
 * head's fields after `withoutCloseOption`, followed by `tail` when given (the X-Forwarded-*
 * lines and the empty line: then the whole head, in one array). Undefined when a Connection
 * field holds anything else (the caller then goes the field-list way).
 */
export function withoutCloseBytes(
  fields: Uint8Array,
  tail?: Uint8Array,
): Uint8Array | undefined {
  const start = firstLineEnd(fields);
  for (let i = start; i < fields.length;) {
    let colon = i;
    while (colon < fields.length && fields[colon] !== COLON) colon++;
    let end = colon;
    while (end < fields.length && fields[end] !== CR) end++;
    if (
      dropped(fields, i, colon - i, connectionName) &&
      !(end - colon - 2 === closeToken.length &&
        dropped(fields, colon + 2, closeToken.length, [closeToken]))
    ) return undefined;
    i = end + 2;
  }
  const out = new Uint8Array(fields.length + (tail?.length ?? 0));
  out.set(fields.subarray(0, start));
  let o = copyFields(fields, start, fields.length, out, start, connectionName, undefined);
  if (tail) {
    out.set(tail, o);
    o += tail.length;
  }
  return out.subarray(0, o);
}

/** The end of the first line of `b` (past its CRLF). */
function firstLineEnd(b: Uint8Array): number {
  const cr = b.indexOf(CR);
  return cr < 0 ? b.length : cr + 2;
}

/** One host's compiled rewrites (or, see {@linkcode HostRewrite.then}, several in a row). */
export class HostRewrite {
  readonly #steps: Step[];
  /** Every step's request rules as one, for {@linkcode requestBytes}. */
  readonly #request: FlatRules;
  /** Every step's response rules as one, for {@linkcode responseBytes}. */
  readonly #response: FlatRules;
  /** The Host value the app gets (the last step's that sets one), as bytes. */
  readonly #host: Uint8Array | undefined;
  /** Whether a request rule drops an X-Forwarded-* field (then no {@linkcode requestBytes}). */
  readonly #dropsForwarded: boolean;
  /** Whether responses are rewritten (the fast front then parses them). */
  readonly rewritesResponse: boolean;

  /** Check and compile `spec`; throws {@linkcode RewriteError} naming the bad rule. */
  constructor(spec: HostRewriteSpec, steps?: Step[]) {
    if (steps) {
      this.#steps = steps;
    } else {
      if (typeof spec !== "object" || spec === null) {
        throw new RewriteError("rewrites must be {host?, request?, response?}");
      }
      const budget = { bytes: 0 };
      let host: string | undefined;
      if (spec.host !== undefined) {
        host = typeof spec.host === "string" ? spec.host.trim() : "";
        try {
          if (!/^[A-Za-z0-9.:[\]_-]{1,255}$/.test(host)) throw new Error("bad characters");
          parseAuthority(host, 80);
        } catch {
          throw new RewriteError(`host must be host[:port], got ${JSON.stringify(spec.host)}`);
        }
      }
      const step = {
        host,
        request: compileRules(spec.request, "request", budget),
        response: compileRules(spec.response, "response", budget),
      };
      if (step.host === undefined && !rulesAny(step.request) && !rulesAny(step.response)) {
        throw new RewriteError("rewrites need host, request or response rules");
      }
      this.#steps = [step];
    }
    this.rewritesResponse = this.#steps.some((s) => rulesAny(s.response));
    this.#request = flatten(this.#steps, "request");
    this.#response = flatten(this.#steps, "response");
    const host = this.#steps.findLast((s) => s.host !== undefined)?.host;
    this.#host = host === undefined ? undefined : latin1(host);
    this.#dropsForwarded = this.#steps.some((s) =>
      forwardedNames.some((n) => s.request.drop.has(n))
    );
  }

  /** These rewrites, then `next`'s (which win where both touch a header). */
  then(next: HostRewrite | undefined): HostRewrite {
    return next ? new HostRewrite({}, [...this.#steps, ...next.#steps]) : this;
  }

  /** A request's header fields (one Host among them) as the local app gets them. */
  request(headers: HeaderFields): HeaderFields {
    let out = headers;
    for (const s of this.#steps) {
      if (s.host !== undefined) {
        const host = s.host;
        out = out.map((f) => f[0].toLowerCase() === "host" ? [f[0], host] : f);
      }
      out = applyRules(out, s.request);
    }
    return out;
  }

  /** A response's header fields as the public client gets them. */
  response(headers: HeaderFields): HeaderFields {
    let out = headers;
    for (const s of this.#steps) out = applyRules(out, s.response);
    return out;
  }

  /**
   * {@linkcode request}'s head as bytes, made at byte level: `fields` is a request head written
   * as `serializeRequestHead` writes one, up to and with its last field line (no empty line),
   * and `forwarded` the X-Forwarded-* lines and the empty line to add (see `forwardHeadParts`).
   * The same bytes as `serializeRequestHead` of the parsed head with {@linkcode request} of
   * `forwardHeaders`' fields, without a field list or a string. Undefined when a rule drops an
   * X-Forwarded-* field (the caller serialises the fields then).
   */
  requestBytes(fields: Uint8Array, forwarded: Uint8Array): Uint8Array | undefined {
    if (this.#dropsForwarded) return undefined;
    const { drop, append } = this.#request;
    const host = this.#host;
    const out = new Uint8Array(
      fields.length + (host?.length ?? 0) + forwarded.length + append.length,
    );
    const start = firstLineEnd(fields);
    out.set(fields.subarray(0, start));
    let o = copyFields(fields, start, fields.length, out, start, drop, host);
    out.set(forwarded.subarray(0, forwarded.length - 2), o); // its lines, not the empty one
    o += forwarded.length - 2;
    out.set(append, o);
    o += append.length;
    out[o++] = CR;
    out[o++] = LF;
    return out.subarray(0, o);
  }

  /**
   * A response with {@linkcode response}'s rules applied to its head, made at byte level: `bytes`
   * starts with a head of `headLength` bytes written as `serializeResponseHead` writes one (as
   * `scanResponseHead` accepts it); the bytes after the head (its body) follow the new head
   * unchanged. The head's bytes are those `serializeResponseHead` gives for the parsed head with
   * {@linkcode response}'s fields, without a field list or a string.
   */
  responseBytes(bytes: Uint8Array, headLength: number): Uint8Array {
    const { drop, append } = this.#response;
    return rewriteResponseBytes(bytes, headLength, drop, append);
  }

  /** The rewrites without header values (of the first step: a chain is never shown). */
  info(): HostRewriteInfo {
    const s = this.#steps[0];
    return {
      ...(s.host === undefined ? {} : { host: s.host }),
      request: s.request.names,
      response: s.response.names,
    };
  }
}

function rulesAny(r: CompiledRules): boolean {
  return r.drop.size > 0 || r.append.length > 0;
}

/**
 * One `--host-rewrite` value: `vhost=host:HOST[:PORT]`, `vhost=req-set:Name:value`,
 * `vhost=req-add:Name:value`, `vhost=req-remove:Name` and the same with `res-` for responses
 * (repeat the flag to combine); returns the host and the rule, to merge with
 * {@linkcode mergeRewriteSpecs}.
 */
export function parseHostRewriteFlag(value: string): [string, HostRewriteSpec] {
  const m = /^([^=]+)=(host|req-set|req-add|req-remove|res-set|res-add|res-remove):(.+)$/.exec(
    value,
  );
  if (!m) {
    throw new RewriteError(
      "--host-rewrite must be vhost=host:HOST[:PORT], vhost=req-set|req-add|res-set|res-add:" +
        "Name:value or vhost=req-remove|res-remove:Name",
    );
  }
  const [, vhost, kind, rest] = m;
  if (kind === "host") return [vhost, { host: rest }];
  const where = kind.startsWith("req-") ? "request" : "response";
  const action = kind.slice(4) as "set" | "add" | "remove";
  return [vhost, { [where]: headerRule(action, rest, `--host-rewrite ${kind}`) }];
}

/**
 * One rule as tunnel-client's flags write it: `Name: value` (also `Name:value`) for set and
 * add, `Name` for remove.
 */
export function headerRule(
  action: "set" | "add" | "remove",
  text: string,
  what: string,
): HeaderRules {
  if (action === "remove") return { remove: [ows(text)] };
  const i = text.indexOf(":");
  if (i <= 0) throw new RewriteError(`${what} must be Name:value`);
  return { [action]: [[ows(text.slice(0, i)), ows(text.slice(i + 1))]] };
}

/** Two specs of one host as one (lists concatenated; the later `host` wins). */
export function mergeRewriteSpecs(a: HostRewriteSpec, b: HostRewriteSpec): HostRewriteSpec {
  const rules = (x?: HeaderRules, y?: HeaderRules): HeaderRules | undefined =>
    x || y
      ? {
        set: [...x?.set ?? [], ...y?.set ?? []],
        add: [...x?.add ?? [], ...y?.add ?? []],
        remove: [...x?.remove ?? [], ...y?.remove ?? []],
      }
      : undefined;
  const request = rules(a.request, b.request);
  const response = rules(a.response, b.response);
  const host = b.host ?? a.host;
  return {
    ...(host === undefined ? {} : { host }),
    ...(request ? { request } : {}),
    ...(response ? { response } : {}),
  };
}
