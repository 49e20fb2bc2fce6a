/**
 * What both tunnel fronts (the standalone fast path, front_http.ts, and the embeddable Hono
 * app, app.ts) do the same way: the X-Forwarded-* fields, the local port a Host names, the
 * request target and Host checks, the error pages the tunnel answers itself, and on the
 * control path the identifier a client presents and how a refusal is answered. Neither
 * front imports the other; both import this.
 * @module
 */

import {
  fieldNameIs,
  HttpError,
  parseAbsoluteTarget,
  parseAuthority,
  putLatin1,
  type RequestHead,
} from "../http/mod.ts";
import { identifierHeader } from "./protocol.ts";
import { hostPort, normalizeHost } from "./registry.ts";
import type { Admission } from "./server.ts";

/** Who is on the other end of a public connection. */
export interface PeerInfo {
  /** Remote IP (no port). */
  ip: string;
  /** `ip:port`, for logs. */
  remote: string;
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** The short HTML page of an error the tunnel answers itself. */
export function errorPage(status: number, host: string): string {
  const h = escapeHtml(host || "(none)");
  const text: Record<number, string> = {
    400: "The request is malformed.",
    401: `<b>${h}</b> needs credentials.`,
    403: `Your address may not reach <b>${h}</b>.`,
    404: `No tunnel is registered for host <b>${h}</b>.`,
    502: `The tunnel client for <b>${h}</b> is not connected or cannot reach its local service.`,
    503: `Where the tunnel client for <b>${h}</b> is cannot be told now: retry shortly.`,
    504: `The tunnel client for <b>${h}</b> did not answer in time.`,
  };
  return `<!doctype html><title>${status}</title><h1>${status}</h1><p>${
    text[status] ?? "Error."
  }</p>\n`;
}

/** The header list forwarded to the client: X-Forwarded-* added, Host kept. */
export function forwardHeaders(
  head: RequestHead,
  peer: PeerInfo,
  proto: string,
  trust: boolean,
): [string, string][] {
  const out: [string, string][] = [];
  let xff: string | undefined;
  let xfp: string | undefined;
  let xfh: string | undefined;
  let host = "";
  for (const [k, v] of head.headers) {
    if (fieldNameIs(k, "x-forwarded-for")) xff = xff ? `${xff}, ${v}` : v;
    else if (fieldNameIs(k, "x-forwarded-proto")) xfp ??= v;
    else if (fieldNameIs(k, "x-forwarded-host")) xfh ??= v;
    else {
      if (fieldNameIs(k, "host")) host = v;
      out.push([k, v]);
    }
  }
  out.push(["X-Forwarded-For", trust && xff ? `${xff}, ${peer.ip}` : peer.ip]);
  out.push(["X-Forwarded-Proto", trust && xfp ? xfp : proto]);
  out.push(["X-Forwarded-Host", trust && xfh ? xfh : host]);
  return out;
}

const latin1 = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0));
const xffName = latin1("X-Forwarded-For: ");
const xfpName = latin1("\r\nX-Forwarded-Proto: ");
const xfhName = latin1("\r\nX-Forwarded-Host: ");

/**
 * The bytes `serializeRequestHead` would give for `head` with {@linkcode forwardHeaders}' fields,
 * built by splicing X-Forwarded-* into `raw`, the head's own bytes (which must serialise back
 * to themselves: see `RawRequestHead`), instead of writing every field again. Undefined when
 * the head has an X-Forwarded-* field of its own (forwardHeaders moves or merges those: the
 * caller serialises then). The result is a new array: `raw` may be reused once this returns.
 */
export function forwardHeadBytes(
  raw: Uint8Array,
  head: RequestHead,
  peer: PeerInfo,
  proto: string,
): Uint8Array | undefined {
  const parts = forwardHeadParts(raw, head, peer, proto);
  return parts && joinParts(parts);
}

/**
 * {@linkcode forwardHeadBytes} in two pieces, neither copied: `raw` up to its closing empty
 * line (a view, valid as long as `raw`), then the X-Forwarded-* lines with the empty line
 * (shared: copy it, never change it). A writer that gathers bytes copies both where they go.
 */
export function forwardHeadParts(
  raw: Uint8Array,
  head: RequestHead,
  peer: PeerInfo,
  proto: string,
): [Uint8Array, Uint8Array] | undefined {
  let host = "";
  for (const [k, v] of head.headers) {
    if (k.length < 15) {
      if (fieldNameIs(k, "host")) host = v;
    } else if (
      fieldNameIs(k, "x-forwarded-for") || fieldNameIs(k, "x-forwarded-proto") ||
      fieldNameIs(k, "x-forwarded-host")
    ) return undefined;
  }
  // raw ends with the empty line's CRLF: the fields go before it, each with its own CRLF.
  return [raw.subarray(0, raw.length - 2), forwardedFields(peer.ip, proto, host)];
}

/** The two pieces of {@linkcode forwardHeadParts} as one new array. */
export function joinParts([a, b]: [Uint8Array, Uint8Array]): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** The last {@linkcode forwardedFields} made, and what it was made of. */
let lastFields = { ip: "", proto: "", host: "", bytes: new Uint8Array(0) };

