/**
 * The SOCKS5 UDP request header (RFC 1928 §7) that wraps every datagram between a client and
 * its UDP relay: RSV(2) FRAG(1) ATYP DST.ADDR DST.PORT DATA. Pure functions on whole
 * datagrams (UDP keeps message boundaries, so there are no split reads to handle).
 * @module
 */

import { type HostPort, ProtocolError } from "../net/mod.ts";
import { decodeDomain, encodeAddress, formatIPv4, formatIPv6 } from "./addr.ts";
import { AddrType } from "./const.ts";

/** A datagram with its SOCKS5 UDP header taken apart. */
export interface Socks5UdpDatagram {
  /**
   * Fragment number: 0 is a whole datagram; anything else is a fragment, which warren (like
   * most servers; the RFC makes reassembly optional) drops and counts.
   */
  frag: number;
  /** Where the payload goes (client -> relay) or came from (relay -> client). */
  dest: HostPort;
  /** The payload, a view into the datagram (not copied). */
  data: Uint8Array;
}

/** Bytes of the header before the address: RSV(2) FRAG(1) ATYP(1). */
const fixedHeadBytes = 4;

/**
 * Take a datagram apart. Throws a `ProtocolError` (reason "truncated", "bad-address-type",
 * "empty-domain" or "bad-domain": not UTF-8) for anything that is not a whole header, never
 * another error; the payload may be empty. What it gives `encodeSocks5Udp` takes back.
 */
export function decodeSocks5Udp(b: Uint8Array): Socks5UdpDatagram {
  if (b.length < fixedHeadBytes) {
    throw new ProtocolError(`UDP header truncated: ${b.length} bytes`, "truncated");
  }
  // RSV (b[0], b[1]) must be 0 by the RFC; tolerated otherwise, as on the TCP request.
  const frag = b[2], atyp = b[3];
  let host: string, at: number;
  const need = (n: number) => {
    if (b.length < n) {
      throw new ProtocolError(`UDP header truncated: ${b.length} of ${n} bytes`, "truncated");
    }
  };
  if (atyp === AddrType.ipv4) {
    need(fixedHeadBytes + 4 + 2);
    host = formatIPv4(b.subarray(4, 8));
    at = 8;
  } else if (atyp === AddrType.ipv6) {
    need(fixedHeadBytes + 16 + 2);
    host = formatIPv6(b.subarray(4, 20));
    at = 20;
  } else if (atyp === AddrType.domain) {
    need(fixedHeadBytes + 1);
    const len = b[4];
    if (len === 0) throw new ProtocolError("empty domain name", "empty-domain");
    need(fixedHeadBytes + 1 + len + 2);
    host = decodeDomain(b.subarray(5, 5 + len));
    at = 5 + len;
  } else {
    throw new ProtocolError(`unknown address type 0x${atyp.toString(16)}`, "bad-address-type");
  }
  const port = (b[at] << 8) | b[at + 1];
  return { frag, dest: { host, port }, data: b.subarray(at + 2) };
}

/**
 * Wrap `data` in a header naming `dest` (fragment 0): what a relay sends back to its client
 * (`dest` = where the reply came from), and what a client sends to a relay. Throws a
 * `Socks5Error("bad-argument")` for a domain over 255 bytes or a port out of range.
 */
export function encodeSocks5Udp(dest: HostPort, data: Uint8Array): Uint8Array {
  const addr = encodeAddress(dest);
  const out = new Uint8Array(3 + addr.length + data.length);
  out.set(addr, 3);
  out.set(data, 3 + addr.length);
  return out;
}
