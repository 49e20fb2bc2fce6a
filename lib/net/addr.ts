/**
 * `host:port` parsing shared by every flag and URL that names an endpoint.
 * @module
 */

import { isIP } from "node:net";

/** A host (name, IPv4 or IPv6 without brackets) and a port. */
export interface HostPort {
  host: string;
  port: number;
}

/** A malformed endpoint string. */
export class AddressError extends Error {
  override name = "AddressError";
  readonly reason = "bad-address";
}

/**
 * Parse `host:port`, `[v6]:port` or `:port` (host = `defaultHost`).
 * Rejects ports outside 0–65535 and empty hosts.
 */
export function parseHostPort(s: string, defaultHost = "127.0.0.1"): HostPort {
  const m = /^(?:\[([0-9a-fA-F:.%a-zA-Z]+)\]|([^:\[\]]*)):(\d{1,5})$/.exec(s.trim());
  if (!m) throw new AddressError(`not host:port: ${JSON.stringify(s)}`);
  const host = m[1] ?? (m[2] === "" ? defaultHost : m[2]);
  const port = Number(m[3]);
  if (port > 65535) throw new AddressError(`port out of range: ${m[3]}`);
  return { host, port };
}

/** Render `host:port`, bracketing IPv6 literals. */
export function joinHostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * Whether a listener on `host` can only be reached from this machine: an IP literal in
 * 127.0.0.0/8 or ::1 (IPv4-mapped too, any IPv6 spelling), or the name `localhost`. Any other
 * name is not: what it resolves to is not known here (and `127.0.0.1.lan` is a DNS name, not
 * an address), so a guard built on this refuses it unless the operator writes the address.
 */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").replace(/%.*$/, "").toLowerCase();
  if (h === "localhost" || h === "localhost.") return true;
  const kind = isIP(h);
  if (kind === 4) return h.startsWith("127.");
  if (kind !== 6) return false;
  // The URL parser writes an IPv6 literal in its canonical compressed form.
  const canonical = new URL(`http://[${h}]/`).hostname.slice(1, -1);
  return canonical === "::1" || /^::ffff:7f[0-9a-f]{2}:[0-9a-f]{1,4}$/.test(canonical);
}
