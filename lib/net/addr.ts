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
 * Rejects ports outside 0-65535 and empty hosts.
 */
export function parseHostPort(s: string, defaultHost = "127.0.0.1"): HostPort {
  const m = /^(?:\[([0-9a-fA-F:.%a-zA-Z]+)\]|([^:\[\]]*)):(\d{1,5})$/.exec(s.trim());
  if (!m) throw new AddressError(`not host:port: ${JSON.stringify(s)}`);
  const host = m[1] ?? (m[2] === "" ? defaultHost : m[2]);
  const port = Number(m[3]);
  if (port > 65535) throw new AddressError(`port out of range: ${m[3]}`);
  return { host, port };
}

/**
 * Whether `s` is a dotted-quad IPv4 address exactly as node:net's `isIP` reads one (four
 * decimal parts of 0-255, no leading zeros), by hand: a dial asks for every connection, and
 * `isIP` (regexes) cost about 0.4 µs a call.
 */
export function isIPv4Address(s: string): boolean {
  let parts = 0, digits = 0, value = 0;
  for (let i = 0; i <= s.length; i++) {
    const c = i < s.length ? s.charCodeAt(i) : 46; // a "." after the end closes the last part
    if (c === 46) {
      if (digits === 0 || value > 255) return false;
      parts++;
      digits = value = 0;
    } else if (c < 48 || c > 57 || (digits === 1 && value === 0) || ++digits > 3) {
      return false;
    } else {
      value = value * 10 + c - 48;
    }
  }
  return parts === 4;
}

// node:net's IPv6 literal grammar (Node's lib/internal/net.js, which Deno's node layer
// copies): eight 16-bit groups, one `::` for a run of zeros, an IPv4 tail, an optional zone.
const v4Seg = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])";
const v4Str = `(?:${v4Seg}\\.){3}${v4Seg}`;
const v6Seg = "(?:[0-9a-fA-F]{1,4})";
const ipv6Literal = new RegExp(
  "^(?:" +
    `(?:${v6Seg}:){7}(?:${v6Seg}|:)|` +
    `(?:${v6Seg}:){6}(?:${v4Str}|:${v6Seg}|:)|` +
    `(?:${v6Seg}:){5}(?::${v4Str}|(?::${v6Seg}){1,2}|:)|` +
    `(?:${v6Seg}:){4}(?:(?::${v6Seg}){0,1}:${v4Str}|(?::${v6Seg}){1,3}|:)|` +
    `(?:${v6Seg}:){3}(?:(?::${v6Seg}){0,2}:${v4Str}|(?::${v6Seg}){1,4}|:)|` +
    `(?:${v6Seg}:){2}(?:(?::${v6Seg}){0,3}:${v4Str}|(?::${v6Seg}){1,5}|:)|` +
    `(?:${v6Seg}:){1}(?:(?::${v6Seg}){0,4}:${v4Str}|(?::${v6Seg}){1,6}|:)|` +
    `(?::(?:(?::${v6Seg}){0,5}:${v4Str}|(?::${v6Seg}){1,7}|:))` +
    ")(?:%[0-9a-zA-Z-.:]{1,})?$",
);

/**
 * Which IP literal `s` is: 4 (dotted quad), 6 (IPv6, zone allowed, no brackets) or 0 (a name
 * or nothing valid), exactly as node:net's `isIP` answers. Written here so a service does not
 * load Deno's node layer for it: node:net alone is ~2 MB of heap that every full GC marks
 * (bench/RESULTS.md, weight2).
 *
 * @example
 * ```ts
 * import { ipFamily } from "./addr.ts";
 * console.assert(ipFamily("10.0.0.1") === 4);
 * console.assert(ipFamily("fe80::1%eth0") === 6);
 * console.assert(ipFamily("[::1]") === 0 && ipFamily("example.org") === 0);
 * ```
 */
export function ipFamily(s: string): 0 | 4 | 6 {
  if (isIPv4Address(s)) return 4;
  return ipv6Literal.test(s) ? 6 : 0;
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
  const kind = ipFamily(h);
  if (kind === 4) return h.startsWith("127.");
  if (kind !== 6) return false;
  // The URL parser writes an IPv6 literal in its canonical compressed form.
  const canonical = new URL(`http://[${h}]/`).hostname.slice(1, -1);
  return canonical === "::1" || /^::ffff:7f[0-9a-f]{2}:[0-9a-f]{1,4}$/.test(canonical);
}
