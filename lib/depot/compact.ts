/**
 * depot's compact frames (feature "compact", lib/control compact.ts): the messages every
 * plain request carries -- `standby`, `connect`, `tunnel`, `tunnelAccepted`, `end` -- as a few
 * fixed binary fields instead of JSON, which cost each side a stringify or a parse and a schema
 * walk per frame (the largest JS item of a plain depot connection after the syscalls). Every
 * other message, and any message a peer did not agree to, stays JSON.
 *
 * Bodies (after the 4-byte prefix: top bit, 7-bit code, 24-bit length), integers big-endian:
 *
 * | code | message          | body                                                                 |
 * | ---- | ---------------- | -------------------------------------------------------------------- |
 * | 1    | `connect`        | id (8) · key (16) · port (2) · host (UTF-8, the rest, 1-255 chars)   |
 * | 2    | `tunnel`         | id (8) · key (16) [· boundPort (2) · boundHost (UTF-8, <= 64 chars)] |
 * | 3    | `standby`        | sessionKey (16) · name (the rest, an exit name)                      |
 * | 4    | `end`            | id (8)                                                               |
 * | 5    | `tunnelAccepted` | id (8)                                                               |
 *
 * id: an integer 1 <= id < 2^53 in 8 bytes; keys: the 16 bytes whose lowercase hex is the
 * JSON form's 32 digits. A body of any other length, an id out of range, a host that is not
 * UTF-8 or out of bounds, or an unknown code is a protocol violation, as its JSON form would be.
 * @module
 */

import {
  type CompactCodec,
  compactError,
  compactFrame,
  ControlError,
  hexOf,
  type Outgoing,
} from "../control/mod.ts";
import { type DepotMessage, depotProtocolVersion, exitNamePattern } from "./protocol.ts";

const code = { connect: 1, tunnel: 2, standby: 3, end: 4, tunnelAccepted: 5 } as const;
const idBytes = 8;
const keyBytes = 16;
/** Largest id (2^53 - 1), as the JSON form's safe integer. */
const maxId = Number.MAX_SAFE_INTEGER;
const hostMaxChars = 255;
const boundHostMaxChars = 64;

const encoder = new TextEncoder();
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
/** A hex digit's value, or -1 (lowercase only: keys are lowercase hex). */
const hexValue = new Int8Array(128).fill(-1);
for (let i = 0; i < 16; i++) hexValue[i.toString(16).charCodeAt(0)] = i;

function putId(f: Uint8Array, at: number, id: number): void {
  const hi = Math.floor(id / 0x1_0000_0000);
  const lo = id >>> 0;
  f[at] = hi >>> 24;
  f[at + 1] = (hi >>> 16) & 0xff;
  f[at + 2] = (hi >>> 8) & 0xff;
  f[at + 3] = hi & 0xff;
  f[at + 4] = lo >>> 24;
  f[at + 5] = (lo >>> 16) & 0xff;
  f[at + 6] = (lo >>> 8) & 0xff;
  f[at + 7] = lo & 0xff;
}

function getId(b: Uint8Array, at: number): number {
  const hi = ((b[at] << 24) | (b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]) >>> 0;
  const lo = ((b[at + 4] << 24) | (b[at + 5] << 16) | (b[at + 6] << 8) | b[at + 7]) >>> 0;
  const id = hi * 0x1_0000_0000 + lo;
  if (hi > 0x1f_ffff || id < 1) throw compactError(`id out of range 1..${maxId}`);
  return id;
}

/** Whether `key` is 32 lowercase hex digits (what randomSecret(16) makes). */
function isKey(key: unknown): key is string {
  if (typeof key !== "string" || key.length !== 2 * keyBytes) return false;
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i);
    if (c >= 128 || hexValue[c] < 0) return false;
  }
  return true;
}

function putKey(f: Uint8Array, at: number, key: string): void {
  for (let i = 0; i < keyBytes; i++) {
    f[at + i] = (hexValue[key.charCodeAt(2 * i)] << 4) | hexValue[key.charCodeAt(2 * i + 1)];
  }
}

function getKey(b: Uint8Array, at: number): string {
  return hexOf(b, at, keyBytes);
}

function isId(id: unknown): id is number {
  return typeof id === "number" && Number.isSafeInteger(id) && id >= 1;
}

/** A string of UTF-8 `bytes`, `min`-`max` UTF-16 units long as its JSON form checks. */
function getText(bytes: Uint8Array, min: number, max: number, what: string): string {
  let s: string;
  let ascii = true;
  for (let i = 0; i < bytes.length; i++) if (bytes[i] >= 0x80) ascii = false;
  if (ascii) {
    s = String.fromCharCode.apply(null, bytes as unknown as number[]);
  } else {
    try {
      s = utf8.decode(bytes);
    } catch {
      throw compactError(`${what} is not valid UTF-8`);
    }
  }
  if (s.length < min || s.length > max) throw compactError(`${what} length outside ${min}..${max}`);
  return s;
}

function exactLength(body: Uint8Array, n: number, what: string): void {
  if (body.length !== n) throw compactError(`${what} body of ${body.length} bytes, not ${n}`);
}

/** A frame holding only an id (`end`, `tunnelAccepted`). */
function idFrame(c: number, id: number): Uint8Array {
  const f = compactFrame(c, idBytes);
  putId(f, 4, id);
  return f;
}