/**
 * The X-Forwarded-* field lines and the head's closing empty line for one client address,
 * scheme and Host. The last one made is kept: a kept-alive connection (and a busy host) sends
 * the same three values request after request, and three string compares cost less than
 * writing the lines again byte by byte. The result is shared: only ever copied, never changed.
 */
function forwardedFields(ip: string, proto: string, host: string): Uint8Array {
  const last = lastFields;
  if (last.ip === ip && last.proto === proto && last.host === host) return last.bytes;
  const out = new Uint8Array(
    xffName.length + ip.length + xfpName.length + proto.length + xfhName.length + host.length + 4,
  );
  out.set(xffName);
  let o = putLatin1(out, xffName.length, ip);
  out.set(xfpName, o);
  o = putLatin1(out, o + xfpName.length, proto);
  out.set(xfhName, o);
  o = putLatin1(out, o + xfhName.length, host);
  out[o] = 0x0d, out[o + 1] = 0x0a, out[o + 2] = 0x0d, out[o + 3] = 0x0a;
  lastFields = { ip, proto, host, bytes: out };
  return out;
}

/** The ControlMsg localPort for a Host header: its port, unless it is our own public port. */
export function localPortOf(hostHeader: string, publicPort?: number): string {
  const p = hostPort(hostHeader);
  return p !== "" && publicPort !== undefined && Number(p) === publicPort ? "" : p;
}

/** A request as the standalone front routes it: its Host and its target in origin form. */
export interface RoutedTarget {
  /** The Host field value (what the client's local port is read from). */
  hostHeader: string;
  /** The virtual host (lower case, no port). */
  vhost: string;
  /** The head to forward: origin-form target. */
  head: RequestHead;
}

/**
 * Check the Host and request target of a request the front received (RFC 9112 §3.2):
 * exactly one Host field, a valid `host[:port]` (numeric port); an absolute-form target
 * must name the same authority as Host and is rewritten to origin form, so the app never
 * routes by an authority the tunnel did not. Throws HttpError (answered 400).
 */
export function routedTarget(head: RequestHead): RoutedTarget {
  let hostHeader: string | undefined;
  for (const [k, v] of head.headers) {
    if (!fieldNameIs(k, "host")) continue;
    if (hostHeader !== undefined) throw new HttpError("more than one Host field");
    hostHeader = v.trim();
  }
  if (hostHeader === undefined || hostHeader === "") throw new HttpError("missing Host header");
  const vhost = checkedHost(hostHeader);
  if (head.target.startsWith("/") || head.target === "*") {
    return { hostHeader, vhost, head };
  }
  const target = parseAbsoluteTarget(head.target);
  // A Host without a port means the scheme's default port, as the target's authority does.
  const hostPortNumber = Number(hostPort(hostHeader) || target.dest.port);
  if (normalizeHost(target.authority) !== vhost || hostPortNumber !== target.dest.port) {
    throw new HttpError("request target names another authority than Host");
  }
  return { hostHeader, vhost, head: { ...head, target: target.path } };
}

/** The last Host value {@linkcode checkedHost} accepted, and its virtual host. */
let lastHost = { header: "", vhost: "" };

/**
 * The virtual host of a Host field value, or HttpError when it is not a valid `host[:port]`
 * (numeric port in range). The last value accepted is kept (the check is a function of the
 * value alone): a kept-alive connection and a busy host repeat it, and a compare costs less
 * than the check's regular expressions, slices and lower-casing.
 */
function checkedHost(hostHeader: string): string {
  if (hostHeader === lastHost.header) return lastHost.vhost;
  parseAuthority(hostHeader, 80); // a port, when written, is numeric and in range
  const vhost = normalizeHost(hostHeader);
  if (!vhost) throw new HttpError(`bad Host ${JSON.stringify(hostHeader)}`);
  lastHost = { header: hostHeader, vhost };
  return vhost;
}

/** The token of an `Authorization: Bearer ...` value, or undefined. */
export function bearerToken(authorization: string | null | undefined): string | undefined {
  return authorization?.toLowerCase().startsWith("bearer ")
    ? authorization.slice(7).trim()
    : undefined;
}

/**
 * The identifier a tunnel client presents on the control path: `X-Tunnel-Identifier`, else
 * an `Authorization: Bearer` token. `header` reads one request header.
 */
export function presentedIdentifier(
  header: (name: string) => string | null | undefined,
): string | undefined {
  return header(identifierHeader) ?? bearerToken(header("authorization"));
}

/** How the control path answers a client it does not admit (bad identifier or claim). */
export const clientRefusal: Readonly<
  Record<Extract<Admission, { ok: false }>["reason"], {
    status: 400 | 401 | 403 | 409 | 503;
    text: string;
  }>
> = {
  "no-identifier": { status: 401, text: "no identifier\n" },
  "unknown-identifier": { status: 401, text: "unknown identifier\n" },
  "identifier-connected": {
    status: 409,
    text: "a client with this identifier is already connected\n",
  },
  "no-domain": { status: 403, text: "this server gives out no subdomains (no --domain)\n" },
  "not-an-account": { status: 403, text: "subdomains need an account token\n" },
  "bad-subdomain": { status: 400, text: "a subdomain must be a DNS label (a-z 0-9 -)\n" },
  "host-taken": { status: 409, text: "this subdomain is taken\n" },
  "registry-unavailable": {
    status: 503,
    text: "the host registry is unavailable: retry later\n",
  },
};
