/**
 * `host:port` parsing shared by every flag and URL that names an endpoint.
 * @module
 */

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

/** Whether `host` can only be reached from this machine (127/8, ::1, localhost). */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h === "::1" || /^127\./.test(h) || /^::ffff:127\./.test(h);
}
