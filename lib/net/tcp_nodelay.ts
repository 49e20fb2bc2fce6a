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
 * already knocking) keeps Nagle on; none can with port 0.
 * @module
 */

import { openDescriptors, openLibc, pointerSymbols } from "./libc.ts";
import { portOf } from "./reset.ts";

const solSocket = 1;
const soAcceptConn = 30;
const ipprotoTcp = 6;
const tcpNoDelay = 1;
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
 * Set TCP_NODELAY on this process's listening TCP socket(s) bound to `port`, so every
 * connection accepted from now on has Nagle off. True when at least one listener got it;
 * false without FFI permission for libc, off Linux, or when no such listener was found.
 */
export function listenerNoDelay(port: number): boolean {
  if (Deno.build.os !== "linux" || port <= 0) return false;
  const lib = openLibc(libcSymbols);
  if (!lib) return false;
  try {
    const c = lib.symbols;
    let set = false;
    for (const fd of openDescriptors(c)) {
      if (portOf(c.getsockname, fd) !== port || !isListening(c, fd)) continue;
      if (c.setsockopt(fd, ipprotoTcp, tcpNoDelay, optOn, optOn.length) === 0) set = true;
    }
    return set;
  } catch {
    // A call the permission does not cover after all: the listener keeps Nagle on, which
    // the caller logs (false), as without FFI.
    return false;
  } finally {
    lib.close();
  }
}
