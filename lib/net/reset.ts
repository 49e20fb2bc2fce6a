/**
 * Abortive close (TCP RST) of a connection, so a peer learns that a relayed stream was cut
 * instead of seeing a clean end: a close-delimited download whose far side died must end in an
 * error at the client (curl: "Connection reset by peer"), not in a FIN that reads as complete.
 *
 * Deno 2.9.6 has no SO_LINGER and `Deno.TcpConn.close()` always sends a FIN first (the runtime
 * shuts the write half down before it closes the socket), so a reset takes two libc calls
 * through FFI on the connection's file descriptor: `SO_LINGER {on, 0}`, then `dup2()` of
 * /dev/null over the descriptor. That releases the socket at once (the kernel answers with a
 * RST) while the descriptor number stays taken until Deno closes it, so nothing else can be
 * given that number meanwhile; Deno's own shutdown and close then act on /dev/null and fail or
 * succeed harmlessly. Without the FFI permission for libc (./libc.ts; the installed services
 * and the image have `--allow-ffi=<libc path>`), or off Linux, it falls back to `close()`:
 * {@linkcode resetSupport} says which, and every service logs it once at start.
 * `node:net` sockets use `resetAndDestroy()`; Duplexes with a `reset()` (mux streams) use it.
 *
 * Checked under Deno 2.9.6, none of these sends a RST without FFI: `Deno.TcpConn` has only
 * setNoDelay/setKeepAlive; closing it with unread input still sends a FIN first (the peer
 * reads EOF); `new net.Socket({ fd })` on its descriptor fails (EINVAL); node's native
 * `TCPWrap.openFromRid(rid)` adopts it (reads and writes work) but `resetAndDestroy()` on it
 * sends nothing, and the peer reads EOF once Deno closes the conn. Only sockets node:net made
 * itself reset without FFI.
 * @module
 */

import { libcPath, openDescriptors, openLibc, pointerSymbols } from "./libc.ts";

/** A Duplex that can abort itself (mux stream: RST frame; node socket: TCP RST). */
export interface Resettable {
  reset(): void;
}

const solSocket = 1;
const soLinger = 13;
const oRdonlyCloexec = 0o2000000;
const lingerZero = new Uint8Array(new Int32Array([1, 0]).buffer);
const devNullPath = new TextEncoder().encode("/dev/null\0");

/**
 * Whether this process can reset connections, and how: for the one line every service logs
 * at start (a deployment without the permission cuts relays with a FIN, which a client of a
 * close-delimited transfer takes for a complete one).
 */
export function resetSupport(): { available: boolean; libc?: string; fix?: string } {
  const path = libcPath();
  if (path !== null) return { available: true, libc: path };
  return {
    available: false,
    fix: Deno.build.os === "linux"
      ? "grant --allow-ffi=<path of glibc's libc.so.6> (tools/install.ts does)"
      : `TCP resets need Linux, not ${Deno.build.os}`,
  };
}

