/**
 * WebSocket (RFC 6455) as a byte stream: the transport that carries a tunnel's mux
 * session through ordinary reverse proxies. Binary messages are concatenated into one
 * byte stream; message boundaries mean nothing.
 *
 * `WsConn` frames over any Duplex (our own HTTP/1 listener after the upgrade, or the
 * client's TCP/TLS connection). `webSocketAccept` and `clientHandshake` do the opening
 * handshake. See README.md for the frame layout.
 * @module
 */

import { closeQuietly, type Duplex, ProtocolError, writeAll } from "../net/mod.ts";
import { SimdMasker } from "./ws_mask.ts";

/** GUID appended to Sec-WebSocket-Key (RFC 6455 §1.3). */
const acceptGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/** Largest frame payload accepted from a peer (mux frames are far smaller). */
export const maxFramePayloadBytes = 16 * 1024 * 1024;
/** Largest payload we put in one frame; bigger writes are split. */
const maxSendPayloadBytes = 1024 * 1024;
/** Largest read of masked payload into the (server's) WebAssembly unmask buffer. */
const maxUnmaskReadBytes = 1024 * 1024;
/** Largest header: 2 + 8 (length) + 4 (mask). */
const maxHeaderBytes = 14;

/** Frame opcodes. */
export const Opcode = {
  continuation: 0x0,
  text: 0x1,
  binary: 0x2,
  close: 0x8,
  ping: 0x9,
  pong: 0xa,
} as const;

/** Close status codes we send. */
export const CloseCode = { normal: 1000, protocolError: 1002, tooBig: 1009 } as const;

/**
 * `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64 of the SHA-1 of key + GUID. Web
 * Crypto's digest (async), not node:crypto's: a service then loads no node layer for it
 * (~2 MB of heap, bench/RESULTS.md weight2); it runs once per WebSocket connection.
 */
export async function webSocketAccept(key: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-1", new TextEncoder().encode(key + acceptGuid));
  return btoa(String.fromCharCode(...new Uint8Array(digest)));
}

/** A fresh random `Sec-WebSocket-Key`. */
export function newWebSocketKey(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  return btoa(String.fromCharCode(...b));
}

/** Encode one frame header into `out` at 0; returns its length. */
export function encodeFrameHeader(
  out: Uint8Array,
  fin: boolean,
  opcode: number,
  payloadLength: number,
  maskKey?: Uint8Array,
): number {
  out[0] = (fin ? 0x80 : 0) | opcode;
  const m = maskKey ? 0x80 : 0;
  let o: number;
  if (payloadLength < 126) {
    out[1] = m | payloadLength;
    o = 2;
  } else if (payloadLength < 65536) {
    out[1] = m | 126;
    out[2] = payloadLength >>> 8;
    out[3] = payloadLength & 0xff;
    o = 4;
  } else {
    out[1] = m | 127;
    new DataView(out.buffer, out.byteOffset).setBigUint64(2, BigInt(payloadLength));
    o = 10;
  }
  if (maskKey) {
    out.set(maskKey, o);
    o += 4;
  }
  return o;
}

/** XOR `p` in place with the 4-byte mask, starting at mask position `offset`. */
export function applyMask(p: Uint8Array, key: Uint8Array, offset = 0): void {
  const n = p.length;
  let i = 0;
  // Bytes up to a 4-byte aligned address, then a word at a time (the hot loop for large
  // payloads), then the tail.
  const lead = Math.min(n, (4 - (p.byteOffset & 3)) & 3);
  for (; i < lead; i++) p[i] ^= key[(offset + i) & 3];
  const words = (n - i) >>> 2;
  if (words > 0) {
    const rk = new Uint8Array(4);
    for (let j = 0; j < 4; j++) rk[j] = key[(offset + i + j) & 3];
    const word = new Uint32Array(rk.buffer)[0];
    const w = new Uint32Array(p.buffer, p.byteOffset + i, words);
    for (let x = 0; x < words; x++) w[x] ^= word;
    i += words * 4;
  }
  for (; i < n; i++) p[i] ^= key[(offset + i) & 3];
}

/** Offset of a frame's payload in the send buffer: 4-byte aligned, room for any header. */
const bodyOffset = 16;

