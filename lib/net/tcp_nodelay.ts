/**
 * TCP_NODELAY for every connection a listener accepts, set once on the listening socket.
 *
 * Why: Deno 2.9.6's `Deno.listenTls` hands out `Deno.TlsConn`s that have no `setNoDelay`
 * (and no descriptor in their internal fd field), so the server side of every TLS listener
 * ran with Nagle on: a small write that followed another unacknowledged one waited for the
 * peer's delayed ACK, 40 ms (a TLS link's 1-byte hello reply behind the session tickets, a
 * FIN behind the last small frame). Linux copies a listening socket's TCP_NODELAY into each
 * socket `accept()` returns (checked under Deno 2.9.6: set on the listener, the accepted
 * TLS connection reads 1; not set, 0), so one `setsockopt` at listen time covers every
 * connection at no per-connection cost. The listener is found among this process's
 * descriptors (libc's readdir of /proc/self/fd, as ./reset.ts does) as the listening TCP
 * socket bound to the port; every listening socket of this process on that port gets it
 * (another address or a SO_REUSEPORT sibling on the same port is a listener of ours too, and
 * TCP_NODELAY is what lib/net's `serve()` sets on its connections anyway).
 *
 * Not done per connection (e.g. for `Deno.connectTls` connections, which have no
 * `setNoDelay` either): opening libc and scanning the descriptors costs 2.8-4 ms a call here.
 *
 * Needs the FFI permission for libc (./libc.ts; the installed services have it) and Linux;
 * otherwise {@linkcode listenerNoDelay} answers false and the caller says so in its log.
 * A connection the kernel completed between `listen()` and this call (a fixed port, a client
 * already knocking) keeps Nagle on; none can with port 0. {@linkcode listenerNoDelayQueued}
 * also says how many such connections wait in the accept queue, for a caller that can set it
 * on them one by one (lib/net's `serve()`).
 * @module
 */

import { openDescriptors, openLibc, pointerSymbols } from "./libc.ts";
import { portOf } from "./reset.ts";

const solSocket = 1;
const soAcceptConn = 30;
const ipprotoTcp = 6;
const tcpNoDelay = 1;
/** getsockopt TCP_INFO: `struct tcp_info`. */
const tcpInfo = 11;
/**
 * Offset of `tcpi_unacked` in `struct tcp_info` (8 one-byte fields, then rto, ato, snd_mss,
 * rcv_mss as u32): for a listening socket Linux reports its accept queue's length there.
 */
const tcpiUnackedOffset = 24;
/** Bytes of `struct tcp_info` read: up to and including `tcpi_unacked` and `tcpi_sacked`. */
const tcpInfoBytes = 32;
/**
 * Descriptors {@linkcode listenerNoDelayQueued} looks through at most: each costs a libc call
 * or three through FFI (~5 us here), and a listener opened in a busy process (thousands of
 * connections) would hold the event loop for tens of ms (13 ms at ~1,000 fds, 47 ms at
 * ~10,000); with more open, it gives up and the caller sets TCP_NODELAY per connection.
 */
export const maxScannedFds = 256;
const optOn = new Uint8Array(new Int32Array([1]).buffer);

const libcSymbols = {
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  ...pointerSymbols,
} as const;

type LibcSymbols = Deno.DynamicLibrary<typeof libcSymbols>["symbols"];

/** Whether descriptor `fd` is a listening socket (SO_ACCEPTCONN). */
function isListening(c: LibcSymbols, fd: number): boolean {
  const value = new Uint8Array(4);
  const len = new Uint8Array(new Uint32Array([value.length]).buffer);
  if (c.getsockopt(fd, solSocket, soAcceptConn, value, len) !== 0) return false;
  return new Int32Array(value.buffer)[0] === 1;
}

/**
 * Connections waiting in the accept queue of listening socket `fd` (Linux: a listener's
 * `tcpi_unacked`); undefined if it cannot be read.
 */
function acceptQueueLength(c: LibcSymbols, fd: number): number | undefined {
  const info = new Uint8Array(tcpInfoBytes);
  const len = new Uint8Array(new Uint32Array([info.length]).buffer);
  if (c.getsockopt(fd, ipprotoTcp, tcpInfo, info, len) !== 0) return undefined;
  if (new Uint32Array(len.buffer)[0] < tcpiUnackedOffset + 4) return undefined;
  return new DataView(info.buffer).getUint32(tcpiUnackedOffset, true);
}

/**
 * Set TCP_NODELAY on this process's listening TCP socket(s) bound to `port`, so every
 * connection accepted from now on has Nagle off. True when at least one listener got it;
 * false without FFI permission for libc, off Linux, or when no such listener was found.
 */
export function listenerNoDelay(port: number): boolean {
  return setOnListeners(port, Infinity) !== undefined;
}

/**
 * {@linkcode listenerNoDelay}, and how many connections were waiting in those listeners'
 * accept queues just after: the kernel made them before, so they lack it, and the caller
 * sets it on that many of the next connections it accepts (the queue is first in, first out).
 * Infinity when a queue's length cannot be read (set it on every connection); undefined when
 * no listener got it, or the process has more than {@linkcode maxScannedFds} descriptors open
 * (a bounded cost at any time: the scan stops there).
 */
export function listenerNoDelayQueued(port: number): number | undefined {
  return setOnListeners(port, maxScannedFds);
}

/**
 * TCP_NODELAY on the listening sockets bound to `port` among this process's descriptors if it
 * has at most `maxFds` open; their accept queues' length in all (see
 * {@linkcode listenerNoDelayQueued}), or undefined if none got it.
 */
function setOnListeners(port: number, maxFds: number): number | undefined {
  if (Deno.build.os !== "linux" || port <= 0) return undefined;
  const lib = openLibc(libcSymbols);
  if (!lib) return undefined;
  try {
    const c = lib.symbols;
    let set = false;
    let queued = 0;
    const fds = openDescriptors(c, maxFds + 1);
    // Not all of them listed: another listener of ours on the port may be among the rest, and
    // the one serve() accepts from could be that one.
    if (fds.length > maxFds) return undefined;
    for (const fd of fds) {
      if (portOf(c.getsockname, fd) !== port || !isListening(c, fd)) continue;
      if (c.setsockopt(fd, ipprotoTcp, tcpNoDelay, optOn, optOn.length) !== 0) continue;
      set = true;
      queued += acceptQueueLength(c, fd) ?? Infinity;
    }
    return set ? queued : undefined;
  } catch {
    // A call the permission does not cover after all: the listener keeps Nagle on, which
    // the caller logs (false), as without FFI.
    return undefined;
  } finally {
    lib.close();
  }
}