/** Whether `s` is all ASCII (its UTF-8 is its char codes). */
function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) >= 0x80) return false;
  return true;
}

/** `id`, `key`, then `port` and UTF-8 `host` (connect; tunnel with its bound address). */
function requestFrame(c: number, id: number, key: string, host?: string, port?: number) {
  // Hosts are mostly ASCII (names, addresses): their char codes go in as they are, without an
  // encoder's array per frame.
  const ascii = host !== undefined && isAscii(host);
  const hostBytes = host === undefined || ascii ? undefined : encoder.encode(host);
  const hostLength = ascii ? host.length : hostBytes?.length;
  const f = compactFrame(c, idBytes + keyBytes + (hostLength === undefined ? 0 : 2 + hostLength));
  putId(f, 4, id);
  putKey(f, 4 + idBytes, key);
  if (hostLength !== undefined) {
    const at = 4 + idBytes + keyBytes;
    f[at] = port! >>> 8;
    f[at + 1] = port! & 0xff;
    if (hostBytes) f.set(hostBytes, at + 2);
    else for (let i = 0; i < hostLength; i++) f[at + 2 + i] = host!.charCodeAt(i);
  }
  return f;
}

function isPort(p: unknown): p is number {
  return typeof p === "number" && Number.isInteger(p) && p >= 0 && p <= 65535;
}

/**
 * The depot codec. `encode` gives undefined for anything not in the table, or not valid as its
 * JSON form would be (that goes as JSON, and the peer's check reports it), so a compact frame
 * always decodes to what the JSON frame would have.
 */
export const depotCompact: CompactCodec<DepotMessage> = {
  encode(msg: Outgoing<DepotMessage>): Uint8Array | undefined {
    switch (msg.type) {
      case "connect":
        if (!isId(msg.id) || !isKey(msg.key) || !isPort(msg.port)) return undefined;
        if (msg.host.length < 1 || msg.host.length > hostMaxChars || !msg.host.isWellFormed()) {
          return undefined;
        }
        return requestFrame(code.connect, msg.id, msg.key, msg.host, msg.port);
      case "tunnel": {
        if (!isId(msg.id) || !isKey(msg.key)) return undefined;
        const { boundHost: host, boundPort: port } = msg;
        if (host === undefined && port === undefined) {
          return requestFrame(code.tunnel, msg.id, msg.key);
        }
        if (
          host === undefined || !isPort(port) || host.length > boundHostMaxChars ||
          !host.isWellFormed()
        ) return undefined;
        return requestFrame(code.tunnel, msg.id, msg.key, host, port);
      }
      case "standby": {
        if (!isKey(msg.sessionKey) || !exitNamePattern.test(msg.name)) return undefined;
        const f = compactFrame(code.standby, keyBytes + msg.name.length); // the name is ASCII
        putKey(f, 4, msg.sessionKey);
        for (let i = 0; i < msg.name.length; i++) f[4 + keyBytes + i] = msg.name.charCodeAt(i);
        return f;
      }
      case "end":
        return isId(msg.id) ? idFrame(code.end, msg.id) : undefined;
      case "tunnelAccepted":
        return isId(msg.id) ? idFrame(code.tunnelAccepted, msg.id) : undefined;
      default:
        return undefined;
    }
  },

  decode(c: number, b: Uint8Array): DepotMessage {
    const v = depotProtocolVersion;
    switch (c) {
      case code.connect: {
        const fixed = idBytes + keyBytes + 2;
        if (b.length < fixed + 1) throw compactError(`connect body of ${b.length} bytes`);
        return {
          v,
          type: "connect",
          id: getId(b, 0),
          key: getKey(b, idBytes),
          host: getText(b.subarray(fixed), 1, hostMaxChars, "connect host"),
          port: (b[fixed - 2] << 8) | b[fixed - 1],
        };
      }
      case code.tunnel: {
        const fixed = idBytes + keyBytes;
        if (b.length < fixed) throw compactError(`tunnel body of ${b.length} bytes`);
        const id = getId(b, 0);
        const key = getKey(b, idBytes);
        if (b.length === fixed) return { v, type: "tunnel", id, key };
        if (b.length < fixed + 2) throw compactError(`tunnel body of ${b.length} bytes`);
        return {
          v,
          type: "tunnel",
          id,
          key,
          boundHost: getText(b.subarray(fixed + 2), 0, boundHostMaxChars, "tunnel boundHost"),
          boundPort: (b[fixed] << 8) | b[fixed + 1],
        };
      }
      case code.standby: {
        if (b.length < keyBytes + 1) throw compactError(`standby body of ${b.length} bytes`);
        const name = getText(b.subarray(keyBytes), 1, 64, "standby name");
        if (!exitNamePattern.test(name)) throw compactError("standby name is not an exit name");
        return { v, type: "standby", name, sessionKey: getKey(b, 0) };
      }
      case code.end:
        exactLength(b, idBytes, "end");
        return { v, type: "end", id: getId(b, 0) };
      case code.tunnelAccepted:
        exactLength(b, idBytes, "tunnelAccepted");
        return { v, type: "tunnelAccepted", id: getId(b, 0) };
      default:
        throw new ControlError("unknown-type", `depot: unknown compact code ${c}`);
    }
  },
};
