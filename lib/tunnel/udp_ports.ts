/**
 * Public UDP ports of a tunnel server (`--udp`, the sibling of `--tcp`): each peer that sends
 * to a public port gets a flow -- one tunnel stream to the client, carrying that peer's
 * datagrams both ways (u16 length-prefixed, lib/udp `DatagramStream`), so the client's
 * answers find their way back to it. Flows are lib/udp's bounded `FlowTable` per port: they
 * expire when idle, are bounded in number (the least recently active is closed for a
 * newcomer) and in queued bytes; every dropped datagram is counted by reason, and the
 * `warren_udp_*` counters of relay "tunnel-server" count what passes (up: toward the client).
 * @module
 */

import type { Logger } from "../log.ts";
import { errorMessage, joinHostPort, sharedUdpPortOptions } from "../net/mod.ts";
import {
  DatagramStream,
  encodeDatagramFrame,
  type FlowLimits,
  FlowTable,
  maxDatagramFrameBytes,
  sendCounted,
  type UdpDropReason,
  UdpDrops,
  UdpSocket,
  UdpTally,
} from "../udp/mod.ts";
import type { ClientConn } from "./client_conn.ts";
import { TunnelError, type TunnelStream } from "./tunnel_stream.ts";
import { isRefusal, Refusals } from "./refusals.ts";
import {
  type PortClients,
  type PortListener,
  type PortStreamOpener,
  type PortTunnelFailure,
  type PortTunnelInfo,
  PortTunnels,
  type PortTunnelSpec,
} from "./port_tunnels.ts";

/** A UDP tunnel defined on the server side (admin API `POST /udp`, `--udp`). */
export type UdpTunnelSpecServer = PortTunnelSpec;
/** Why a server-defined UDP tunnel cannot be added. */
export type UdpTunnelFailure = PortTunnelFailure;

/** Datagram counters of one public UDP port (kept across its client's reconnects). */
export interface UdpPortStats {
  /** Datagrams and payload bytes from public peers to the client. */
  datagramsIn: number;
  bytesIn: number;
  /** Datagrams and payload bytes from the client back to public peers. */
  datagramsOut: number;
  bytesOut: number;
  /** Flows opened, closed idle, closed to make room at the bound. */
  flowsOpened: number;
  flowsExpired: number;
  flowsEvicted: number;
  /** Dropped datagrams by reason. */
  drops: Partial<Record<UdpDropReason, number>>;
}

/** A UDP tunnel as the admin API lists it: with its flows and counters. */
export interface UdpTunnelInfo extends PortTunnelInfo {
  /** Flows held now (while open). */
  flows: number;
  /** Counters since the server started. */
  stats: UdpPortStats;
}

/** Options of {@linkcode UdpPorts}. */
export interface UdpPortsOptions extends FlowLimits {
  /** Public UDP ports clients may ask for (inclusive range); none when absent. */
  range?: { min: number; max: number };
  /** Address public UDP tunnels bind. */
  hostname: string;
  /** Where sockets log. */
  log: Logger;
}

/** One peer's flow: its tunnel stream, framed. */
class PeerFlow {
  constructor(readonly ts: TunnelStream, readonly ds: DatagramStream) {}
  close(): void {
    this.ts.release();
  }
}

/** A bound public UDP port with its flows. */
class UdpListener implements PortListener {
  readonly addrText: string;
  constructor(
    readonly sock: UdpSocket,
    readonly flows: FlowTable<PeerFlow>,
    readonly onStop: () => void,
  ) {
    this.addrText = joinHostPort(sock.addr.host, sock.addr.port);
  }
  stop(): Promise<void> {
    this.flows.close();
    this.onStop();
    return this.sock.close();
  }
}

/** What a port counted: its datagrams, and the flows and drops of its sockets gone by. */
interface PortCounts {
  tally: UdpTally;
  past: Pick<UdpPortStats, "flowsOpened" | "flowsExpired" | "flowsEvicted" | "drops">;
}

