/**
 * SOCKS5 UDP ASSOCIATE (RFC 1928 §7) for the socks5 proxy type: one UDP relay socket per
 * association, bound on the address the client reached the TCP listener at. It takes
 * datagrams only from the client that asked (its TCP peer address, and the port it named —
 * or, when it named none, the port of its first datagram), sends each payload to the
 * destination in its header from its own outbound socket (ACL-checked on every resolved
 * address), and wraps answers from destinations the client sent to. Fragments (FRAG ≠ 0)
 * are dropped; every drop is counted by reason. The association ends with the TCP control
 * connection, on the idle timeout, or when the listener stops.
 * @module
 */

import type { Logger } from "../log.ts";
import type { Acl } from "../net/acl.ts";
import { type HostPort, joinHostPort } from "../net/addr.ts";
import { resolveHost } from "../net/dial.ts";
import type { Duplex } from "../net/duplex.ts";
import { errorMessage } from "../net/errors.ts";
import type { RelayStats } from "../net/relay.ts";
import { decodeSocks5Udp, encodeSocks5Udp } from "../socks5/mod.ts";
import {
  type FlowLimits,
  FlowTable,
  maxUdpPayloadBytes,
  sendCounted,
  UdpDrops,
  UdpSocket,
} from "../udp/mod.ts";
import type { ServedEnd } from "./proxy_type.ts";

/** What UDP ASSOCIATE needs beyond the listener: the ACL and the bounds of each association. */
export interface UdpAssociateOptions extends FlowLimits {
  /** Checked on every datagram's destination, by name and by each resolved address. */
  acl?: Acl;
  /** Address family tried first when a destination name resolves to both. @default "ipv6" */
  prefer?: "ipv6" | "ipv4";
}

/** Counters of one association (also in its log line). */
export interface UdpAssociationStats {
  datagramsUp: number;
  datagramsDown: number;
}

/** `::ffff:1.2.3.4` → `1.2.3.4` (a dual-stack listener reports IPv4 clients so). */
function unmapped(ip: string): string {
  return /^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(ip) ? ip.slice(7) : ip;
}

/** The null address a client sends when it does not know its UDP source yet. */
function isUnspecified(host: string): boolean {
  return host === "0.0.0.0" || host === "::";
}

/** A bound association, waiting for `run`. */
export class UdpAssociation {
  readonly drops: UdpDrops;
  readonly flows: FlowTable<{ close(): void }>;
  readonly stats: UdpAssociationStats = { datagramsUp: 0, datagramsDown: 0 };
  readonly #relay: UdpSocket;
  readonly #client: HostPort;
  readonly #opts: UdpAssociateOptions;
  readonly #bytes: RelayStats;
  readonly #out = new Map<4 | 6, Promise<UdpSocket>>();
  /** Client datagrams are handled one after another, so they leave in the order they came. */
  #chain: Promise<void> = Promise.resolve();
  #lastActiveMs = performance.now();
  #closed = false;

  private constructor(
    relay: UdpSocket,
    client: HostPort,
    opts: UdpAssociateOptions,
    bytes: RelayStats,
    log: Logger,
  ) {
    this.#relay = relay;
    this.#client = client;
    this.#opts = opts;
    this.#bytes = bytes;
    this.drops = new UdpDrops(log);
    this.flows = new FlowTable(opts, this.drops);
    relay.onMessage = (data, from) => this.#fromClient(data, from);
  }

  /**
   * Bind the relay on `socket.local`'s address for the client at `socket.remote`, which said
   * it sends from `requested` (0.0.0.0:0 or a zero port: not known yet). Rejects with a
   * `NetError` when the relay cannot be bound.
   */
  static async bind(
    socket: { local: HostPort; remote: HostPort },
    requested: HostPort,
    opts: UdpAssociateOptions,
    bytes: RelayStats,
    log: Logger,
  ): Promise<UdpAssociation> {
    const relay = await UdpSocket.bind(unmapped(socket.local.host), 0);
    // The source address is always the TCP peer's: a client cannot hand its relay to another
    // host. The port it names (if any) narrows it further.
    const client = { host: unmapped(socket.remote.host), port: requested.port };
    if (!isUnspecified(requested.host) && unmapped(requested.host) !== client.host) {
      log.debug("udp associate: client named another source address; using its TCP address", {
        named: joinHostPort(requested.host, requested.port),
        client: client.host,
      });
    }
    return new UdpAssociation(relay, client, opts, bytes, log);
  }

  /** Where the client sends its datagrams (the BND.ADDR/BND.PORT of the reply). */
  get addr(): HostPort {
    return this.#relay.addr;
  }

