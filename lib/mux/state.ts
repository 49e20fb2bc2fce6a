/**
 * Seed 004's structured connection state applied to a mux stream: one byte, low nibble SYN,
 * high nibble FIN; within each nibble the low pair is about the peer's request (rx request,
 * then our ack of it) and the high pair about ours (tx request, then the peer's ack).
 *
 * ```
 *   FFFF SSSS      F = FIN, S = SYN
 *   ttrr ttrr      t = transmit, r = receive
 *   !?!? !?!?      ? = the request (SYN/FIN), ! = its ack
 * ```
 *
 * Bits are only ever set (never cleared), so the state cannot go backwards; readable and
 * writable are derived from the bits, never tracked separately.
 *
 * ## Mapping to yamux flags
 *
 * yamux opens with two frames, not three, and has no FIN acknowledgement, so:
 *
 * | event                                        | bits set                          |
 * | -------------------------------------------- | --------------------------------- |
 * | `open()`: we send SYN                        | SYN_TX                            |
 * | we receive SYN (stream accepted from peer)   | SYN_RX                            |
 * | we send ACK (alone or on our first frame)    | SYN_ACK_TX + SYN_TX (yamux ACK = seed SYN,ACK) |
 * | that ACK frame reached the transport         | SYN_ACK_RX (no third leg in yamux; the transport is reliable) |
 * | we receive ACK for our SYN (or any other frame of the peer on that stream: Go yamux never ACKs a stream whose FIN came before its accept) | SYN_ACK_RX + SYN_RX + SYN_ACK_TX  |
 * | we send FIN (closeWrite, close, fin on open) | FIN_TX                            |
 * | our FIN frame reached the transport          | FIN_ACK_RX                        |
 * | we receive FIN                               | FIN_RX + FIN_ACK_TX               |
 * | RST sent or received                         | all bits (CLOSED) plus an error   |
 *
 * With open-with-data and "QuRe" (SYN + data + FIN in one frame), FIN bits may be set
 * before the SYN nibble is complete; the seed allows that for peers that know each other.
 * A stream is freed when all eight bits are set.
 * @module
 */

/** SYN received from the peer (it opened the stream). */
export const SYN_RX = 0x01;
/** We acknowledged the peer's SYN (yamux ACK flag sent). */
export const SYN_ACK_TX = 0x02;
/** We sent SYN (we opened the stream, or our ACK stands for the seed's SYN,ACK). */
export const SYN_TX = 0x04;
/** Our SYN is acknowledged. */
export const SYN_ACK_RX = 0x08;
/** FIN received: the peer writes no more. */
export const FIN_RX = 0x10;
/** We acknowledged the peer's FIN (implicit in yamux: set with FIN_RX). */
export const FIN_ACK_TX = 0x20;
/** We sent FIN: we write no more. */
export const FIN_TX = 0x40;
/** Our FIN is delivered (the frame carrying it was written to the transport). */
export const FIN_ACK_RX = 0x80;

/** The SYN nibble's bits. */
export const SYN_MASK = 0x0f;
/** The FIN nibble's bits. */
export const FIN_MASK = 0xf0;

/** The seed's names for the RFC 793 states, as bit patterns. */
export const StreamState = {
  LISTEN: 0x00,
  SYN_SENT: 0x04,
  /** The accepting side with its ACK still held back (optional SYN response). */
  SYN_RX: 0x01,
  SYN_RECEIVED: 0x07,
  ESTABLISHED: 0x0f,
  FIN_WAIT_1: 0x4f,
  FIN_WAIT_2: 0xcf,
  CLOSE_WAIT: 0x3f,
  /** Same bits as LAST_ACK. */
  CLOSING: 0x7f,
  /** Same bits as TIME_WAIT. */
  CLOSED: 0xff,
} as const;

/** Whether data may still be written: our FIN not yet sent. */
export function canWrite(state: number): boolean {
  return (state & FIN_TX) === 0;
}

/** Whether more data may still arrive: the peer's FIN not yet received. */
export function canReceive(state: number): boolean {
  return (state & FIN_RX) === 0;
}

/** Whether the SYN handshake is complete in both directions. */
export function isEstablished(state: number): boolean {
  return (state & SYN_MASK) === SYN_MASK;
}

/** Whether both FINs are done (or the stream was reset): the stream can be freed. */
export function isDone(state: number): boolean {
  return state === StreamState.CLOSED;
}

const names = new Map<number, string>([
  [0x00, "LISTEN"],
  [0x01, "SYN_RX"],
  [0x04, "SYN_SENT"],
  [0x07, "SYN_RECEIVED"],
  [0x0f, "ESTABLISHED"],
  [0x4f, "FIN_WAIT_1"],
  [0xcf, "FIN_WAIT_2"],
  [0x3f, "CLOSE_WAIT"],
  [0x7f, "CLOSING"],
  [0xff, "CLOSED"],
]);

/** A readable name: the seed's state name, or the bits as `FFFF_SSSS` binary. */
export function stateName(state: number): string {
  const s = names.get(state);
  if (s) return s;
  const b = state.toString(2).padStart(8, "0");
  return `${b.slice(0, 4)}_${b.slice(4)}`;
}
