/**
 * The PROXY protocol (haproxy's proxy-protocol.txt), versions 1 (text) and 2 (binary): the
 * header a load balancer sends before the client's bytes to say who the client was. Read on
 * any split of the input, bounded; written for a backend that expects it.
 * @module
 */

import { type HostPort, joinHostPort } from "../net/addr.ts";
import { parseIp } from "../net/acl.ts";
import { type BufferedReader, UnexpectedEofError } from "../net/reader.ts";
import { ProtocolError } from "../net/errors.ts";

/**
 * Whose PROXY headers a listener takes when not told otherwise: this host only (a balancer
 * on the same machine). Anyone else could claim any client address.
 */
export const defaultProxyProtocolFrom: readonly string[] = ["127.0.0.0/8", "::1"];

/** The 12 bytes every v2 header starts with. */
export const v2Signature: Uint8Array = Uint8Array.of(
  0x0d,
  0x0a,
  0x0d,
  0x0a,
  0x00,
  0x0d,
  0x0a,
  0x51,
  0x55,
  0x49,
  0x54,
  0x0a,
);
/** Longest v1 line, CRLF included (the spec's bound). */
export const maxV1LineBytes = 107;
/** Longest v2 address block (addresses plus TLVs) accepted; longer is refused, not buffered. */
export const maxV2BlockBytes = 4096;

/** What a header said. */
export interface ProxyHeader {
  version: 1 | 2;
  /**
   * The original client and the address it connected to; absent for v1 `UNKNOWN`, v2
   * `LOCAL` (a health check by the balancer itself) and v2 non-IP families.
   */
  source?: HostPort;
  dest?: HostPort;
}

const v1Re = /^PROXY (?:(TCP4|TCP6) (\S+) (\S+) (\d{1,5}) (\d{1,5})|UNKNOWN(?: .*)?)$/;

/**
 * Read one PROXY header (v1 or v2, told apart by the first byte) from `r`. Throws a
 * `ProtocolError` with reason "bad-proxy-header" for anything else (the connection must then
 * be closed: nothing defines an answer), `UnexpectedEofError` when the input ends early.
 */
export async function readProxyHeader(r: BufferedReader): Promise<ProxyHeader> {
  const first = await r.readByte();
  if (first === 0x50) return readV1(r); // "P"
  if (first !== v2Signature[0]) throw bad(`not a PROXY header (first byte 0x${hex(first)})`);
  const rest = await r.readExact(v2Signature.length - 1 + 4);
  for (let i = 1; i < v2Signature.length; i++) {
    if (rest[i - 1] !== v2Signature[i]) throw bad("bad PROXY v2 signature");
  }
  const verCmd = rest[11], fam = rest[12];
  const len = (rest[13] << 8) | rest[14];
  if (verCmd >> 4 !== 2) throw bad(`PROXY v2 version ${verCmd >> 4}`);
  const cmd = verCmd & 0x0f;
  if (cmd > 1) throw bad(`PROXY v2 command ${cmd}`);
  if (len > maxV2BlockBytes) throw bad(`PROXY v2 block of ${len} bytes`);
  const block = await r.readExact(len);
  if (cmd === 0) return { version: 2 }; // LOCAL: the balancer's own connection
  const af = fam >> 4, proto = fam & 0x0f;
  if (proto !== 1 || (af !== 1 && af !== 2)) return { version: 2 }; // not TCP over IP: no address
  const n = af === 1 ? 4 : 16;
  if (len < 2 * n + 4) throw bad(`PROXY v2 block too short for its family (${len} bytes)`);
  const text = af === 1 ? ipv4Text : ipv6Text;
  const port = (o: number) => (block[o] << 8) | block[o + 1];
  return {
    version: 2,
    source: { host: text(block.subarray(0, n)), port: port(2 * n) },
    dest: { host: text(block.subarray(n, 2 * n)), port: port(2 * n + 2) },
  };
}

