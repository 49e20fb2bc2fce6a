/**
 * SOCKS5 addresses on the wire: ATYP + address + port, IPv4/IPv6 literals parsed and
 * formatted without a resolver.
 * @module
 */

import { type BufferedReader, type HostPort, ProtocolError } from "../net/mod.ts";
import { AddrType, maxFieldBytes, Socks5Error } from "./const.ts";

const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });
/** A C0 control character or DEL: never part of a host name, and unsafe in a log line. */
// deno-lint-ignore no-control-regex
const controlRe = /[\x00-\x1f\x7f]/;

/**
 * A domain name from the wire as text: UTF-8 with no control character (NUL included), or a
 * ProtocolError "bad-domain". Decoded leniently, such a name became U+FFFD (3 bytes each, so
 * wrapping it again for a next hop could pass 255 bytes and throw) or a NUL-bearing string that
 * failed only later as a dial or encoding error, far from its cause.
 */
export function decodeDomain(b: Uint8Array): string {
  let host: string;
  try {
    host = strictDecoder.decode(b);
  } catch {
    throw new ProtocolError("domain name is not UTF-8", "bad-domain");
  }
  if (controlRe.test(host)) {
    throw new ProtocolError("domain name holds a control character", "bad-domain");
  }
  return host;
}

/** The 4 bytes of a dotted-quad IPv4 literal, or null if `s` is not one. */
export function parseIPv4(s: string): Uint8Array | null {
  const out = new Uint8Array(4);
  return putIPv4(s, out, 0) ? out : null;
}

/**
 * Write the 4 bytes of the dotted-quad IPv4 literal `s` into `out` at `at`; false (bytes there
 * undefined) if `s` is not one. By hand, not a regex, and into the caller's array: every SOCKS5
 * reply encodes its bound address with it, and a 4-byte array of its own cost more than the
 * parse (a typed array with its own backing store is ~0.5 µs in Deno).
 */
export function putIPv4(s: string, out: Uint8Array, at: number): boolean {
  let part = 0, digits = 0, value = 0;
  for (let i = 0; i <= s.length; i++) {
    const c = i < s.length ? s.charCodeAt(i) : 46; // a "." after the end closes the last part
    if (c === 46) {
      if (digits === 0 || value > 255 || part > 3) return false;
      out[at + part++] = value;
      digits = value = 0;
    } else if (c >= 48 && c <= 57 && digits < 3) {
      value = value * 10 + c - 48;
      digits++;
    } else {
      return false;
    }
  }
  return part === 4;
}

/**
 * The 16 bytes of an IPv6 literal (brackets and a `%zone` suffix allowed, an embedded
 * dotted-quad tail too), or null if `s` is not one.
 */
export function parseIPv6(s: string): Uint8Array | null {
  let t = s.startsWith("[") && s.endsWith("]") ? s.slice(1, -1) : s;
  const pct = t.indexOf("%");
  if (pct >= 0) t = t.slice(0, pct);
  if (!t.includes(":") || !/^[0-9a-fA-F:.]+$/.test(t)) return null;
  // An IPv4 tail (::ffff:1.2.3.4) becomes the last two hex groups.
  const lastColon = t.lastIndexOf(":");
  if (t.indexOf(".", lastColon) >= 0) {
    const v4 = parseIPv4(t.slice(lastColon + 1));
    if (!v4) return null;
    const hi = ((v4[0] << 8) | v4[1]).toString(16), lo = ((v4[2] << 8) | v4[3]).toString(16);
    t = `${t.slice(0, lastColon + 1)}${hi}:${lo}`;
  }
  const halves = t.split("::");
  if (halves.length > 2) return null;
  const parse = (part: string): number[] | null => {
    if (part === "") return [];
    const out: number[] = [];
    for (const g of part.split(":")) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  const head = parse(halves[0]);
  const rest = halves.length === 2 ? parse(halves[1]) : [];
  if (!head || !rest) return null;
  const fixed = head.length + rest.length;
  let groups: number[];
  if (halves.length === 2) {
    if (fixed > 7) return null;
    groups = [...head, ...new Array<number>(8 - fixed).fill(0), ...rest];
  } else {
    if (fixed !== 8) return null;
    groups = head;
  }
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 0xff;
  });
  return out;
}

/** Dotted-quad text of 4 bytes. */
export function formatIPv4(b: Uint8Array): string {
  return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
}