/** `dst[i] = src[i] ^ key[i % 4]`, a word at a time when both views are 4-byte aligned. */
export function maskCopy(dst: Uint8Array, src: Uint8Array, key: Uint8Array): void {
  const n = src.length;
  if (n >= 64 && dst.byteOffset % 4 === 0 && src.byteOffset % 4 === 0) {
    const word = new Uint32Array(key.slice(0, 4).buffer)[0];
    const words = n >>> 2;
    const d = new Uint32Array(dst.buffer, dst.byteOffset, words);
    const s = new Uint32Array(src.buffer, src.byteOffset, words);
    for (let i = 0; i < words; i++) d[i] = s[i] ^ word;
    for (let i = words * 4; i < n; i++) dst[i] = src[i] ^ key[i & 3];
    return;
  }
  dst.set(src);
  applyMask(dst, key);
}

/** Options of {@linkcode WsConn}. */
export interface WsConnOptions {
  /** "client" masks what it sends and expects unmasked frames; "server" the reverse. */
  role: "client" | "server";
  /** Bytes the peer already sent past the handshake. */
  prefix?: Uint8Array;
  /**
   * Keep our sending side open after the peer's Close: its Close reads as EOF and ours goes
   * out only at our own `closeWrite()`, so the stream keeps TCP's half-close (RFC 6455 §5.5.1
   * lets an endpoint delay its Close while it sends). For links whose two ends are WsConns
   * (depot, fusion, seaprox links); off by default (the tunnel echoes at once). @default false
   */
  halfClose?: boolean;
}

/**
 * One whole message read by {@linkcode WsConn.readMessage}: a data message (fragments
 * joined) or the peer's Close frame (`code` undefined when it carried none).
 */
export type WsMessage =
  | { type: "text" | "binary"; data: Uint8Array }
  | { type: "close"; code: number | undefined; reason: string };

/** Close status codes that may appear in a Close frame (RFC 6455 §7.4). */
export function isSendableCloseCode(code: number): boolean {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
    (code >= 3000 && code <= 4999);
}

/**
 * A Duplex over a WebSocket connection: `write` sends binary frames, `read` returns the
 * payload bytes of binary (and text) messages in order. Pings are answered, a Close frame
 * is echoed (with `halfClose`: at our own `closeWrite`) and read as EOF, `closeWrite` sends
 * a Close frame.
 */
export class WsConn implements Duplex {
  readonly #conn: Duplex;
  readonly #client: boolean;
  readonly #halfClose: boolean;
  #buf = new Uint8Array(64 * 1024);
  #start = 0;
  #end = 0;
  /** Payload bytes of the current data frame still to deliver. */
  #left = 0;
  #mask: Uint8Array | null = null;
  #maskPos = 0;
  #eof = false;
  #closeSent = false;
  #writeChain: Promise<void> = Promise.resolve();
  #scratch = new Uint8Array(bodyOffset + 64 * 1024);
  /**
   * The client's send buffer, the server's receive buffer for masked payload: WebAssembly
   * memory, masked with SIMD (null: JS path).
   */
  #masker: SimdMasker | null = null;
  #head = new Uint8Array(maxHeaderBytes);