async function readV1(r: BufferedReader): Promise<ProxyHeader> {
  let line: Uint8Array;
  try {
    line = await r.readLine(maxV1LineBytes - 2);
  } catch (err) {
    if (err instanceof UnexpectedEofError) throw err;
    throw bad("PROXY v1 line too long");
  }
  const text = "P" + new TextDecoder().decode(line);
  const m = v1Re.exec(text);
  if (!m) throw bad(`bad PROXY v1 line ${JSON.stringify(text.slice(0, 60))}`);
  if (!m[1]) return { version: 1 };
  // TCP4 takes IPv4 literals; TCP6 any IP literal (an IPv4-mapped one included).
  const ipOk = (t: string) =>
    m[1] === "TCP4" ? parseIp(t)?.v === 4 && !t.includes(":") : parseIp(t) !== null;
  const ports = [Number(m[4]), Number(m[5])];
  if (!ipOk(m[2]) || !ipOk(m[3]) || ports.some((p) => p > 65535)) {
    throw bad(`bad PROXY v1 address in ${JSON.stringify(text)}`);
  }
  return {
    version: 1,
    source: { host: m[2], port: ports[0] },
    dest: { host: m[3], port: ports[1] },
  };
}

/**
 * Encode a header saying `source` connected to `dest` (IP literals). Version 1 is text
 * (`PROXY TCP4 ...\r\n`), version 2 binary; an IPv4 and an IPv6 address together are both
 * sent as IPv6 (the IPv4 one mapped).
 *
 * @example
 * ```ts
 * import { encodeProxyHeader, readProxyHeader } from "./mod.ts";
 * import { BufferedReader } from "../net/mod.ts";
 * const client = { host: "203.0.113.7", port: 51000 }, reached = { host: "10.0.0.1", port: 443 };
 * const wire = encodeProxyHeader(2, client, reached);
 * let sent = false;
 * const r = new BufferedReader({
 *   read: (p: Uint8Array) => Promise.resolve(sent ? null : (sent = true, p.set(wire), wire.length)),
 * });
 * const header = await readProxyHeader(r);
 * console.assert(header.source?.host === "203.0.113.7" && header.source.port === 51000);
 * ```
 */
export function encodeProxyHeader(version: 1 | 2, source: HostPort, dest: HostPort): Uint8Array {
  const s = parseIp(source.host), d = parseIp(dest.host);
  if (!s || !d) {
    throw new ProtocolError(
      `PROXY header needs IP addresses: ${joinHostPort(source.host, source.port)}`,
      "bad-proxy-header",
    );
  }
  const v6 = s.v === 6 || d.v === 6;
  if (version === 1) {
    const text = (ip: typeof s) => v6 ? ipv6Text(bytesOf(ip, true)) : ipv4Text(bytesOf(ip, false));
    const line = `PROXY ${v6 ? "TCP6" : "TCP4"} ${text(s)} ${
      text(d)
    } ${source.port} ${dest.port}\r\n`;
    return new TextEncoder().encode(line);
  }
  const n = v6 ? 16 : 4;
  const out = new Uint8Array(16 + 2 * n + 4);
  out.set(v2Signature);
  out[12] = 0x21; // version 2, PROXY
  out[13] = v6 ? 0x21 : 0x11; // AF_INET6 / AF_INET, STREAM
  out[14] = 0;
  out[15] = 2 * n + 4;
  out.set(bytesOf(s, v6), 16);
  out.set(bytesOf(d, v6), 16 + n);
  out.set([source.port >> 8, source.port & 0xff, dest.port >> 8, dest.port & 0xff], 16 + 2 * n);
  return out;
}

function bytesOf(ip: { v: 4 | 6; bits: bigint }, as6: boolean): Uint8Array {
  const n = as6 ? 16 : 4;
  const bits = ip.v === 4 && as6 ? (0xffffn << 32n) | ip.bits : ip.bits;
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = Number((bits >> BigInt(8 * (n - 1 - i))) & 0xffn);
  return out;
}

function ipv4Text(b: Uint8Array): string {
  return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
}

function ipv6Text(b: Uint8Array): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((b[i] << 8) | b[i + 1]).toString(16));
  // Normalised by parseIp's reader; the long form is valid everywhere it is used.
  return groups.join(":");
}

function bad(message: string): ProtocolError {
  return new ProtocolError(message, "bad-proxy-header");
}

function hex(b: number): string {
  return b.toString(16).padStart(2, "0");
}
