/**
 * Request targets (RFC 9112 §3.2): the authority of a CONNECT (`host:port`), the absolute
 * URI of a forward-proxy request (`http://host:port/path`), and the Host a server routes by.
 * @module
 */

import type { HostPort } from "../net/mod.ts";
import { getHeader, HttpError, type RequestHead } from "./head.ts";

/** A parsed absolute-form target. */
export interface AbsoluteTarget {
  scheme: "http" | "https";
  /** `host[:port]` exactly as in the URI (what the Host header must become). */
  authority: string;
  /** Where to connect: the host without brackets, the port or the scheme's default. */
  dest: HostPort;
  /** Origin form to send upstream: path and query, `/` when empty, fragment dropped. */
  path: string;
}

const regNameRe = /^[A-Za-z0-9\-._~%!$&'()*+,;=]+$/;
const defaultPorts = { http: 80, https: 443 } as const;

/**
 * Parse `host[:port]` / `[v6][:port]`. Without a port, `defaultPort` is used, or it is an
 * error when none is given (CONNECT needs one). Userinfo (`user@`) is refused.
 */
export function parseAuthority(authority: string, defaultPort?: number): HostPort {
  let host: string, portText: string | undefined;
  if (authority.startsWith("[")) {
    const close = authority.indexOf("]");
    if (close < 0) throw new HttpError(`bad authority ${JSON.stringify(authority)}`);
    host = authority.slice(1, close);
    const rest = authority.slice(close + 1);
    if (rest !== "" && !rest.startsWith(":")) {
      throw new HttpError(`bad authority ${JSON.stringify(authority)}`);
    }
    portText = rest === "" ? undefined : rest.slice(1);
    if (!/^[0-9A-Fa-f:.]+$/.test(host) || !host.includes(":")) {
      throw new HttpError(`bad IPv6 literal ${JSON.stringify(host)}`);
    }
  } else {
    const colon = authority.lastIndexOf(":");
    host = colon < 0 ? authority : authority.slice(0, colon);
    portText = colon < 0 ? undefined : authority.slice(colon + 1);
    if (!regNameRe.test(host)) throw new HttpError(`bad host ${JSON.stringify(host)}`);
  }
  let port: number;
  if (portText === undefined || portText === "") {
    if (defaultPort === undefined) throw new HttpError(`no port in ${JSON.stringify(authority)}`);
    port = defaultPort;
  } else {
    if (!/^\d{1,5}$/.test(portText)) throw new HttpError(`bad port ${JSON.stringify(portText)}`);
    port = Number(portText);
  }
  if (port < 1 || port > 65535) throw new HttpError(`port out of range: ${port}`);
  return { host, port };
}

/**
 * Parse an absolute-form target (`http://host[:port]/path?query`). Throws HttpError for
 * anything else, including userinfo and schemes other than http/https.
 */
export function parseAbsoluteTarget(target: string): AbsoluteTarget {
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)([^#]*)/.exec(target);
  if (!m) throw new HttpError(`not an absolute URI: ${JSON.stringify(target.slice(0, 80))}`);
  const scheme = m[1].toLowerCase();
  if (scheme !== "http" && scheme !== "https") {
    throw new HttpError(`unsupported scheme ${JSON.stringify(scheme)}`);
  }
  const authority = m[2];
  if (authority.includes("@")) throw new HttpError("userinfo in a request target");
  const dest = parseAuthority(authority, defaultPorts[scheme]);
  let path = m[3] === "" ? "/" : m[3];
  if (path.startsWith("?")) path = "/" + path;
  return { scheme, authority, dest, path };
}

/**
 * Where a request is addressed: its absolute-form target if it has one, else its Host
 * header (default port 80), else undefined. What a virtual-host router reads.
 */
export function requestAuthority(head: RequestHead): HostPort | undefined {
  if (/^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(head.target)) {
    return parseAbsoluteTarget(head.target).dest;
  }
  const host = getHeader(head.headers, "host");
  return host ? parseAuthority(host, 80) : undefined;
}
