/**
 * SOCKS4 and its SOCKS4a extension, server side: what a SOCKS listener does when the first
 * byte is 0x04 instead of 0x05. No greeting, no methods: one request, one 8-byte reply.
 * @module
 */

import {
  type BufferedReader,
  type Duplex,
  type HostPort,
  ProtocolError,
  UnexpectedEofError,
  writeAll,
} from "../net/mod.ts";
import { decodeDomain, formatIPv4, parseIPv4 } from "./addr.ts";
import { Command, maxFieldBytes, Socks5Error } from "./const.ts";

/** Version byte of a SOCKS4/4a request. */
export const socks4Version = 0x04;

/** SOCKS4 reply codes (the CD field of a reply, whose VN byte is 0x00). */
export const Socks4Reply = {
  /** Request granted. */
  granted: 0x5a,
  /** Request rejected or failed: the only failure warren sends (SOCKS4 has no finer codes). */
  rejected: 0x5b,
  /** Rejected because the client's identd could not be reached (never sent by warren). */
  noIdentd: 0x5c,
  /** Rejected because identd and the request disagree on the user id (never sent). */
  userIdMismatch: 0x5d,
} as const;

const decoder = new TextDecoder();

/** What a SOCKS4/4a request asked for (the version byte already read). */
export interface Socks4Request {
  dest: HostPort;
  /** The USERID field (may be empty). SOCKS4 has no password. */
  userId: string;
  /** Whether the destination came as a SOCKS4a name (DSTIP 0.0.0.x, x != 0). */
  socks4a: boolean;
}

/**
 * Read the rest of a SOCKS4/4a request after its version byte: CD, DSTPORT, DSTIP, USERID
 * (NUL-terminated) and, for SOCKS4a, the host name (NUL-terminated). Refusals are answered
 * with reply 0x5B before they are thrown: BIND and unknown commands
 * (`Socks5Error("command-not-supported")`), a user id or name over 255 bytes
 * (`ProtocolError("too-long")`), an empty SOCKS4a name (`ProtocolError("empty-domain")`), one
 * not UTF-8 or holding a control character (`ProtocolError("bad-domain")`).
 * EOF mid-request is an `UnexpectedEofError`, unanswered.
 */
export async function readSocks4Request(conn: Duplex, r: BufferedReader): Promise<Socks4Request> {
  const head = await r.readExact(7); // CD, DSTPORT (2), DSTIP (4)
  const cmd = head[0];
  const port = (head[1] << 8) | head[2];
  const ip = head.subarray(3, 7);
  // SOCKS4a: DSTIP 0.0.0.x with x non-zero means "the name follows the user id".
  const socks4a = ip[0] === 0 && ip[1] === 0 && ip[2] === 0 && ip[3] !== 0;
  try {
    const userId = decoder.decode(await readNulTerminated(r, "user id"));
    const host = socks4a ? decodeDomain(await readNulTerminated(r, "host name")) : formatIPv4(ip);
    if (host === "") throw new ProtocolError("empty SOCKS4a host name", "empty-domain");
    if (cmd !== Command.connect) {
      const name = cmd === Command.bind ? "BIND" : `command 0x${cmd.toString(16).padStart(2, "0")}`;
      throw new Socks5Error("command-not-supported", `SOCKS4 ${name} is not supported`);
    }
    return { dest: { host, port }, userId, socks4a };
  } catch (err) {
    // A client that left mid-request gets no answer; every other refusal is told 0x5B.
    if (!(err instanceof UnexpectedEofError)) await sendSocks4Reply(conn, Socks4Reply.rejected);
    throw err;
  }
}

/** Bytes up to a NUL (consumed, not returned), at most 255 of them. */
async function readNulTerminated(r: BufferedReader, what: string): Promise<Uint8Array> {
  const out = new Uint8Array(maxFieldBytes);
  for (let n = 0;; n++) {
    const b = await r.readByte();
    if (b === 0) return out.subarray(0, n);
    if (n === maxFieldBytes) {
      throw new ProtocolError(`SOCKS4 ${what} over ${maxFieldBytes} bytes`, "too-long");
    }
    out[n] = b;
  }
}

/**
 * Send a SOCKS4 reply: VN 0x00, `code` ({@linkcode Socks4Reply}), DSTPORT and DSTIP of the
 * bound address (clients ignore them; an IPv6 or missing address is sent as 0.0.0.0:0).
 */
export async function sendSocks4Reply(
  conn: Pick<Duplex, "write">,
  code: number,
  bound?: HostPort,
): Promise<void> {
  const v4 = bound ? parseIPv4(bound.host) : null;
  const port = v4 && bound ? bound.port : 0;
  const out = new Uint8Array(8);
  out.set([0x00, code, port >> 8, port & 0xff]);
  if (v4) out.set(v4, 4);
  await writeAll(conn, out);
}
