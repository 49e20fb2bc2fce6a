/** Abort support shared by the server and client handshakes. @module */

import { closeQuietly, type Duplex } from "../net/mod.ts";

/**
 * Run a handshake on `conn` that `signal` can abort: on abort `conn` is closed (which ends
 * any pending read) and the promise rejects with the signal's reason.
 */
export function abortable<T>(
  conn: Duplex,
  signal: AbortSignal | undefined,
  fn: () => Promise<T>,
): Promise<T> {
  // Without a signal (seaprox times its handshakes on serve()'s wheel): no frame of our own.
  return signal ? abortableBy(conn, signal, fn) : fn();
}

async function abortableBy<T>(
  conn: Duplex,
  signal: AbortSignal,
  fn: () => Promise<T>,
): Promise<T> {
  signal.throwIfAborted();
  const onAbort = () => closeQuietly(conn);
  signal.addEventListener("abort", onAbort); // removed below: no `once` (its conversion costs)
  try {
    return await fn();
  } catch (err) {
    if (signal.aborted) throw signal.reason;
    throw err;
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}
