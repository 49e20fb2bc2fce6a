/**
 * One connected tunnel client as the server holds it: its mux session, control stream,
 * virtual hosts and public TCP and UDP ports, and how it is closed.
 * @module
 */

import type { Session, Stream } from "../mux/mod.ts";
import { closeQuietly, writeAll } from "../net/mod.ts";
import { encodeMessage, type SessionEndCause } from "./protocol.ts";
import { fingerprint } from "./registry.ts";
import type { PortListener, PortProtocol } from "./port_tunnels.ts";
import type { HostAccess } from "./access.ts";
import type { HostRewrite } from "./rewrite.ts";

/** A connected client as the admin API shows it (no secret). */
export interface ClientInfo {
  /** Server-local client number. */
  id: number;
  /** SHA-256 tag of its identifier. */
  fingerprint: string;
  /** Address of its transport connection. */
  remote: string;
  /** Epoch ms when it connected. */
  since: number;
  /** Virtual hosts it serves. */
  hosts: string[];
  /** Public TCP tunnel ports it holds. */
  tcpPorts: number[];
  /** Public UDP tunnel ports it holds. */
  udpPorts: number[];
  /** Last measured mux ping round trip (clients held by this instance). */
  rttMs?: number;
  /**
   * False while its health check fails (or has not passed yet): it gets no new streams. A
   * client without a health check is always healthy.
   */
  healthy: boolean;
  /** Tunnel streams open to it now (idle ones included). */
  openStreams: number;
  /**
   * Of those, idle ones a front keeps for later public connections: not load (least-streams
   * balancing counts `openStreams - idleStreams`).
   */
  idleStreams?: number;
  /** Tunnel streams opened to it so far (its share of a group's requests). */
  streams: number;
  /** In a cluster (shared registry): the instance holding it. */
  instance?: string;
}

/** Memo of `clientKey` (a SHA-256 per routed request was 2-3 % of a front's CPU). */
const digests = new Map<string, string>();
/** Entries kept before the memo starts over (identifiers are few; this bounds a flood). */
const maxDigestMemo = 4096;

/** The map key of an identifier's live client: never the secret itself. */
export function clientKey(identifier: string): string {
  let d = digests.get(identifier);
  if (d === undefined) {
    if (digests.size >= maxDigestMemo) digests.clear();
    d = fingerprint(identifier) + ":" + identifier.length;
    digests.set(identifier, d);
  }
  return d;
}

/** One connected client: its mux session, hosts and TCP/UDP tunnels. */
export class ClientConn {
  /** Epoch ms when the session started. */
  readonly since: number = Date.now();
  /** Virtual hosts it serves. */
  hosts: string[] = [];
  /** True once the handshake is done (routing uses only ready clients). */
  ready: boolean = false;
  /** Public TCP tunnel listeners by port. */
  readonly tcp: Map<number, PortListener> = new Map();
  /** Public UDP tunnel sockets by port. */
  readonly udp: Map<number, PortListener> = new Map();
  /** The control stream, once the client opened it. */
  control: Stream | undefined;
  /** The hooks `whenLeaving` was given, until they ran (`dropIdle`). */
  #onLeaving: (() => void)[] | undefined = [];
  /** Why the server ended this session on purpose (set by `close(reason)`). */
  endCause: SessionEndCause | undefined;
  /**
   * Sent before the ControlMsg in every tunnel stream's SYN: set on a client held by another
   * cluster instance (lib/tunnel/cluster.ts), whose session is the link to that instance.
   */
  streamPrefix: Uint8Array | undefined;
  /** Protocols whose server-defined tunnels its handshake opened (later ones open at once). */
  readonly serverPortsReady: Set<PortProtocol> = new Set();
  /**
   * What its health check last reported (`health` messages on the control stream); a client
   * that announced a check starts unhealthy until its first report.
   */
  healthy: boolean = true;
  /** Tunnel streams open to it now (TunnelStream counts them), idle ones included. */
  openStreams: number = 0;
  /** Of `openStreams`, those idle in a front's pool (TunnelStream.setIdle counts them). */
  idleStreams: number = 0;
  /** Tunnel streams opened to it so far. */
  streams: number = 0;
  #sessionOver = false;
  /** Access rules it set for its hosts in its handshake (the server's own rules win). */
  access: HostAccess | undefined;
  /** Header rewrites it set for its hosts in its handshake (applied before the server's). */
  rewrite: HostRewrite | undefined;
  /** Digest of those rules as sent ("" for none): a group's members must send the same. */
  rulesDigest: string = "";
  #closing: Promise<void> | undefined;
  /** A client's session, before its handshake. */
  constructor(
    readonly id: number,
    readonly fingerprint: string,
    readonly remote: string,
    readonly session: Session,
    readonly key: string = "",
  ) {
    // A dead session must take no new stream even before its attach() has cleaned up.
    session.closed.then(() => this.#sessionOver = true);
  }

  /** Whether it can take a new stream now: ready, healthy, its session alive. */
  get usable(): boolean {
    return this.ready && this.healthy && !this.#sessionOver;
  }

  /**
   * Streams carrying requests now: open ones but those idle in a front's pool, which wait for
   * a public connection and cost the client nothing (its load for least-streams balancing).
   */
  get busyStreams(): number {
    return this.openStreams - this.idleStreams;
  }

  /** Whether close() has started. */
  get closing(): boolean {
    return this.#closing !== undefined;
  }

  /** What the admin API shows of it. */
  info(): ClientInfo {
    return {
      id: this.id,
      fingerprint: this.fingerprint,
      remote: this.remote,
      since: this.since,
      hosts: this.hosts,
      tcpPorts: [...this.tcp.keys()],
      udpPorts: [...this.udp.keys()],
      rttMs: this.session.rttMs,
      healthy: this.healthy,
      openStreams: this.openStreams,
      idleStreams: this.idleStreams,
      streams: this.streams,
    };
  }

  /**
   * Run `f` when the client leaves (it closed its control stream, or close() began), so front
   * ends drop their idle streams and its drain is quick; at once if it already left. A front
   * that comes to the client later (a request for a host it served none of yet) must not keep
   * an idle stream either: it would hold the drain until the session ends.
   */
  whenLeaving(f: () => void): void {
    if (this.#onLeaving) this.#onLeaving.push(f);
    else f();
  }

  /** The client is leaving: run the `whenLeaving` hooks now, and later ones at once. */
  dropIdle(): void {
    const hooks = this.#onLeaving;
    this.#onLeaving = undefined;
    for (const f of hooks ?? []) f();
  }

  /**
   * Tell the client why (when `reason` is given), release the public ports (awaited, so
   * a replacing client can bind them), then tear the session down (go away) in the
   * background.
   */
  close(reason?: SessionEndCause): Promise<void> {
    this.#closing ??= (async () => {
      this.endCause ??= reason;
      this.ready = false;
      this.dropIdle();
      if (reason && this.control) {
        const msg = encodeMessage({ type: "sessionEnd", reason });
        await writeAll(this.control, msg).catch(() => {
          // The client is already gone: it cannot be told.
        });
      }
      await Promise.allSettled([...this.tcp.values(), ...this.udp.values()].map((s) => s.stop()));
      if (this.control) closeQuietly(this.control);
      this.session.close().catch(() => {
        // Transport already gone: nothing else to release.
      });
    })();
    return this.#closing;
  }
}