  /** Frame over `conn`, an upgraded connection. */
  constructor(conn: Duplex, opts: WsConnOptions) {
    this.#conn = conn;
    this.#client = opts.role === "client";
    this.#halfClose = opts.halfClose ?? false;
    this.#masker = SimdMasker.create(bodyOffset + 64 * 1024);
    if (opts.prefix && opts.prefix.length > 0) {
      if (opts.prefix.length > this.#buf.length) this.#buf = new Uint8Array(opts.prefix.length);
      this.#buf.set(opts.prefix);
      this.#end = opts.prefix.length;
    }
  }

  async #fill(): Promise<boolean> {
    if (this.#start === this.#end) this.#start = this.#end = 0;
    else if (this.#start > 0 && this.#buf.length - this.#end < maxHeaderBytes) {
      this.#buf.copyWithin(0, this.#start, this.#end);
      this.#end -= this.#start;
      this.#start = 0;
    }
    const n = await this.#conn.read(this.#buf.subarray(this.#end));
    if (n === null) return false;
    this.#end += n;
    return true;
  }

  async #need(n: number): Promise<void> {
    while (this.#end - this.#start < n) {
      if (!(await this.#fill())) throw new ProtocolError("connection closed mid-frame", "eof");
    }
  }

  /** Read a frame header; returns false on clean EOF before it. */
  async #readHeader(): Promise<{ fin: boolean; opcode: number; len: number } | null> {
    if (this.#end === this.#start && !(await this.#fill())) return null;
    await this.#need(2);
    const b0 = this.#buf[this.#start];
    const b1 = this.#buf[this.#start + 1];
    if (b0 & 0x70) throw new ProtocolError("reserved bits set", "ws-protocol");
    const masked = (b1 & 0x80) !== 0;
    if (masked === this.#client) {
      throw new ProtocolError(
        masked ? "masked frame from server" : "unmasked client frame",
        "ws-protocol",
      );
    }
    let len = b1 & 0x7f;
    let hl = 2;
    if (len === 126) hl = 4;
    else if (len === 127) hl = 10;
    await this.#need(hl + (masked ? 4 : 0));
    const s = this.#start;
    if (len === 126) len = (this.#buf[s + 2] << 8) | this.#buf[s + 3];
    else if (len === 127) {
      const big = new DataView(this.#buf.buffer, this.#buf.byteOffset + s + 2, 8).getBigUint64(0);
      if (big > BigInt(maxFramePayloadBytes)) {
        throw new ProtocolError("frame too large", "too-large");
      }
      len = Number(big);
    }
    if (len > maxFramePayloadBytes) throw new ProtocolError("frame too large", "too-large");
    this.#mask = masked ? this.#buf.slice(s + hl, s + hl + 4) : null;
    this.#maskPos = 0;
    this.#start += hl + (masked ? 4 : 0);
    return { fin: (b0 & 0x80) !== 0, opcode: b0 & 0x0f, len };
  }

  /** A ping is answered with its data, a pong dropped (between or inside data messages). */
  async #pingPong(h: { opcode: number; len: number }): Promise<void> {
    const data = await this.#readControl(h.len);
    if (h.opcode !== Opcode.ping) return;
    await this.#send(Opcode.pong, data).catch(() => {
      // The peer is gone: the next read reports it.
    });
  }

  async #readControl(len: number): Promise<Uint8Array> {
    if (len > 125) throw new ProtocolError("control frame too long", "ws-protocol");
    await this.#need(len);
    const p = this.#buf.slice(this.#start, this.#start + len);
    this.#start += len;
    if (this.#mask) applyMask(p, this.#mask);
    return p;
  }

  /** Payload bytes of the next data frames; `null` after a Close frame or EOF. */
  async read(p: Uint8Array): Promise<number | null> {
    if (p.length === 0) return 0;
    while (this.#left === 0) {
      if (this.#eof) return null;
      const h = await this.#readHeader();
      if (h === null) {
        this.#eof = true;
        return null;
      }
      switch (h.opcode) {
        case Opcode.binary:
        case Opcode.text:
        case Opcode.continuation:
          this.#left = h.len;
          break;
        case Opcode.ping:
        case Opcode.pong:
          await this.#pingPong(h);
          break;
        case Opcode.close: {
          const data = await this.#readControl(h.len);
          this.#eof = true;
          if (!this.#closeSent && !this.#halfClose) {
            await this.#sendClose(data.length >= 2 ? data.subarray(0, 2) : undefined).catch(() => {
              // Peer already gone; nothing to acknowledge.
            });
          }
          return null;
        }
        default:
          throw new ProtocolError(`unknown opcode ${h.opcode}`, "ws-protocol");
      }
    }
    let n: number;
    const buffered = this.#end - this.#start;
    if (buffered > 0) {
      n = Math.min(p.length, this.#left, buffered);
      p.set(this.#buf.subarray(this.#start, this.#start + n));
      this.#start += n;
    } else if (this.#mask && this.#masker) {
      // Masked (client) data: read into WebAssembly memory, unmask there with SIMD, copy
      // out. Cheaper than XORing the caller's buffer in JS, even with the extra copy.
      const m = this.#masker;
      const want = Math.min(p.length, this.#left, maxUnmaskReadBytes);
      const got = await this.#conn.read(m.reserve(want).subarray(0, want));
      if (got === null) throw new ProtocolError("connection closed mid-frame", "eof");
      m.maskInPlace(0, got, this.#mask, this.#maskPos);
      this.#maskPos = (this.#maskPos + got) % 4;
      p.set(m.buffer.subarray(0, got));
      this.#left -= got;
      return got;
    } else {
      // Straight into the caller's buffer: no copy for large payloads.
      const got = await this.#conn.read(p.length > this.#left ? p.subarray(0, this.#left) : p);
      if (got === null) throw new ProtocolError("connection closed mid-frame", "eof");
      n = got;
    }
    if (this.#mask) {
      applyMask(p.subarray(0, n), this.#mask, this.#maskPos);
      this.#maskPos = (this.#maskPos + n) % 4;
    }
    this.#left -= n;
    return n;
  }

  /** Queue a frame so concurrent writers never interleave frames. */
  #send(opcode: number, payload: Uint8Array): Promise<void> {
    const run = this.#writeChain.then(() => this.#sendNow(opcode, payload));
    this.#writeChain = run.catch(() => {
      // The failure is reported to this write's caller; later writes fail on their own.
    });
    return run;
  }

  async #sendNow(opcode: number, payload: Uint8Array, fin = true): Promise<void> {
    const key = this.#client ? crypto.getRandomValues(new Uint8Array(4)) : undefined;
    // The payload goes at a 4-byte aligned offset, the header right before it, so masking
    // can run a word at a time while copying (one pass instead of copy + XOR).
    const need = bodyOffset + payload.length;
    const masker = this.#masker;
    if (key && masker) {
      masker.maskInto(bodyOffset, payload, key);
      const out = masker.buffer;
      const hl = encodeFrameHeader(this.#head, fin, opcode, payload.length, key);
      out.set(this.#head.subarray(0, hl), bodyOffset - hl);
      await writeAll(this.#conn, out.subarray(bodyOffset - hl, need));
      return;
    }
    if (need > this.#scratch.length) {
      this.#scratch = new Uint8Array(Math.max(need, this.#scratch.length * 2));
    }
    const head = new Uint8Array(maxHeaderBytes);
    const hl = encodeFrameHeader(head, fin, opcode, payload.length, key);
    this.#scratch.set(head.subarray(0, hl), bodyOffset - hl);
    const body = this.#scratch.subarray(bodyOffset, need);
    if (key) maskCopy(body, payload, key);
    else body.set(payload);
    await writeAll(this.#conn, this.#scratch.subarray(bodyOffset - hl, need));
  }

  async write(p: Uint8Array): Promise<number> {
    if (this.#closeSent) throw new Deno.errors.BrokenPipe("websocket closed for writing");
    for (let o = 0; o < p.length; o += maxSendPayloadBytes) {
      await this.#send(Opcode.binary, p.subarray(o, Math.min(p.length, o + maxSendPayloadBytes)));
    }
    return p.length;
  }

  #sendClose(code?: Uint8Array): Promise<void> {
    if (this.#closeSent) return Promise.resolve();
    this.#closeSent = true;
    const payload = code ?? new Uint8Array([CloseCode.normal >> 8, CloseCode.normal & 0xff]);
    return this.#send(Opcode.close, payload);
  }

  /**
   * The next whole message, for message-level use (a WebSocket proxy) instead of `read`:
   * do not mix the two on one connection. Fragments are joined (at most `maxBytes`, else a
   * ProtocolError with reason "too-large"), pings answered, pongs skipped. A Close frame is
   * answered with the same code (unless one was sent already) and returned; `null` on EOF
   * without one. Text is returned as its bytes (not checked for UTF-8 here).
   */
  async readMessage(maxBytes: number): Promise<WsMessage | null> {
    let type: "text" | "binary" | undefined;
    const parts: Uint8Array[] = [];
    let total = 0;
    while (true) {
      if (this.#eof) return null;
      const h = await this.#readHeader();
      if (h === null) {
        this.#eof = true;
        if (type !== undefined) throw new ProtocolError("connection closed mid-message", "eof");
        return null;
      }
      switch (h.opcode) {
        case Opcode.ping:
        case Opcode.pong:
          await this.#pingPong(h);
          continue;
        case Opcode.close: {
          if (!h.fin) throw new ProtocolError("fragmented control frame", "ws-protocol");
          const data = await this.#readControl(h.len);
          this.#eof = true;
          if (data.length === 1) throw new ProtocolError("close frame of 1 byte", "ws-protocol");
          const code = data.length >= 2 ? (data[0] << 8) | data[1] : undefined;
          if (!this.#closeSent) {
            await this.#sendClose(data.length >= 2 ? data.subarray(0, 2) : new Uint8Array(0))
              .catch(() => {
                // Peer already gone; nothing to acknowledge.
              });
          }
          return { type: "close", code, reason: new TextDecoder().decode(data.subarray(2)) };
        }
        case Opcode.text:
        case Opcode.binary:
          if (type !== undefined) throw new ProtocolError("new message mid-message", "ws-protocol");
          type = h.opcode === Opcode.text ? "text" : "binary";
          break;
        case Opcode.continuation:
          if (type === undefined) throw new ProtocolError("stray continuation", "ws-protocol");
          break;
        default:
          throw new ProtocolError(`unknown opcode ${h.opcode}`, "ws-protocol");
      }
      total += h.len;
      if (total > maxBytes) throw new ProtocolError("message too large", "too-large");
      const part = new Uint8Array(h.len);
      this.#left = h.len;
      for (let o = 0; o < h.len;) {
        const n = await this.read(part.subarray(o));
        if (n === null) throw new ProtocolError("connection closed mid-frame", "eof");
        o += n;
      }
      parts.push(part);
      if (h.fin) {
        if (parts.length === 1) return { type, data: parts[0] };
        const data = new Uint8Array(total);
        let o = 0;
        for (const p of parts) {
          data.set(p, o);
          o += p.length;
        }
        return { type, data };
      }
    }
  }

  /**
   * Send `data` as one text or binary message (fragmented above 1 MiB); the fragments of
   * one message are never interleaved with another's.
   */
  sendMessage(type: "text" | "binary", data: Uint8Array): Promise<void> {
    const run = this.#writeChain.then(async () => {
      if (this.#closeSent) throw new Deno.errors.BrokenPipe("websocket closed for writing");
      let o = 0;
      do {
        const end = Math.min(data.length, o + maxSendPayloadBytes);
        const op = o === 0 ? (type === "text" ? Opcode.text : Opcode.binary) : Opcode.continuation;
        await this.#sendNow(op, data.subarray(o, end), end === data.length);
        o = end;
      } while (o < data.length);
    });
    this.#writeChain = run.catch(() => {
      // Reported to this call's caller; later writes fail on their own.
    });
    return run;
  }

  /**
   * Send a Close frame with `code` and `reason` (cut to the 123 bytes a frame allows); no
   * status at all when `code` is undefined. Only the first close is sent.
   */
  sendCloseFrame(code?: number, reason = ""): Promise<void> {
    if (code === undefined) return this.#sendClose(new Uint8Array(0));
    const text = new TextEncoder().encode(reason).subarray(0, 123);
    const payload = new Uint8Array(2 + text.length);
    payload[0] = code >> 8;
    payload[1] = code & 0xff;
    payload.set(text, 2);
    return this.#sendClose(payload);
  }

  /** Send a Close frame (WebSocket has no half-close: the peer answers with its own). */
  async closeWrite(): Promise<void> {
    await this.#sendClose();
  }

  /** Send a ping with `data` (<= 125 bytes); the peer's pong is consumed by `read`. */
  ping(data: Uint8Array = new Uint8Array(0)): Promise<void> {
    return this.#send(Opcode.ping, data);
  }

  /** Close the underlying connection (no Close frame: see `closeWrite`). */
  close(): void {
    closeQuietly(this.#conn);
  }
}

/** Why an upgrade request is not a valid WebSocket opening handshake, or null if it is. */
export function checkUpgradeRequest(
  method: string,
  header: (name: string) => string | undefined,
): string | null {
  if (method !== "GET") return "websocket upgrade must be GET";
  if ((header("upgrade") ?? "").toLowerCase() !== "websocket") return "missing Upgrade: websocket";
  const conn = (header("connection") ?? "").toLowerCase().split(",").map((s) => s.trim());
  if (!conn.includes("upgrade")) return "missing Connection: upgrade";
  if (header("sec-websocket-version") !== "13") return "unsupported Sec-WebSocket-Version";
  const key = header("sec-websocket-key") ?? "";
  if (!/^[A-Za-z0-9+/]{22}==$/.test(key)) return "bad Sec-WebSocket-Key";
  return null;
}

/** The 101 response completing a server-side opening handshake for `key`. */
export async function switchingProtocolsResponse(key: string): Promise<Uint8Array> {
  return new TextEncoder().encode(
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      `Sec-WebSocket-Accept: ${await webSocketAccept(key)}\r\n\r\n`,
  );
}