/** The public UDP ports of one tunnel server: definitions, owners, sockets, flows. */
export class UdpPorts extends PortTunnels<UdpListener> {
  /** Counters by public port. */
  readonly #counts = new Map<number, PortCounts>();
  /** Live flow tables by public port (for the flow gauge). */
  readonly #tables = new Map<number, FlowTable<PeerFlow>>();

  /** Ports relayed through `core`'s tunnel streams. */
  constructor(core: PortStreamOpener, readonly opts: UdpPortsOptions) {
    super("udp", core, opts.range, opts.log);
  }

  protected held(client: ClientConn): Map<number, PortListener> {
    return client.udp;
  }

  protected async probe(port: number): Promise<void> {
    await (await UdpSocket.bind(this.opts.hostname, port)).close();
  }

  #countsOf(port: number): PortCounts {
    let c = this.#counts.get(port);
    if (!c) {
      const past = { flowsOpened: 0, flowsExpired: 0, flowsEvicted: 0, drops: {} };
      this.#counts.set(port, c = { tally: new UdpTally("tunnel-server"), past });
    }
    return c;
  }

  /** Counters of `port` since the server started: the live table's folded in. */
  statsOf(port: number): UdpPortStats {
    const { tally, past } = this.#countsOf(port);
    const t = this.#tables.get(port);
    const drops = { ...past.drops };
    for (const [r, n] of Object.entries(t?.drops.snapshot() ?? {})) {
      drops[r as UdpDropReason] = (drops[r as UdpDropReason] ?? 0) + n;
    }
    return {
      datagramsIn: tally.datagramsUp,
      bytesIn: tally.bytesUp,
      datagramsOut: tally.datagramsDown,
      bytesOut: tally.bytesDown,
      flowsOpened: past.flowsOpened + (t?.opened ?? 0),
      flowsExpired: past.flowsExpired + (t?.expired ?? 0),
      flowsEvicted: past.flowsEvicted + (t?.evicted ?? 0),
      drops,
    };
  }

  /** Every UDP tunnel with its flows and counters. */
  override list(): UdpTunnelInfo[] {
    return super.list().map((t) => this.describe(t));
  }

  /** `t` with its port's flows and counters. */
  describe(t: PortTunnelInfo): UdpTunnelInfo {
    return {
      ...t,
      flows: this.#tables.get(t.publicPort)?.size ?? 0,
      stats: this.statsOf(t.publicPort),
    };
  }

  /**
   * Bind `publicPort` for `client`; each new peer opens a tunnel stream whose SYN carries
   * its first datagram. With `serverLocalPort` (a server-defined tunnel) the client is asked
   * for that local port.
   */
  protected async bind(
    clients: PortClients,
    publicPort: number,
    serverLocalPort: string | undefined,
    log: Logger,
  ): Promise<UdpListener> {
    // As for TCP (tcp_ports.ts): a server-defined port, and in a cluster a port a client
    // asked for, is every worker's; UDP shares it with SO_REUSEADDR (see sharedUdpPortOptions).
    const shared = serverLocalPort === undefined && !this.core.clustered
      ? {}
      : sharedUdpPortOptions();
    const sock = await UdpSocket.bind(this.opts.hostname, publicPort, shared);
    const host = `udp:${publicPort}`;
    const localPort = serverLocalPort ?? String(publicPort);
    const serverPort = serverLocalPort === undefined ? undefined : publicPort;
    const core = this.core;
    const plog = log.child({ udp: publicPort });
    const counts = this.#countsOf(publicPort);
    const tally = counts.tally;
    const drops = new UdpDrops(plog, "tunnel-server");
    const flows = new FlowTable<PeerFlow>(this.opts, drops);
    /** Clients that refused this port lately (see refusals.ts). */
    const refused = new Refusals<ClientConn>();
    /** Flows whose stream is being opened, by peer: later datagrams wait on them in order. */
    const pending = new Map<string, Promise<PeerFlow | undefined>>();
    let stopped = false;

    const toPeer = (peer: { host: string; port: number }, key: string) => (d: Uint8Array) => {
      flows.touch(key);
      if (sendCounted(sock, d, peer, flows)) tally.down(d.length);
    };

    const openFlow = async (
      peer: { host: string; port: number },
      key: string,
      first: Uint8Array,
    ): Promise<PeerFlow | undefined> => {
      let ts: TunnelStream;
      // Members that refused it lately are passed over; when no other can take the flow, the
      // one picked then is asked again only once its refusal expired.
      const client = await clients.pick(refused) ?? await clients.pick();
      if (client && refused.has(client)) {
        // It refused this port a moment ago: no new stream to be refused again.
        drops.drop("refused", `the client refused this port; flow of ${key}`);
        return undefined;
      }
      if (!client) {
        core.countRequest(host, "502");
        drops.drop("send-failed", `no ready client for the flow of ${key}`);
        return undefined;
      }
      try {
        ts = await core.openStream(
          client,
          host,
          "udp",
          localPort,
          encodeDatagramFrame(first),
          serverPort,
          clients.members,
        );
      } catch (err) {
        core.countRequest(host, "502");
        drops.drop("send-failed", `no stream for ${key}: ${errorMessage(err)}`);
        return undefined;
      }
      try {
        await ts.reply(core.responseTimeoutMs);
      } catch (err) {
        ts.release();
        const timeout = err instanceof TunnelError && err.reason === "timeout";
        // Its answer (not a timeout or a lost session) is remembered for a while.
        if (err instanceof TunnelError && isRefusal(err.reason)) refused.add(client);
        core.countRequest(host, timeout ? "504" : "502");
        drops.drop("send-failed", `client refused the flow of ${key}: ${errorMessage(err)}`);
        return undefined;
      }
      if (stopped) {
        ts.release();
        return undefined;
      }
      core.countRequest(host, "proxied");
      tally.up(first.length);
      const flow = new PeerFlow(ts, new DatagramStream(ts.body(), flows));
      flows.getOrOpen(key, () => flow);
      void this.#answers(flow, toPeer(peer, key), () => {
        if (flows.peek(key) === flow) flows.delete(key);
        else flow.close();
      }, plog);
      return flow;
    };

    sock.onMessage = drops.guard((data, peer) => {
      const key = joinHostPort(peer.host, peer.port);
      if (data.length > maxDatagramFrameBytes) return drops.drop("too-big", key);
      const send = (flow: PeerFlow | undefined) => {
        // No flow: its stream could not be opened (the first datagram's drop is counted there).
        if (!flow) return drops.drop("send-failed", `no flow for ${key}`);
        if (flow.ds.send(data)) tally.up(data.length);
      };
      const flow = flows.get(key);
      if (flow) return send(flow);
      let p = pending.get(key);
      if (!p) {
        // Streams still opening are bounded too (eviction makes room among open ones only).
        if (!flows.canOpen(key, pending.size)) return;
        p = openFlow(peer, key, data).catch((err) => void drops.failed(peer, err))
          .finally(() => pending.delete(key));
        pending.set(key, p);
        return;
      }
      // A datagram that arrives while its flow's stream is opening waits behind the first
      // one, so a peer's datagrams leave in the order they came. The wait costs queue budget.
      if (!flows.reserve(data.length)) return;
      void p.then((f) => {
        flows.release(data.length);
        send(f);
      }).catch((err) => drops.failed(peer, err));
    });

    this.#tables.set(publicPort, flows);
    return new UdpListener(sock, flows, () => {
      stopped = true;
      // Fold the table's counters into the port's before it goes.
      const { flowsOpened, flowsExpired, flowsEvicted, drops } = this.statsOf(publicPort);
      counts.past = { flowsOpened, flowsExpired, flowsEvicted, drops };
      if (this.#tables.get(publicPort) === flows) this.#tables.delete(publicPort);
    });
  }

  /**
   * Hand the client's datagrams on the flow's stream to `toPeer` until the client ends it
   * (its socket closed) or the flow is closed here; then `done`.
   */
  async #answers(
    flow: PeerFlow,
    toPeer: (d: Uint8Array) => void,
    done: () => void,
    log: Logger,
  ): Promise<void> {
    try {
      for (let d; (d = await flow.ds.read()) !== null;) toPeer(d);
    } catch (err) {
      log.debug("udp flow stream failed", { error: errorMessage(err) });
    } finally {
      done();
    }
  }
}
