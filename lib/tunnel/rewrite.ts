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

/** One host's compiled rewrites (or, see {@linkcode HostRewrite.then}, several in a row). */
export class HostRewrite {
  readonly #steps: Step[];
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
