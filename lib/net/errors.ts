/**
 * Typed network failures. Every failure carries a machine-readable `reason` so protocols
 * map it to their own reply code in one table (SOCKS5 0x04/0x05, HTTP 502/504 ...).
 * @module
 */

/** Why a dial (or a relay) failed. */
export type NetFailureReason =
  | "resolve" // name resolution failed (NXDOMAIN, no addresses of the wanted family)
  | "refused" // the target actively refused (RST on SYN)
  | "host-unreachable" // no route to the host (ICMP host unreachable, EHOSTUNREACH)
  | "network-unreachable" // no route to the network (ENETUNREACH)
  | "timeout" // no answer within the dial timeout
  | "not-allowed" // refused by our own policy before dialling
  | "aborted" // the caller's AbortSignal fired
  | "other"; // anything else (the message says what)

/**
 * Every {@linkcode NetFailureReason}, in a fixed order: wire protocols that carry a reason
 * (depot's control messages, the seaprox link's result byte) use this list, so the order
 * must never change; new reasons go at the end.
 */
export const netFailureReasons = [
  "resolve",
  "refused",
  "host-unreachable",
  "network-unreachable",
  "timeout",
  "not-allowed",
  "aborted",
  "other",
] as const satisfies readonly NetFailureReason[];

/** A network failure with a typed reason. */
export class NetError extends Error {
  override name = "NetError";
  constructor(readonly reason: NetFailureReason, message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/** A peer broke its protocol (bad frame, bad version, oversize field ...). */
export class ProtocolError extends Error {
  override name = "ProtocolError";
  constructor(message: string, readonly reason: string = "protocol", options?: ErrorOptions) {
    super(message, options);
  }
}

/** A handshake or idle timer ran out. */
export class TimeoutError extends Error {
  override name = "TimeoutError";
  readonly reason = "timeout";
}

/** `node:net` error codes (sockets made with node:net / node:tls) and their reasons. */
const nodeCodeReasons: Record<string, NetFailureReason> = {
  ECONNREFUSED: "refused",
  EHOSTUNREACH: "host-unreachable",
  ENETUNREACH: "network-unreachable",
  ETIMEDOUT: "timeout",
  ENOTFOUND: "resolve",
  EAI_AGAIN: "resolve",
};

/** Map an OS-level error from `Deno.connect`, `node:net` and friends to a typed reason. */
export function classifyError(err: unknown): NetFailureReason {
  if (err instanceof NetError) return err.reason;
  const byCode = nodeCodeReasons[(err as { code?: unknown })?.code as string];
  if (byCode) return byCode;
  if (err instanceof Deno.errors.ConnectionRefused) return "refused";
  if (err instanceof Deno.errors.NetworkUnreachable) return "network-unreachable";
  if (err instanceof Deno.errors.TimedOut || err instanceof TimeoutError) return "timeout";
  if (err instanceof DOMException && err.name === "TimeoutError") return "timeout";
  if (err instanceof DOMException && err.name === "AbortError") return "aborted";
  const msg = err instanceof Error ? err.message : String(err);
  if (/os error 113|no route to host|host is unreachable/i.test(msg)) return "host-unreachable";
  if (/os error 101|network is unreachable/i.test(msg)) return "network-unreachable";
  if (/os error 111|connection refused/i.test(msg)) return "refused";
  if (/os error 110|timed out/i.test(msg)) return "timeout";
  if (/ENOTFOUND|EAI_|failed to lookup|name or service not known|os error -2/i.test(msg)) {
    return "resolve";
  }
  return "other";
}

/**
 * Whether `err` (or an error it wraps, as a `NetError` does) says the process (EMFILE) or the
 * system (ENFILE) is out of file descriptors: no fault of the peer, and every dial fails alike
 * until some close, so it deserves an operator's attention more than one request's.
 */
export function isOutOfFds(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (code === "EMFILE" || code === "ENFILE") return true;
    if (/os error 2[34]\b|too many open files/i.test(e.message)) return true;
  }
  return false;
}

/** Errors a relay sees when a peer vanishes; these end a direction quietly, not loudly. */
export function isDisconnect(err: unknown): boolean {
  return err instanceof Deno.errors.ConnectionReset ||
    err instanceof Deno.errors.BrokenPipe ||
    err instanceof Deno.errors.ConnectionAborted ||
    err instanceof Deno.errors.NotConnected ||
    err instanceof Deno.errors.BadResource ||
    err instanceof Deno.errors.Interrupted;
}

/** Short description of any thrown value for logs and replies. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
