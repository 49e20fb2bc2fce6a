/**
 * The original destination of a connection that iptables/nftables `REDIRECT` (or DNAT) sent
 * to us: `getsockopt(fd, SOL_IP, SO_ORIGINAL_DST)` for IPv4 (also on a dual-stack socket
 * whose peer is v4-mapped), `getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST)` for IPv6. The
 * kernel answers from the connection-tracking entry the NAT rule made.
 *
 * Deno 2.9.6 has no getsockopt, so this calls libc through FFI (`Deno.dlopen`, stable: needs
 * `--allow-ffi` for libc, see ./libc.ts; no unstable flag) on the descriptor of the accepted connection (reset.ts
 * `acceptedFd`). Linux with glibc only; {@linkcode originalDstUnavailable} says why not
 * elsewhere, so a service can refuse a redir listener at start with one clear line.
 * @module
 */

import { type HostPort, isLoopbackHost } from "./addr.ts";
import { acceptedFd } from "./reset.ts";
import { copyFrom, libcPath, openDescriptors, openLibc, pointerSymbols } from "./libc.ts";

/** Why the original destination could not be read. */
export type OriginalDstFailure =
  /** No FFI permission, not Linux, or no glibc: the listener cannot work at all. */
  | "unavailable"
  /** The connection was not redirected (no NAT entry, or it names this very socket). */
  | "not-redirected"
  /**
   * The connection is one this process dialled, redirected back to it: a REDIRECT rule on
   * the OUTPUT chain that does not exclude our own traffic (relaying it would loop).
   */
  | "redirect-loop"
  /** The descriptor of the connection could not be found. */
  | "no-descriptor"
  /** getsockopt failed otherwise (errno in the message). */
  | "getsockopt";

/** The original destination of a connection could not be recovered. */
export class OriginalDstError extends Error {
  override name = "OriginalDstError";
  constructor(readonly reason: OriginalDstFailure, message: string) {
    super(message);
  }
}

const solIp = 0;
const solIpv6 = 41;
/** SO_ORIGINAL_DST (linux/netfilter_ipv4.h) and IP6T_SO_ORIGINAL_DST share the number 80. */
const soOriginalDst = 80;
const afInet = 2;
const afInet6 = 10;
const enoent = 2;
const enoprotoopt = 92;
/** Room for a sockaddr_in6 (28 bytes); the kernel insists on at least the family's size. */
const sockaddrBytes = 32;

const libcSymbols = {
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  getpeername: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  ...pointerSymbols,
  __errno_location: { parameters: [], result: "pointer" },
} as const;

/** The answer of the first {@linkcode originalDstUnavailable} (null: not asked yet). */
let unavailable: string | undefined | null = null;

/**
 * Why this process cannot read SO_ORIGINAL_DST (a one-line reason naming the fix), or
 * undefined when it can. Asked once per process (permissions are fixed at start).
 */
export function originalDstUnavailable(): string | undefined {
  if (unavailable === null) unavailable = whyUnavailable();
  return unavailable;
}

function whyUnavailable(): string | undefined {
  if (Deno.build.os !== "linux") {
    return `transparent redirection (SO_ORIGINAL_DST) is Linux only, not ${Deno.build.os}`;
  }
  if (libcPath() === null) {
    return "reading the original destination (getsockopt SO_ORIGINAL_DST through FFI) needs " +
      "glibc and Deno's --allow-ffi permission for it (--allow-ffi=<path of libc.so.6>)";
  }
  return undefined;
}

/**
 * Where `conn` (an accepted TCP connection) was going before a NAT rule redirected it to
 * us. Throws {@linkcode OriginalDstError}: "not-redirected" when there is no NAT entry or
 * the entry names this socket itself (a client that connected to the listener directly:
 * relaying it "back" would connect us to ourselves), "unavailable" without FFI.
 *
 * @example
 * ```ts ignore
 * // Behind `iptables -t nat -A PREROUTING -p tcp --dport 80 -j REDIRECT --to-ports 8080`:
 * for await (const conn of Deno.listen({ port: 8080 })) {
 *   console.log(originalDestination(conn)); // { host: "93.184.215.14", port: 80 }
 *   conn.close();
 * }
 * ```
 */
