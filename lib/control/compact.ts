/**
 * Compact frames: a protocol's own binary encoding of its hot messages, beside the JSON
 * frames and told apart by the prefix. A JSON frame's u32 length never has its top bit set
 * (lengths stop at `maxMessageBytesLimit`, 16 MiB); a compact frame's prefix does: bits 24-30
 * are the message's code (1-127), bits 0-23 the body's length, bounded by the receiver's
 * `maxMessageBytes` like a JSON body. What a code's body holds is the protocol's (e.g.
 * lib/depot/compact.ts), and so is the negotiation: a reader or writer without a codec treats
 * such a prefix as any over-long frame ("too-large"), as before compact frames existed.
 *
 * Why: a JSON frame costs an encode, a parse and a schema walk on each side; depot sends
 * several per connection, and they were its largest JS item after the syscalls.
 * @module
 */

import { smallBytes } from "../net/bytes.ts";
import { ControlError, type Message, type Outgoing } from "./message.ts";

/** The top bit of a frame's u32 prefix: the frame is compact. */
export const compactFlag = 0x8000_0000;
/** Largest body a compact frame's prefix can announce (24 bits). */
export const compactMaxBodyBytes = 0xff_ffff;

/** A protocol's compact encoding of some of its messages. */
export interface CompactCodec<M extends Message> {
  /** The whole compact frame of `msg`, or undefined when it has none (it goes as JSON). */
  encode(msg: Outgoing<M>): Uint8Array | undefined;
  /**
   * The message a compact frame of `code` carries, checked as strictly as its JSON form
   * would be; throws `ControlError` ("unknown-type", "schema") on any violation. `body` is
   * only valid during the call.
   */
  decode(code: number, body: Uint8Array): M;
}

/** A compact frame of `code` with room for `bodyBytes` after its prefix (filled in). */
export function compactFrame(code: number, bodyBytes: number): Uint8Array {
  if (!Number.isInteger(code) || code < 1 || code > 0x7f) {
    throw new RangeError(`compact code ${code} outside 1..127`);
  }
  if (bodyBytes > compactMaxBodyBytes) throw new RangeError("compact body too large");
  // Written and dropped: carved from a shared slab (an ArrayBuffer per frame cost ~0.8 µs).
  const frame = smallBytes(4 + bodyBytes);
  frame[0] = 0x80 | code;
  frame[1] = bodyBytes >>> 16;
  frame[2] = (bodyBytes >>> 8) & 0xff;
  frame[3] = bodyBytes & 0xff;
  return frame;
}

/** A violation in a compact body (a field out of range, a wrong length). */
export function compactError(message: string): ControlError {
  return new ControlError("schema", message);
}
