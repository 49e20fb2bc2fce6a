/**
 * The client half of a SOCKS5 UDP ASSOCIATE (RFC 1928 §7): the relay socket the client sends
 * its datagrams to, bound on the address the client reached the TCP listener at. It takes
 * datagrams only from the client that asked (its TCP peer address, and the port it named --
 * or, when it named none, the port of its first datagram), unwraps the SOCKS5 UDP header,
 * drops fragments (FRAG != 0), and hands each payload and its destination to the exit
 * (`onDatagram`); answers come back through `deliver`, wrapped with their source. Where the
 * datagrams leave is the exit's business: lib/udp `UdpExit` in the same process (seaprox),
 * or a depot-local at the far end of a tunnel. Every drop is counted by reason. The
 * association ends with the TCP control connection, on the idle timeout, or on a signal.
 * @module
 */

import type { Logger } from "../log.ts";
import { type HostPort, joinHostPort } from "../net/addr.ts";
import type { Duplex } from "../net/duplex.ts";
import { errorMessage } from "../net/errors.ts";
import { decodeSocks5Udp, encodeSocks5Udp } from "../socks5/udp.ts";
import type { Flow, FlowTable } from "./flows.ts";
import type { UdpTally } from "./metrics.ts";
import { sendCounted } from "./send.ts";
import { maxUdpPayloadBytes, UdpSocket } from "./socket.ts";

/** How an association ended (the shape of lib/proxy's `ServedEnd`). */
export interface UdpAssociationEnd {
  end: "done" | "idle" | "aborted" | "error";
  failure?: string;
  message?: string;
}

/** `::ffff:1.2.3.4` -> `1.2.3.4` (a dual-stack listener reports IPv4 clients so). */
export function unmappedIp(ip: string): string {
  return /^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(ip) ? ip.slice(7) : ip;
}

/** The null address a client sends when it does not know its UDP source yet. */
function isUnspecified(host: string): boolean {
  return host === "0.0.0.0" || host === "::";
}

/** A bound association: set `onDatagram`, then `run` it. */
export class UdpAssociation {
  /**
   * Where the client's datagrams go: the exit (set before `run`). Called in arrival order;
   * `payload` is a view into the received datagram.
   */
  onDatagram: (dest: HostPort, payload: Uint8Array) => void = () => {};
  readonly #relay: UdpSocket;
  readonly #client: HostPort;
  readonly #table: FlowTable<Flow>;
  readonly #tally: UdpTally;
  #lastActiveMs = performance.now();
  #closed = false;

  private constructor(
    relay: UdpSocket,
    client: HostPort,
    table: FlowTable<Flow>,
    tally: UdpTally,
  ) {
    this.#relay = relay;
    this.#client = client;
    this.#table = table;
    this.#tally = tally;
    relay.onMessage = table.drops.guard((data, from) => this.#fromClient(data, from));
  }

  /**
   * Bind the relay on `socket.local`'s address for the client at `socket.remote`, which said
   * it sends from `requested` (0.0.0.0:0 or a zero port: not known yet). Drops are counted in
   * `table.drops`, and answers sent to the client are held in `table`'s queued-byte bound.
   * Rejects with a `NetError` when the relay cannot be bound.
   */
  static async bind(
    socket: { local: HostPort; remote: HostPort },
    requested: HostPort,
    table: FlowTable<Flow>,
    tally: UdpTally,
    log: Logger,
  ): Promise<UdpAssociation> {
    const relay = await UdpSocket.bind(unmappedIp(socket.local.host), 0);
    // The source address is always the TCP peer's: a client cannot hand its relay to another
    // host. The port it names (if any) narrows it further.
    const client = { host: unmappedIp(socket.remote.host), port: requested.port };
    if (!isUnspecified(requested.host) && unmappedIp(requested.host) !== client.host) {
      log.debug("udp associate: client named another source address; using its TCP address", {
        named: joinHostPort(requested.host, requested.port),
        client: client.host,
      });
    }
    return new UdpAssociation(relay, client, table, tally);
  }

  /** Where the client sends its datagrams (the BND.ADDR/BND.PORT of the reply). */
  get addr(): HostPort {
    return this.#relay.addr;
  }

  /**
   * Serve until the control connection ends ("done"), nothing moved for `idleTimeoutMs`
   * ("idle"), `signal` fires ("aborted") or `ended` settles (the exit's carrier went away);
   * then the relay socket is closed (the caller closes its exit). The message counts the
   * drops, if any.
   */
  async run(
    control: Duplex,
    signal: AbortSignal,
    idleTimeoutMs: number,
    ended: Promise<UdpAssociationEnd> = new Promise(() => {}),
  ): Promise<UdpAssociationEnd> {
    let timer: ReturnType<typeof setInterval> | undefined;
    let onAbort = () => {};
    try {
      const end = await Promise.race<UdpAssociationEnd>([
        drainControl(control),
        ended,
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
      const drops = this.#table.drops;
      if (drops.total === 0) return end;
      const counted = `${drops.total} datagrams dropped ${JSON.stringify(drops.snapshot())}`;
      return { ...end, message: end.message ? `${end.message}; ${counted}` : counted };
    } finally {
      clearInterval(timer);
      signal.removeEventListener("abort", onAbort);
      this.close();
    }
  }

  /**
   * An answer from `src` for the client: wrapped in a SOCKS5 UDP header and sent, within the
   * table's queued-byte bound; too big with the header, it is dropped ("too-big").
   */
  deliver(src: HostPort, payload: Uint8Array): void {
    if (this.#closed) return;
    this.#lastActiveMs = performance.now();
    const packet = encodeSocks5Udp(src, payload);
    if (packet.length > maxUdpPayloadBytes) {
      // The answer fit in a datagram, but not with the SOCKS5 header in front of it.
      const from = joinHostPort(src.host, src.port);
      return this.#table.drops.drop("too-big", `${payload.length}-byte answer from ${from}`);
    }
    if (sendCounted(this.#relay, packet, this.#client, this.#table)) {
      this.#tally.down(payload.length);
    }
  }

  /** Close the relay socket (idempotent). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#relay.close();
  }

  #fromClient(data: Uint8Array, from: HostPort): void {
    const c = this.#client;
    const drops = this.#table.drops;
    if (unmappedIp(from.host) !== c.host || (c.port !== 0 && from.port !== c.port)) {
      return drops.drop("wrong-source", `from ${joinHostPort(from.host, from.port)}`);
    }
    c.port = from.port; // the first datagram fixes a port the client did not name
    let d;
    try {
      d = decodeSocks5Udp(data);
    } catch (err) {
      return drops.drop("malformed", errorMessage(err));
    }
    if (d.frag !== 0) return drops.drop("fragmented", `FRAG 0x${d.frag.toString(16)}`);
    this.#lastActiveMs = performance.now();
    this.onDatagram(d.dest, d.data);
  }
}

/** Read the control connection until it ends; anything the client sends there is ignored. */
async function drainControl(control: Duplex): Promise<UdpAssociationEnd> {
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