export function originalDestination(conn: Deno.TcpConn): HostPort {
  const why = originalDstUnavailable();
  if (why) throw new OriginalDstError("unavailable", why);
  const fd = acceptedFd(conn);
  if (fd === undefined) {
    throw new OriginalDstError("no-descriptor", "no OS descriptor on this connection");
  }
  const local = conn.localAddr;
  // A dual-stack socket whose peer is IPv4 (::ffff:a.b.c.d) has IPv4 conntrack: SOL_IP.
  const v6 = local.hostname.includes(":") && !local.hostname.startsWith("::ffff:");
  const lib = openLibc(libcSymbols)!; // libcPath() found one above
  let dest: HostPort;
  try {
    const addr = new Uint8Array(sockaddrBytes);
    const len = new Uint8Array(new Uint32Array([addr.length]).buffer);
    if (lib.symbols.getsockopt(fd, v6 ? solIpv6 : solIp, soOriginalDst, addr, len) !== 0) {
      const errno = errnoOf(lib.symbols, lib.symbols.__errno_location());
      if (errno === enoent) {
        throw new OriginalDstError(
          "not-redirected",
          "no NAT entry for this connection: it was not redirected here (connect through the " +
            "REDIRECT rule, not to the listener itself)",
        );
      }
      if (errno === enoprotoopt) {
        throw new OriginalDstError(
          "not-redirected",
          "no connection tracking in the kernel (nf_conntrack not loaded): nothing redirected",
        );
      }
      throw new OriginalDstError("getsockopt", `getsockopt SO_ORIGINAL_DST: errno ${errno}`);
    }
    dest = parseSockaddr(addr);
    if (sameEndpoint(dest, { host: local.hostname, port: local.port })) {
      throw new OriginalDstError(
        "not-redirected",
        `the connection was made to the listener itself (${local.hostname}:${local.port}), ` +
          "not redirected to it",
      );
    }
    // Redirected on the OUTPUT chain (REDIRECT sends local traffic to loopback): it may be
    // a connection this process dialled, caught by a rule that does not exclude us.
    const remote = { host: conn.remoteAddr.hostname, port: conn.remoteAddr.port };
    if (isLoopbackHost(local.hostname) && ownSocketBetween(lib.symbols, remote, dest)) {
      throw new OriginalDstError(
        "redirect-loop",
        `this is our own connection to ${dest.host}:${dest.port}, redirected back to us: ` +
          "exclude this process's traffic from the REDIRECT rule (iptables -m owner ! " +
          "--uid-owner/--gid-owner, nftables meta skuid/skgid)",
      );
    }
  } finally {
    lib.close();
  }
  return dest;
}

type Libc = Deno.DynamicLibrary<typeof libcSymbols>["symbols"];

/**
 * Whether this process holds a socket from `local` to `peer`. Only asked for
 * loopback-redirected connections, so ordinary traffic never pays for the scan.
 */
function ownSocketBetween(c: Libc, local: HostPort, peer: HostPort): boolean {
  for (const fd of openDescriptors(c)) {
    const here = endOf(c.getsockname, fd);
    if (!here || !sameEndpoint(here, local)) continue;
    const there = endOf(c.getpeername, fd);
    if (there && sameEndpoint(there, peer)) return true;
  }
  return false;
}

/** One end (getsockname/getpeername) of descriptor `fd`, if it is an IP socket. */
function endOf(
  call: (fd: number, addr: Uint8Array, len: Uint8Array) => number,
  fd: number,
): HostPort | undefined {
  const addr = new Uint8Array(sockaddrBytes);
  const len = new Uint8Array(new Uint32Array([addr.length]).buffer);
  if (call(fd, addr, len) !== 0) return undefined; // not a socket (or closed since listed)
  const family = addr[0] | (addr[1] << 8);
  return family === afInet || family === afInet6 ? parseSockaddr(addr) : undefined;
}

/** errno of the calling thread, read right after the failed call. */
function errnoOf(c: Libc, p: Deno.PointerValue): number {
  if (p === null) return -1;
  const b = copyFrom(c, p, new Uint8Array(4));
  return new DataView(b.buffer).getInt32(0, true); // int, host order (little-endian Linux)
}

/** A sockaddr_in / sockaddr_in6 as host (IPv4 text, or IPv6 text; v4-mapped -> IPv4) and port. */
export function parseSockaddr(b: Uint8Array): HostPort {
  const family = b[0] | (b[1] << 8); // sa_family_t, host order (little-endian Linux targets)
  const port = (b[2] << 8) | b[3];
  if (family === afInet) return { host: b.subarray(4, 8).join("."), port };
  if (family === afInet6) return { host: ipv6Text(b.subarray(8, 24)), port };
  throw new OriginalDstError("getsockopt", `SO_ORIGINAL_DST returned address family ${family}`);
}

/** RFC 5952 text of 16 address bytes (longest zero run as ::; v4-mapped as dotted IPv4). */
function ipv6Text(a: Uint8Array): string {
  if (a.subarray(0, 10).every((x) => x === 0) && a[10] === 0xff && a[11] === 0xff) {
    return a.subarray(12, 16).join(".");
  }
  const groups = Array.from({ length: 8 }, (_, i) => (a[2 * i] << 8) | a[2 * i + 1]);
  let best = -1, bestLen = 1;
  for (let i = 0; i < 8;) {
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  const hex = (g: number[]) => g.map((x) => x.toString(16)).join(":");
  return best < 0
    ? hex(groups)
    : `${hex(groups.slice(0, best))}::${hex(groups.slice(best + bestLen))}`;
}

/** Whether two endpoints are the same address and port (v4-mapped IPv6 equals its IPv4). */
function sameEndpoint(a: HostPort, b: HostPort): boolean {
  const bare = (h: string) => h.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/, "");
  return a.port === b.port && bare(a.host) === bare(b.host);
}
