/**
 * TCP_NOTSENT_LOWAT on the TCP connection under a multiplexed session, so one bulk stream does
 * not fill the kernel's send buffer (autotuned to megabytes) and hold every other stream's
 * frames behind it: with the option the socket takes only about `bytes` of data not yet sent,
 * the rest waits in the session's own queue, where a small frame of another stream takes its
 * turn (h2o and Cloudflare's HTTP/2 prioritisation do the same; bench/RESULTS.md mhol).
 *
 * Deno 2.9.6 has no API for it: `setsockopt` through FFI on the connection's descriptor
 * (./reset.ts finds it), so it needs the FFI permission for libc (./libc.ts) and Linux; without
 * them {@linkcode setNotSentLowat} does nothing and says so.
 * @module
 */

import { openLibc, pointerSymbols } from "./libc.ts";
import { socketFd, withSocketCalls } from "./reset.ts";

const ipprotoTcp = 6;
/** TCP_NOTSENT_LOWAT (linux/tcp.h). */
const tcpNotSentLowat = 25;

/** What {@linkcode notSentLowat} reads with (setting goes through reset.ts's calls). */
const libcSymbols = {
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  getpeername: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  ...pointerSymbols,
} as const;

/**
 * What {@linkcode setNotSentLowat} did: "set"; "unavailable" (no FFI permission for libc, not
 * Linux); "not-tcp" (no Deno TCP/TLS connection found under `conn`, e.g. an in-memory pipe);
 * "failed" (no descriptor found, or setsockopt refused).
 */
export type NotSentLowatResult = "set" | "unavailable" | "not-tcp" | "failed";

/** The Deno connection under `conn` (itself, or through up to two `inner` wrappers), if any. */
function denoConn(conn: unknown): object | undefined {
  for (let x: unknown = conn, depth = 0; x && depth < 3; depth++) {
    const addr = (x as Partial<Deno.Conn>).localAddr;
    if (addr !== undefined) return addr.transport === "tcp" ? x as object : undefined;
    x = (x as { inner?: unknown }).inner;
  }
  return undefined;
}

/**
 * Set TCP_NOTSENT_LOWAT to `bytes` on the TCP socket under `conn` (a Deno TCP or TLS
 * connection, or a Duplex wrapping one through `inner`). For connections that carry a
 * multiplexed session: lib/mux calls it on its transport. Never throws.
 */
export function setNotSentLowat(conn: unknown, bytes: number): NotSentLowatResult {
  const c = denoConn(conn);
  if (c === undefined) return "not-tcp";
  if (Deno.build.os !== "linux") return "unavailable";
  const v = new Uint8Array(new Int32Array([bytes]).buffer);
  try {
    // A service's held libc (no dlopen per session), else one opened for this call.
    const r = withSocketCalls((calls): NotSentLowatResult => {
      const fd = socketFd(c, calls);
      if (fd === undefined) return "failed";
      return calls.setsockopt(fd, ipprotoTcp, tcpNotSentLowat, v, v.length) === 0
        ? "set"
        : "failed";
    });
    return r ?? "unavailable";
  } catch {
    return "failed"; // a call the permission does not cover after all: as without it
  }
}

/**
 * TCP_NOTSENT_LOWAT of the TCP socket under `conn` as the kernel has it (0: not set, the
 * system's default applies), or undefined where it cannot be read. For tests and status.
 */
export function notSentLowat(conn: unknown): number | undefined {
  const c = denoConn(conn);
  if (c === undefined || Deno.build.os !== "linux") return undefined;
  const lib = openLibc(libcSymbols);
  if (!lib) return undefined;
  try {
    const fd = socketFd(c, lib.symbols);
    if (fd === undefined) return undefined;
    const v = new Uint8Array(4);
    const len = new Uint8Array(new Uint32Array([4]).buffer);
    if (lib.symbols.getsockopt(fd, ipprotoTcp, tcpNotSentLowat, v, len) !== 0) return undefined;
    return new Int32Array(v.buffer)[0];
  } catch {
    return undefined;
  } finally {
    lib.close();
  }
}