/** RFC 5952 text of 16 bytes: lower case, longest run of >= 2 zero groups as `::`. */
export function formatIPv6(b: Uint8Array): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((b[i] << 8) | b[i + 1]);
  let bestStart = -1, bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) (bestStart = i, bestLen = j - i);
    i = j;
  }
  const hex = (gs: number[]) => gs.map((g) => g.toString(16)).join(":");
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLen))}`;
}

/**
 * Encode ATYP + address + port. IP literals use their binary types; anything else is sent
 * as a domain name (1-255 bytes, else a Socks5Error "bad-argument"). With `headroom`, that
 * many bytes are left free in front (a request's VER CMD RSV): one array for the message.
 */
export function encodeAddress(dest: HostPort, headroom = 0): Uint8Array {
  const { host, port } = dest;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Socks5Error("bad-argument", `port out of range: ${port}`);
  }
  let out: Uint8Array;
  let at = headroom;
  // An IPv4 literal (the usual destination) straight into the one array, parsed once.
  const v4 = new Uint8Array(headroom + 7);
  if (putIPv4(host, v4, headroom + 1)) {
    out = v4;
    out[at] = AddrType.ipv4;
    at += 5;
  } else {
    const v6 = parseIPv6(host);
    if (v6) {
      out = new Uint8Array(headroom + 19);
      out[at] = AddrType.ipv6;
      out.set(v6, at + 1);
      at += 17;
    } else {
      const name = encoder.encode(host);
      if (name.length === 0 || name.length > maxFieldBytes) {
        throw new Socks5Error("bad-argument", `domain name must be 1-255 bytes: ${name.length}`);
      }
      out = new Uint8Array(headroom + 4 + name.length);
      out[at] = AddrType.domain;
      out[at + 1] = name.length;
      out.set(name, at + 2);
      at += 2 + name.length;
    }
  }
  out[at] = port >> 8;
  out[at + 1] = port & 0xff;
  return out;
}

/** Whether `atyp` is an address type this codec reads. */
export function isKnownAddrType(atyp: number): boolean {
  return atyp === AddrType.ipv4 || atyp === AddrType.ipv6 || atyp === AddrType.domain;
}

/**
 * Bytes of the address and port that follow an ATYP byte, `first` being the first of them (a
 * domain's length byte): 6 for IPv4, 18 for IPv6, 1 + length + 2 for a domain. The type must
 * be known ({@linkcode isKnownAddrType}).
 */
export function addressBytes(atyp: number, first: number): number {
  return atyp === AddrType.ipv4 ? 6 : atyp === AddrType.ipv6 ? 18 : 3 + first;
}

/**
 * The address and port at the start of `b` (all {@linkcode addressBytes} of them there), as
 * {@linkcode readAddress} returns them, parsed in place from a reader's buffer. Throws
 * ProtocolError for an empty domain ("empty-domain") or one {@linkcode decodeDomain} refuses
 * ("bad-domain").
 */
export function parseAddress(b: Uint8Array, atyp: number): HostPort {
  if (atyp === AddrType.ipv4) return { host: formatIPv4(b), port: (b[4] << 8) | b[5] };
  if (atyp === AddrType.ipv6) {
    return { host: formatIPv6(b.subarray(0, 16)), port: (b[16] << 8) | b[17] };
  }
  const len = b[0];
  if (len === 0) throw new ProtocolError("empty domain name", "empty-domain");
  return {
    host: decodeDomain(b.subarray(1, 1 + len)),
    port: (b[1 + len] << 8) | b[2 + len],
  };
}

/**
 * Read the address and port that follow an ATYP byte. IPv4/IPv6 come back as literal text
 * (no brackets), domains as their text. Throws ProtocolError for an unknown type, an empty
 * domain or a bad one ({@linkcode decodeDomain}), UnexpectedEofError when the input ends early.
 */
export async function readAddress(r: BufferedReader, atyp: number): Promise<HostPort> {
  let host: string;
  // Views (valid until the next read of `r`): each field is decoded at once.
  if (atyp === AddrType.ipv4) {
    host = formatIPv4(await r.readExact(4, false));
  } else if (atyp === AddrType.ipv6) {
    host = formatIPv6(await r.readExact(16, false));
  } else if (atyp === AddrType.domain) {
    const len = await r.readByte();
    if (len === 0) throw new ProtocolError("empty domain name", "empty-domain");
    host = decodeDomain(await r.readExact(len, false));
  } else {
    throw new ProtocolError(`unknown address type 0x${atyp.toString(16)}`, "bad-address-type");
  }
  const p = await r.readExact(2, false);
  return { host, port: (p[0] << 8) | p[1] };
}
