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
 * succeed harmlessly. Without the FFI permission, or off Linux, it falls back to `close()`.
 * `node:net` sockets use `resetAndDestroy()`; Duplexes with a `reset()` (mux streams) use it.
 * @module
 */

/** A Duplex that can abort itself (mux stream: RST frame; node socket: TCP RST). */
export interface Resettable {
  reset(): void;
}

const solSocket = 1;
const soLinger = 13;
const oRdonlyCloexec = 0o2000000;
const lingerZero = new Uint8Array(new Int32Array([1, 0]).buffer);
const devNullPath = new TextEncoder().encode("/dev/null\0");

let ffiUsable: boolean | undefined;

/**
 * libc through FFI, or null where that is not possible (no permission, not Linux, no glibc).
 * Opened per reset and closed by the caller: resets are rare (a relay cut short), and a
 * library held open for the process would count as a leaked resource in every test.
 */
function openLibc(): Deno.DynamicLibrary<typeof libcSymbols> | null {
  if (ffiUsable === false) return null;
  try {
    ffiUsable ??= Deno.build.os === "linux" &&
      Deno.permissions.querySync({ name: "ffi" }).state === "granted";
    return ffiUsable ? Deno.dlopen("libc.so.6", libcSymbols) : null;
  } catch {
    // No libc.so.6 (musl) or FFI refused: resets degrade to an ordinary close.
    ffiUsable = false;
    return null;
  }
}

const libcSymbols = {
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  dup2: { parameters: ["i32", "i32"], result: "i32" },
  open: { parameters: ["buffer", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  getpeername: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
} as const;

type LibcSymbols = Deno.DynamicLibrary<typeof libcSymbols>["symbols"];

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

/**
 * The OS descriptor of a Deno TCP/TLS connection: an internal field on accepted connections;
 * for dialled ones (which lack it) the socket among /proc/self/fd whose ends are the conn's.
 */
function fdOf(conn: object, c: LibcSymbols): number | undefined {
  const fd = acceptedFd(conn);
  if (fd !== undefined) return fd;
  const { localAddr, remoteAddr } = conn as Partial<Deno.Conn>;
  if (localAddr?.transport !== "tcp" || remoteAddr?.transport !== "tcp") return undefined;
  const key = `${localAddr.port}/${remoteAddr.port}`;
  const cached = socketsByPorts.get(key);
  if (cached !== undefined && portsKey(c, cached) === key) return cached;
  socketsByPorts = scanSockets(c);
  return socketsByPorts.get(key);
}

/** Every socket descriptor of this process by `localPort/remotePort`. */
function scanSockets(c: LibcSymbols): Map<string, number> {
  const found = new Map<string, number>();
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync("/proc/self/fd")];
  } catch {
    return found; // no read permission on /proc: no reset
  }
  for (const e of entries) {
    const n = Number(e.name);
    let link: string;
    try {
      link = Deno.readLinkSync(`/proc/self/fd/${n}`);
    } catch {
      continue; // closed since the listing (the listing's own descriptor, for one)
    }
    if (link.startsWith("socket:")) found.set(portsKey(c, n), n);
  }
  return found;
}

/** `localPort/remotePort` of descriptor `fd` (-1 for an end that is not TCP). */
function portsKey(c: LibcSymbols, fd: number): string {
  return `${portOf(c.getsockname, fd)}/${portOf(c.getpeername, fd)}`;
}

/** The TCP port of one end (getsockname/getpeername) of descriptor `fd`, or -1. */
function portOf(
  call: (fd: number, addr: Uint8Array, len: Uint8Array) => number,
  fd: number,
): number {
  const addr = new Uint8Array(128);
  const len = new Uint8Array(new Uint32Array([addr.length]).buffer);
  if (call(fd, addr, len) !== 0) return -1;
  const family = addr[0] | (addr[1] << 8);
  return family === 2 || family === 10 ? (addr[2] << 8) | addr[3] : -1; // AF_INET, AF_INET6
}

/**
 * Release the socket behind a Deno connection with a RST; true when done. The caller still
 * closes `conn` afterwards (that frees Deno's resource and the /dev/null descriptor).
 */
export function resetDenoSocket(conn: object): boolean {
  if (!("localAddr" in conn)) return false; // not a Deno connection
  const lib = openLibc();
  if (!lib) return false;
  try {
    const c = lib.symbols;
    const fd = fdOf(conn, c);
    if (fd === undefined) return false;
    if (c.setsockopt(fd, solSocket, soLinger, lingerZero, lingerZero.length) !== 0) return false;
    const devNull = c.open(devNullPath, oRdonlyCloexec);
    if (devNull < 0) return false;
    const ok = c.dup2(devNull, fd) === fd;
    c.close(devNull);
    return ok;
  } finally {
    lib.close();
  }
}

/** Whether `c` has its own `reset()`. */
export function isResettable(c: unknown): c is Resettable {
  return typeof (c as Partial<Resettable> | null)?.reset === "function";
}
