/**
 * `UdpSocket`: a `node:dgram` socket behind a small promise API. Why node:dgram: Deno 2.9.6's
 * own `Deno.listenDatagram` needs `--unstable-net`; node:dgram needs no unstable flag, so the
 * services keep their permissions (`--allow-net`) and nothing else.
 *
 * Measured (Deno 2.9.6): 20 000 node:dgram sockets bound and closed in a loop leave ~440 MB
 * RSS (native memory; the JS heap stays ~4 MB), against ~75 MB for `Deno.listenDatagram`. In
 * seaprox's UDP forward (one socket per peer flow) the two came out alike, though -- 5000 new
 * flows took RSS from ~70 MB to ~220 MB (node:dgram) and ~270 MB (Deno's), flat at ~230 MB
 * up to 20 000 flows -- so the flag-free backend is kept.
 * @module
 */

// Types only: node:dgram is loaded by the first bind(), so a service that relays no UDP
// carries no node layer (~1 MB of heap for node:dgram alone, bench/RESULTS.md weight2).
import type dgram from "node:dgram";
import { type HostPort, ipFamily } from "../net/addr.ts";
import { resolveHost } from "../net/dial.ts";
import { errorMessage, NetError } from "../net/errors.ts";

/** Largest UDP payload over IPv4 (65535 - 20 IP - 8 UDP); IPv6 allows 65527. */
export const maxUdpPayloadBytes = 65_507;

/** A datagram handler: `from` is an IP literal (no brackets) and a port. */
export type DatagramHandler = (data: Uint8Array, from: HostPort) => void;

/** Why a send failed: the datagram was too large for the path, or anything else. */
export class UdpSendError extends Error {
  override name = "UdpSendError";
  constructor(readonly reason: "too-big" | "send-failed", message: string) {
    super(message);
  }
}

/** A bound UDP socket. Incoming datagrams go to `onMessage`; errors never throw from it. */
export class UdpSocket {
  readonly #sock: dgram.Socket;
  readonly #addr: HostPort;
  #closed = false;
  #closing: Promise<void> | undefined;
  /**
   * Called for every datagram received (set before traffic arrives; dropped otherwise). What
   * it throws, Deno's node:dgram swallows: a relay sets it through `UdpDrops.guard` (a scan of
   * lib/ in tests/udp_guard_test.ts fails on one set without it).
   */
  onMessage: DatagramHandler = () => {};

  private constructor(sock: dgram.Socket, addr: HostPort) {
    this.#sock = sock;
    this.#addr = addr;
    sock.on("message", (msg: Uint8Array, rinfo: dgram.RemoteInfo) => {
      this.onMessage(
        new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength),
        { host: rinfo.address, port: rinfo.port },
      );
    });
    // Errors after bind (ICMP port unreachable reported on Linux ...) concern one datagram,
    // not the socket: sends report theirs through their own callback.
    sock.on("error", () => {});
  }

  /**
   * Bind `host:port` (port 0: kernel-chosen). A host name is resolved (IPv4 first). Rejects
   * with a `NetError` ("addr-in-use" as its message for a busy port, reason "other").
   * `reuseAddr` sets SO_REUSEADDR, so sockets that all set it share the port (see lib/net
   * `sharedUdpPortOptions` for what Linux does with them).
   */
  static async bind(
    host: string,
    port: number,
    opts: { reuseAddr?: boolean } = {},
  ): Promise<UdpSocket> {
    const bare = host.replace(/^\[|\]$/g, "");
    const ip = ipFamily(bare) ? bare : (await resolveHost(bare, "ipv4"))[0];
    const { createSocket } = await import("node:dgram");
    const sock = createSocket({
      type: ipFamily(ip) === 6 ? "udp6" : "udp4",
      reuseAddr: opts.reuseAddr === true,
    });
    try {
      await new Promise<void>((resolve, reject) => {
        sock.once("error", reject);
        sock.bind(port, ip, () => {
          sock.off("error", reject);
          resolve();
        });
      });
    } catch (err) {
      sock.close();
      throw new NetError("other", `cannot bind udp ${ip}:${port}: ${errorMessage(err)}`, {
        cause: err,
      });
    }
    const a = sock.address();
    return new UdpSocket(sock, { host: a.address, port: a.port });
  }

  /** The bound address (the real port when 0 was asked). */
  get addr(): HostPort {
    return this.#addr;
  }

  /** Whether this socket speaks IPv6 (its peers must be IPv6 literals). */
  get ipv6(): boolean {
    return ipFamily(this.#addr.host) === 6;
  }

  /**
   * Send one datagram to `to` (an IP literal). Resolves when the kernel took it; rejects with
   * {@linkcode UdpSendError} ("too-big" for EMSGSIZE) -- never throws synchronously.
   */
  send(data: Uint8Array, to: HostPort): Promise<void> {
    if (this.#closed) return Promise.reject(new UdpSendError("send-failed", "socket closed"));
    return new Promise((resolve, reject) => {
      try {
        this.#sock.send(data, to.port, to.host, (err) => {
          if (!err) return resolve();
          const code = (err as { code?: string }).code;
          reject(new UdpSendError(code === "EMSGSIZE" ? "too-big" : "send-failed", err.message));
        });
      } catch (err) {
        reject(new UdpSendError("send-failed", errorMessage(err)));
      }
    });
  }

  /**
   * Close the socket (idempotent). The port is released asynchronously: await the result
   * before binding it again.
   */
  close(): Promise<void> {
    if (this.#closing) return this.#closing;
    this.#closed = true;
    this.#closing = new Promise<void>((resolve) => {
      try {
        this.#sock.close(() => resolve());
      } catch {
        // Already closed by node (ERR_SOCKET_DGRAM_NOT_RUNNING): nothing left to release.
        resolve();
      }
    });
    return this.#closing;
  }
}