const libcSymbols = {
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  dup2: { parameters: ["i32", "i32"], result: "i32" },
  open: { parameters: ["buffer", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  getpeername: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  ...pointerSymbols,
} as const;

type Libc = Deno.DynamicLibrary<typeof libcSymbols>;
/** libc's calls for resets and socket options (see {@linkcode withSocketCalls}). */
export type LibcSymbols = Libc["symbols"];
/** The libc calls {@linkcode socketFd} makes (a library opened with more symbols will do). */
export type FdCalls = Pick<
  LibcSymbols,
  "getsockname" | "getpeername" | "opendir" | "readdir" | "closedir" | "memcpy"
>;

let fdSymbol: symbol | undefined;

/**
 * The OS descriptor of an accepted Deno TCP connection (Deno 2.9.6 keeps it in an internal
 * symbol field; dialled connections lack it), or undefined. For socket options Deno has no
 * API for (SO_LINGER here, SO_ORIGINAL_DST in original_dst.ts), used through FFI.
 */
export function acceptedFd(conn: object): number | undefined {
  fdSymbol ??= Object.getOwnPropertySymbols(conn).find((s) => s.description === "Deno.internal.fd");
  const fd = fdSymbol && (conn as Record<symbol, unknown>)[fdSymbol];
  return typeof fd === "number" && fd >= 0 ? fd : undefined;
}
/**
 * Socket descriptors by `localPort/remotePort`, from the last scan of /proc/self/fd: a server
 * stopping with thousands of relays resets every dialled side, and one scan serves them all
 * (each hit is checked against the descriptor's ports before use; a miss scans again).
 */
let socketsByPorts = new Map<string, number>();
/** The highest descriptor the last scan listed, or a probe found since. */
let highestFd = -1;
/**
 * How far past {@linkcode highestFd} a miss probes before it lists /proc/self/fd: the kernel
 * gives a new socket the lowest free number, so a conn dialled since the last scan sits in a
 * gap below it or just past it.
 */
const probeMarginFds = 64;

/**
 * The OS descriptor of a Deno TCP/TLS connection: an internal field on accepted connections;
 * for dialled ones (which lack it) the socket among /proc/self/fd whose ends are the conn's.
 * Either way only a descriptor whose ends are the conn's ports: the internal field outlives
 * `close()`, and by then its number may belong to another connection (a newcomer accepted
 * right after a shed one got it), which a reset must never hit.
 */
export function socketFd(conn: object, c: FdCalls): number | undefined {
  const { localAddr, remoteAddr } = conn as Partial<Deno.Conn>;
  if (localAddr?.transport !== "tcp" || remoteAddr?.transport !== "tcp") return undefined;
  const key = `${localAddr.port}/${remoteAddr.port}`;
  const fd = acceptedFd(conn);
  if (fd !== undefined) return portsKey(c, fd) === key ? fd : undefined;
  const cached = socketsByPorts.get(key);
  if (cached !== undefined && portsKey(c, cached) === key) return cached;
  const probed = probeSocket(c, localAddr.port, remoteAddr.port);
  if (probed !== undefined) {
    // Entries past the descriptors there are can only be stale (closed conns): start over.
    if (socketsByPorts.size > 2 * (highestFd + probeMarginFds)) socketsByPorts = new Map();
    socketsByPorts.set(key, probed);
    return probed;
  }
  socketsByPorts = scanSockets(c);
  highestFd = -1;
  // A loop, not Math.max(...values): a spread of every socket overflows the call's arguments
  // in a process with ~100k descriptors.
  for (const n of socketsByPorts.values()) if (n > highestFd) highestFd = n;
  return socketsByPorts.get(key);
}

/**
 * The descriptor whose ends are `local`/`remote`, probed by number up to
 * {@linkcode probeMarginFds} past the highest known one, its local port asked first and its
 * peer's only on a match: one FFI call for most descriptors, where listing /proc/self/fd takes
 * five per entry and every entry (a reset of a conn dialled since the last scan, among 1,000
 * relays, cost 50-160 ms that way, bench/RESULTS.md dloc). Undefined when none is there.
 */
function probeSocket(c: FdCalls, local: number, remote: number): number | undefined {
  for (let fd = 0; fd <= highestFd + probeMarginFds; fd++) {
    if (portOf(c.getsockname, fd) !== local || portOf(c.getpeername, fd) !== remote) continue;
    if (fd > highestFd) highestFd = fd;
    return fd;
  }
  return undefined;
}

/**
 * Every TCP socket descriptor of this process by `localPort/remotePort` (listed through libc:
 * Deno itself wants --allow-all for /proc/self/fd).
 */
function scanSockets(c: FdCalls): Map<string, number> {
  const found = new Map<string, number>();
  for (const fd of openDescriptors(c)) {
    const key = portsKey(c, fd);
    if (!key.includes("-1")) found.set(key, fd); // not a connected TCP socket otherwise
  }
  return found;
}

/** `localPort/remotePort` of descriptor `fd` (-1 for an end that is not TCP). */
function portsKey(c: FdCalls, fd: number): string {
  return `${portOf(c.getsockname, fd)}/${portOf(c.getpeername, fd)}`;
}

/** Room for a sockaddr and its length, reused: FFI calls are synchronous, one at a time. */
const sockaddrBuf = new Uint8Array(128);
const sockaddrLenInit = new Uint8Array(new Uint32Array([sockaddrBuf.length]).buffer);
const sockaddrLen = new Uint8Array(4);

/** The TCP port of one end (getsockname/getpeername) of descriptor `fd`, or -1. */
export function portOf(
  call: (fd: number, addr: Uint8Array, len: Uint8Array) => number,
  fd: number,
): number {
  const addr = sockaddrBuf;
  sockaddrLen.set(sockaddrLenInit);
  if (call(fd, addr, sockaddrLen) !== 0) return -1;
  const family = addr[0] | (addr[1] << 8);
  return family === 2 || family === 10 ? (addr[2] << 8) | addr[3] : -1; // AF_INET, AF_INET6
}

/** Holders of libc for resets now ({@linkcode holdResets}). */
let holds = 0;
/** libc opened for the holders at the first reset they made; undefined until then. */
let heldLibc: Libc | null | undefined;

/**
 * Keep libc open for resets until the returned release runs: a service holds it while it
 * runs (services/_kit.ts `onShutdown`), so a burst of resets (a storm of given-up requests,
 * a stop with thousands of relays) does not pay `Deno.dlopen` and its close each, about 2 ms
 * of CPU per reset (bench/RESULTS.md dloc). Opened at the first reset while held, closed when
 * the last holder releases (a library left open counts as a leaked resource in tests).
 * Without a holder each reset opens and closes its own. Release is idempotent.
 */
export function holdResets(): () => void {
  holds++;
  let held = true;
  return () => {
    if (!held) return;
    held = false;
    if (--holds > 0) return;
    heldLibc?.close();
    heldLibc = undefined;
  };
}

/**
 * Run `fn` with libc's socket calls: the library a service holds ({@linkcode holdResets}) if
 * held, else one opened and closed for this call; undefined without libc (no FFI permission,
 * not Linux). For socket options set once per long-lived connection (./notsent_lowat.ts): a
 * service pays no `Deno.dlopen` per connection for them.
 */
export function withSocketCalls<T>(fn: (c: LibcSymbols) => T): T | undefined {
  const own = holds === 0;
  const lib = own ? openLibc(libcSymbols) : (heldLibc ??= openLibc(libcSymbols));
  if (!lib) return undefined;
  try {
    return fn(lib.symbols);
  } finally {
    if (own) lib.close();
  }
}

/**
 * Release the socket behind a Deno connection with a RST; true when done. The caller still
 * closes `conn` afterwards (that frees Deno's resource and the /dev/null descriptor).
 */
export function resetDenoSocket(conn: object): boolean {
  if (!("localAddr" in conn)) return false; // not a Deno connection
  const own = holds === 0;
  const lib = own ? openLibc(libcSymbols) : (heldLibc ??= openLibc(libcSymbols));
  if (!lib) return false;
  try {
    const c = lib.symbols;
    const fd = socketFd(conn, c);
    if (fd === undefined) return false;
    if (c.setsockopt(fd, solSocket, soLinger, lingerZero, lingerZero.length) !== 0) return false;
    const devNull = c.open(devNullPath, oRdonlyCloexec);
    if (devNull < 0) return false;
    const ok = c.dup2(devNull, fd) === fd;
    c.close(devNull);
    return ok;
  } catch {
    // A call the permission does not cover after all: the caller's close ends it with a FIN,
    // as without FFI (resetSupport() told the operator at start).
    return false;
  } finally {
    if (own) lib.close();
  }
}

/** Whether `c` has its own `reset()`. */
export function isResettable(c: unknown): c is Resettable {
  return typeof (c as Partial<Resettable> | null)?.reset === "function";
}