  /**
   * Serve until the control connection ends ("done"), nothing moved for `idleTimeoutMs`
   * ("idle") or `signal` fires ("aborted"); then every socket of the association is closed.
   */
  async run(control: Duplex, signal: AbortSignal, idleTimeoutMs: number): Promise<ServedEnd> {
    let timer: ReturnType<typeof setInterval> | undefined;
    let onAbort = () => {};
    try {
      const ended = await Promise.race<ServedEnd>([
        drainControl(control),
        new Promise((resolve) => {
          onAbort = () => resolve({ end: "aborted" });
          if (signal.aborted) onAbort();
          signal.addEventListener("abort", onAbort, { once: true });
        }),
        new Promise((resolve) => {
          if (idleTimeoutMs <= 0) return;
          timer = setInterval(() => {
            if (performance.now() - this.#lastActiveMs >= idleTimeoutMs) resolve({ end: "idle" });
          }, Math.min(5_000, Math.max(100, idleTimeoutMs / 4)));
        }),
      ]);
      const drops = this.drops.total;
      return drops > 0
        ? {
          ...ended,
          message: `${drops} datagrams dropped ${JSON.stringify(this.drops.snapshot())}`,
        }
        : ended;
    } finally {
      clearInterval(timer);
      signal.removeEventListener("abort", onAbort);
      this.close();
    }
  }

  /** Close the relay, the outbound sockets and the flow table (idempotent). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#relay.close();
    this.flows.close();
    for (const p of this.#out.values()) {
      // A socket still binding is closed when it is ready; a failed bind left nothing.
      p.then((s) => s.close(), () => {});
    }
  }

  #fromClient(data: Uint8Array, from: HostPort): void {
    const c = this.#client;
    if (unmapped(from.host) !== c.host || (c.port !== 0 && from.port !== c.port)) {
      return this.drops.drop("wrong-source", `from ${joinHostPort(from.host, from.port)}`);
    }
    c.port = from.port; // the first datagram fixes a port the client did not name
    let d;
    try {
      d = decodeSocks5Udp(data);
    } catch (err) {
      return this.drops.drop("malformed", errorMessage(err));
    }
    if (d.frag !== 0) return this.drops.drop("fragmented", `FRAG 0x${d.frag.toString(16)}`);
    this.#lastActiveMs = performance.now();
    // Held in the queue budget while it waits behind earlier datagrams (a name to resolve).
    if (!this.flows.reserve(d.data.length)) return;
    const { dest, data: payload } = d;
    this.#chain = this.#chain.then(async () => {
      try {
        await this.#send(dest, payload);
      } finally {
        this.flows.release(payload.length);
      }
    });
  }

  async #send(dest: HostPort, payload: Uint8Array): Promise<void> {
    const target = joinHostPort(dest.host, dest.port);
    const acl = this.#opts.acl && !this.#opts.acl.empty ? this.#opts.acl : undefined;
    const byName = acl?.refusesName(dest);
    if (byName) return this.drops.drop("not-allowed", `${target} refused by ${byName.rule}`);
    let addrs: string[];
    try {
      addrs = await resolveHost(dest.host, this.#opts.prefer ?? "ipv6");
    } catch (err) {
      return this.drops.drop("resolve", errorMessage(err));
    }
    const ip = acl ? addrs.find((a) => acl.check(dest, a).allowed) : addrs[0];
    if (ip === undefined) return this.drops.drop("not-allowed", `${target} refused by the ACL`);
    const to = { host: unmapped(ip), port: dest.port };
    this.flows.getOrOpen(joinHostPort(to.host, to.port), () => ({ close: () => {} }));
    const out = await this.#outbound(to.host.includes(":") ? 6 : 4);
    if (!out || this.#closed || !sendCounted(out, payload, to, this.flows)) return;
    this.stats.datagramsUp++;
    this.#bytes.aToB += payload.length;
  }

  /** The outbound socket of one family, bound on first use (undefined if it cannot be). */
  async #outbound(family: 4 | 6): Promise<UdpSocket | undefined> {
    let p = this.#out.get(family);
    if (!p) {
      p = UdpSocket.bind(family === 6 ? "::" : "0.0.0.0", 0);
      this.#out.set(family, p);
      p.then((s) => s.onMessage = (data, from) => this.#fromDest(data, from), () => {});
    }
    try {
      return await p;
    } catch (err) {
      this.drops.drop("send-failed", `no IPv${family} socket: ${errorMessage(err)}`);
      return undefined;
    }
  }

  #fromDest(data: Uint8Array, from: HostPort): void {
    const src = { host: unmapped(from.host), port: from.port };
    const key = joinHostPort(src.host, src.port);
    if (!this.flows.get(key)) return this.drops.drop("wrong-source", `answer from ${key}`);
    this.#lastActiveMs = performance.now();
    const packet = encodeSocks5Udp(src, data);
    if (packet.length > maxUdpPayloadBytes) {
      // The answer fit in a datagram, but not with the SOCKS5 header in front of it.
      return this.drops.drop("too-big", `${data.length}-byte answer from ${key}`);
    }
    if (!sendCounted(this.#relay, packet, this.#client, this.flows)) return;
    this.stats.datagramsDown++;
    this.#bytes.bToA += data.length;
  }
}

/** Read the control connection until it ends; anything the client sends there is ignored. */
async function drainControl(control: Duplex): Promise<ServedEnd> {
  const buf = new Uint8Array(512);
  try {
    while (await control.read(buf) !== null) {
      // RFC 1928 gives the control connection no further messages: bytes are discarded.
    }
    return { end: "done" };
  } catch (err) {
    return { end: "done", failure: "closed", message: errorMessage(err) };
  }
}
