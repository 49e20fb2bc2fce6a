/**
 * depot-server logic: the registry of connected exits (depot-locals) by name, pending
 * requests by id, and the matching of tunnel connections to SOCKS connections.
 *
 * Three listeners: control (locals dial in and say hello), SOCKS5 (clients), tunnel (one
 * connection per request from the local). A SOCKS CONNECT becomes a `connect{id,key}` on the
 * chosen exit's control connection; the local answers `connectFailed{id,reason}` or opens a
 * tunnel connection naming `{id,key}`, and the server relays SOCKS <-> tunnel.
 * @module
 */

import {
  type Abortable,
  abortSignalOf,
  after,
  BufferedReader,
  closeQuietly,
  type Deadline,
  deadlines,
  type Duplex,
  equalFixedLength,
  errorMessage,
  formatAddr,
  type HostPort,
  IdTable,
  isOutOfFds,
  joinHostPort,
  LiveList,
  minRelayBufferBytes,
  type NetFailureReason,
  ProtocolError,
  relay,
  relayPool,
  type RelayStats,
  resetQuietly,
  serve,
  type Server,
  withPrefix,
  writeAll,
} from "../net/mod.ts";
import { type LogFields, type Logger, silentLogger } from "../log.ts";
import {
  type CompactCodec,
  ControlConn,
  ControlError,
  ControlReader,
  ControlWriter,
  encodeFrame,
  type FirstMessage,
  firstMessageIn,
  type Outgoing,
  randomSecret,
  readFirstMessage,
  RemoteError,
  timingSafeEqual,
} from "../control/mod.ts";
import { Reply, replyForReason, sendSocks5Reply, Socks5Error } from "../socks5/mod.ts";
import {
  compactFeature,
  defaultExitName,
  defaultHeartbeatMs,
  depotHandshakeTimeoutMs,
  depotMaxMessageBytes,
  type DepotMessage,
  depotProtocol,
  DepotRefusal,
  endFeature,
  heartbeatDeadFactor,
  maxStandbyPerExit,
  muxFeature,
  openFeature,
  recentFailureCount,
  retireAfterFactor,
  retireFeature,
  shareFeature,
  standbyRetiredReason,
  udpFeature,
} from "./protocol.ts";
import { Session as MuxSession, type Stream } from "../mux/mod.ts";
import { acceptDepotSocks } from "./socks_front.ts";
import { depotCompact } from "./compact.ts";
import { ConfirmedEnd } from "./tunnel_end.ts";
import { AbortHub, defaultMaxConns, noDelay, perSourceShare } from "../net/mod.ts";
import { transportKind, type TransportName, withTransport } from "../transport/mod.ts";
import * as m from "./metrics.ts";
import { BoundAssociation } from "./udp.ts";
import {
  defaultUdpIdleTimeoutMs,
  type Flow,
  type FlowLimits,
  FlowTable,
  UdpAssociation,
  UdpDrops,
  UdpTally,
} from "../udp/mod.ts";
import { type AuthFailureLimiter, verifySecret } from "../net/ratelimit.ts";

/** Default bound on requests waiting for their exit's answer, across all exits. */
export const defaultMaxPending = 512;
/** Default time a request may wait for its tunnel connection (beyond the local's dial). */
export const defaultPendingTimeoutMs = 15_000;
/**
 * Idle standby spares an exit keeps while the process is out of file descriptors (at 64 per
 * exit, a few busy exits' spares alone can fill a 1024-fd table and leave no fd for a client).
 */
export const fdShortStandbyPerExit = 2;
/** How long after the last accept failed for want of fds the standby bound stays that low. */
export const fdShortWindowMs = 10_000;
/**
 * Default bound on idle standby spares across all exits (each an fd): eight exits at the
 * per-exit 64, or a fair share of it for more exits (see `standbyTotal`).
 */
export const defaultStandbyTotal = 512;

/** Options of {@linkcode DepotServer}. */
export interface DepotServerOptions {
  /** Shared secret every local must present in hello; "" accepts any (warns). @default "" */
  token?: string;
  /** Limits failed token attempts per source address (refused before the check). */
  authLimiter?: AuthFailureLimiter;
  /** Exit used by clients that send no username. @default "default" */
  defaultExit?: string;
  /** Control heartbeat interval, told to locals in welcome. @default 2000 */
  heartbeatMs?: number;
  /** Time for a hello, a SOCKS handshake or a tunnel handshake. @default 10000 */
  handshakeTimeoutMs?: number;
  /** Requests waiting for an exit at once; more get reply 0x01 at once. @default 512 */
  maxPending?: number;
  /**
   * Idle standby spares ("open") held across all exits: each exit holds at most its share
   * (this divided by the exits connected, at least 1, at most 64), told in welcome; an exit
   * that connects trims the others' oldest to the new share.
   * @default {@linkcode defaultStandbyTotal}
   */
  standbyTotal?: number;
  /** Time a request waits for its tunnel before reply 0x06 (TTL expired). @default 15000 */
  pendingTimeoutMs?: number;
  /** Close a relayed connection idle this long; 0 = never. @default 0 */
  idleTimeoutMs?: number;
  /**
   * How long locals may keep a pre-dialled tunnel connection silent (told in welcome); with
   * "retire", a quarter more is how long a standby spare waits idle before the server retires it.
   * @default half of handshakeTimeoutMs (60000 when that is 0)
   */
  spareIdleMs?: number;
  /** Concurrent connections per listener (a full one sheds its longest-idle). @default 1024 */
  maxConns?: number;
  /** Least idle time of a connection shed at a full listener (lib/net serve). @default 10000 */
  shedIdleMs?: number;
  /**
   * Bounds of each SOCKS5 UDP ASSOCIATE's relay: idle timeout (default 60 s: an association
   * ends when no datagram moved for that long) and queued bytes toward the client and the
   * tunnel (default 4 MiB). Destinations are bounded at the exit.
   */
  udp?: FlowLimits;
  /**
   * What carries the control and tunnel connections from depot-locals ("ws": a WebSocket
   * upgrade on each; TLS is the listeners' business). @default "tcp"
   */
  transport?: TransportName;
  /**
   * Offer compact frames (feature "compact") to locals that announce them; false speaks JSON
   * only, as servers before them did (interop tests). @default true
   */
  compact?: boolean;
  /** Where events go. @default silent */
  log?: Logger;
}

/** Listeners the server runs on (the service binds them, tests pass port-0 ones). */
export interface DepotListeners {
  /** Where depot-locals dial in (default port 7000). */
  control: Deno.Listener;
  /** Where SOCKS5 clients connect (default port 1080). */
  socks: Deno.Listener;
  /** Where depot-locals open tunnel connections (default port 7001). */
  tunnel: Deno.Listener;
}

/** One failed request, for the status page. */
export interface FailureRecord {
  /** ISO time. */
  at: string;
  /** Exit the client asked for ("?" when authentication failed first). */
  exit: string;
  /** Requested `host:port` (empty when unknown: an authentication failure). */
  dest: string;
  /**
   * The local's dial failure, or: no such exit, too many pending, SOCKS auth failed, a name
   * that is not UTF-8 or holds a control character.
   */
  reason: NetFailureReason | "no-exit" | "busy" | "auth" | "no-udp" | "bad-domain";
  /** Human-readable detail. */
  message?: string;
}

/** Status of one connected exit. */
export interface ExitStatus {
  /** Exit name (the SOCKS username that selects it). */
  name: string;
  /** Address of its control connection. */
  remote: string;
  /** ISO time of its hello. */
  connectedSince: string;
  /** Latest control round-trip time; null before the first pong. */
  rttMs: number | null;
  /** Whether SOCKS clients need its password. */
  passwordProtected: boolean;
  /** Software the local announced. */
  agent: string | null;
  /** Connections relaying now. */
  active: number;
  /** Connections relayed since it connected. */
  total: number;
  /** Requests it reported as failed (or that timed out). */
  failures: number;
  /** Bytes from clients to targets. */
  bytesUp: number;
  /** Bytes from targets to clients. */
  bytesDown: number;
  /** Idle standby spare tunnels ("open") held for the next requests. */
  spares: number;
}

/** What `/status` shows. */
export interface DepotServerStatus {
  /** Bound addresses as `host:port`. */
  listeners: { control: string; socks: string; tunnel: string };
  /** Exit used when a client sends no username. */
  defaultExit: string;
  /** Connected exits. */
  exits: ExitStatus[];
  /** Open mux tunnel sessions (locals in `--mux` mode). */
  muxSessions: number;
  /** Requests waiting for their exit's answer. */
  pending: number;
  /** Connections relaying now. */
  active: number;
  /** Connections relayed since start. */
  total: number;
  /** Failed requests since start. */
  failures: number;
  /** Failed requests since start, by reason (the page shows them beside `total`). */
  failuresByReason: Record<string, number>;
  /** Bytes from clients to targets, all exits. */
  bytesUp: number;
  /** Bytes from targets to clients, all exits. */
  bytesDown: number;
  /** The last failures, oldest first. */
  recentFailures: FailureRecord[];
}

/** A tunnel connection matched to its request. */
export interface TunnelArrival {
  ok: true;
  conn: Duplex;
  bound?: { host: string; port: number };
  /** Resolve when the relay is over: the tunnel handler then lets its connection go. */
  done: () => void;
}

/** What a request through an exit came to: its tunnel, or why there is none. */
export type Outcome = TunnelArrival | { ok: false; reason: NetFailureReason; message: string };

/** An exit held by another instance of a depot-server cluster (lib/cluster). */
export interface RemoteExit {
  /** Whether its SOCKS clients must authenticate. */
  readonly needsPassword: boolean;
  /** Whether `password` is its SOCKS password (constant time). */
  checkPassword(password: string): boolean;
  /** Whether it carries UDP (its local announced "udp"): else an ASSOCIATE gets 0x07 at once. */
  readonly carriesUdp: boolean;
  /** Have the instance holding it connect to `host:port` through it. */
  connect(host: string, port: number): Promise<Outcome>;
  /** Have the instance holding it open a UDP association through it (framed datagrams). */
  associate(): Promise<Outcome>;
}

/** What a request asks of an exit held here on another instance's behalf (`connectHere`). */
export type HereRequest = { type: "connect"; host: string; port: number } | { type: "associate" };

/** The signal of a relay nothing aborts (it ends with its client, idle time or link). */
const neverAborted = new AbortController().signal;

/** How a granted SOCKS request's relay ended (`failure`: why an association ended, exit side). */
interface GrantedEnd {
  end: string;
  failure?: string;
  cause?: string;
}

/** The fields of a granted SOCKS request's "connection closed" line. */
function closedFields(
  r: GrantedEnd,
  stats: RelayStats,
  udp: BoundAssociation | undefined,
  startedMs: number,
): LogFields {
  const fields: LogFields = {
    end: r.end,
    failure: r.failure,
    error: r.cause,
    up: stats.aToB,
    down: stats.bToA,
  };
  if (udp) {
    fields.datagramsUp = udp.tally.datagramsUp;
    fields.datagramsDown = udp.tally.datagramsDown;
  }
  fields.ms = Math.round(performance.now() - startedMs);
  return fields;
}

/**
 * Give up a granted SOCKS request whose bookkeeping threw before its relay began: the reply's
 * write (`replied`, written ahead of the bookkeeping) is waited for here, as the relay would
 * have, so its failure is not left unhandled; the tunnel and the association are closed and the
 * request's hold released. The one promise it adds is on this path only.
 */
function abandonGranted(
  replied: Promise<void>,
  outcome: TunnelArrival,
  udp: BoundAssociation | undefined,
): void {
  replied.catch(() => {
    // The client's reply went nowhere; the connection ends with the error that got us here.
  });
  closeQuietly(outcome.conn);
  udp?.close();
  outcome.done();
}

/** A cluster's side of the server: exits held elsewhere, and news of the ones held here. */
export interface DepotClusterHooks {
  remoteExit(name: string): RemoteExit | undefined;
  /** An exit connected here (`connected`, its name) or left (no argument). */
  exitsChanged(connected?: string): void;
}

/** The tunnel a request was written on ("open"), once its answer came. */
interface DirectSent {
  readonly conn: Duplex;
  /** The bytes read past the answer (forwarded first). */
  leftover(): Uint8Array;
}

/** How a request goes straight on a tunnel ("open"): see `#requestDirect`. */
interface DirectWay {
  /**
   * Write the request frame and read the answer: `req.answer()` with it (or `null`, the tunnel
   * ended first), `req.failed()` when the write or the read failed. Throws when the frame
   * cannot be sent at all (then nothing was written).
   */
  send(frame: Uint8Array, req: DirectRequest): void;
  /** Give the request up: the local sees its tunnel end (RST on a stream, reset on TCP). */
  giveUp(): void;
  /** A plain TCP tunnel, whose FIN counts once `end` confirms it: the connection. */
  readonly plain: Duplex | undefined;
  /**
   * Whether a request that ends unanswered may go another way ("unanswered": a standby spare
   * the local closed as it was taken); else it fails.
   */
  readonly retriable: boolean;
  /** The relay is over (a standby's handler lets its connection go). */
  done(): void;
}

/** What a retired standby spare reads before its end ("retire"): the same bytes for all. */
const retiredFrame = encodeFrame({
  v: depotProtocol.version,
  type: "error",
  reason: standbyRetiredReason,
  message: "standby spare idle past its time",
});

/**
 * A standby spare tunnel of an exit ("open"), idle until a request takes it; then the way that
 * request goes. One object per spare: the request path makes no closures of its own for it.
 * With "retire" it is its own deadline on the shared wheel: idle for `retireAfterFactor` x
 * `spareIdleMs`, it is retired here, where requests pick spares, so none is written on a spare
 * being retired.
 */
class Standby implements DirectWay, DirectSent, Deadline {
  /** Taken by a request. */
  used = false;
  readonly retriable = true;
  /** When it is retired if still idle (`Deadline`; only while on the wheel). */
  due = Infinity;
  /**
   * @param conn the tunnel connection
   * @param buffered its reader
   * @param answer the pending read of its first frame from the local: EOF while idle, the
   *   answer once used
   * @param release lets the tunnel handler (and so the connection) go
   * @param held its exit's idle standby spares, where it waits
   */
  constructor(
    readonly conn: Duplex,
    readonly buffered: BufferedReader,
    readonly answer: Promise<DepotMessage | null>,
    readonly release: () => void,
    readonly held: Standby[],
  ) {}

  /** A request takes it: off the wheel, never retired. */
  take(): this {
    this.used = true;
    deadlines.delete(this);
    return this;
  }

  /** Closed while idle (over the exit's share, the exit gone): off the wheel at once. */
  drop(): void {
    deadlines.delete(this);
    closeQuietly(this.conn);
  }

  /**
   * Idle for its time ("retire"): no request can take it from now on; the local reads
   * why (`error{reason: "retired"}`) and replaces it. The close ends the answer's read, whose
   * handler (see `#holdStandby`) lets the connection go.
   */
  fire(): void {
    if (this.used) return;
    const i = this.held.indexOf(this); // the oldest are retired first: at the front
    if (i >= 0) this.held.splice(i, 1);
    const conn = this.conn;
    const close = () => closeQuietly(conn);
    writeAll(conn, retiredFrame).then(close, close);
  }

  get plain(): Duplex {
    return this.conn;
  }

  leftover(): Uint8Array {
    return this.buffered.takeBuffered();
  }

  /**
   * Not awaited before the answer is: the local answers only once it read the whole frame,
   * and a failed write fails the request (its reset then ends the answer's read too).
   */
  send(frame: Uint8Array, req: DirectRequest): void {
    writeAll(this.conn, frame).catch(req.failed);
    this.answer.then((msg) => req.answer(msg, this), req.failed);
  }

  giveUp(): void {
    resetQuietly(this.conn);
  }

  done(): void {
    this.release();
  }
}

/**
 * A request on a stream we open on the exit's mux session, its SYN carrying the request
 * ("open"), and the answer decoded from the bytes the stream lends, in the turn they are
 * delivered (`readFirstMessage` only for an answer split over reads). One object per request:
 * it was a literal with three closures, a reader, a 1 KiB buffer and a copy; then an async
 * open, an async read and `readFirstMessage`, three promise turns between the answer's bytes
 * and the request's outcome.
 */
class StreamWay implements DirectWay, DirectSent {
  readonly plain = undefined;
  readonly retriable = false;
  #stream: Stream | undefined;
  #leftover: Uint8Array | undefined;

  constructor(
    readonly mux: MuxSession,
    readonly compact: CompactCodec<DepotMessage> | undefined,
  ) {}

  get conn(): Duplex {
    return this.#stream!; // read only once `send` returned
  }

  send(frame: Uint8Array, req: DirectRequest): void {
    const stream = this.mux.openNow(frame); // throws when the session takes no stream
    this.#stream = stream;
    stream.readView().then((v) => this.#got(stream, v, req), req.failed);
  }

  /** The first bytes the local wrote on the stream (`null`: it ended first). */
  #got(stream: Stream, v: Uint8Array | null, req: DirectRequest): void {
    if (v === null) return req.answer(null, this);
    const opts = { maxMessageBytes: 1024, compact: this.compact };
    let first: FirstMessage<DepotMessage> | undefined;
    let part: Uint8Array | undefined;
    try {
      first = firstMessageIn(v, depotProtocol, opts);
      if (!first) part = v.slice(); // part of the frame: the rest is read behind these bytes
    } catch (err) {
      return req.failed(err);
    } finally {
      stream.releaseView();
    }
    if (first) return this.#first(first, req);
    readFirstMessage(withPrefix(stream, part!), depotProtocol, opts)
      .then((f) => this.#first(f, req), req.failed);
  }

  #first(first: FirstMessage<DepotMessage>, req: DirectRequest): void {
    this.#leftover = first.leftover;
    req.answer(first.msg, this);
  }

  leftover(): Uint8Array {
    return this.#leftover!; // set before the answer is given
  }

  giveUp(): void {
    this.#stream?.reset();
  }

  done(): void {}
}

/** A SOCKS request waiting for its exit's answer. */
interface Pending {
  id: number;
  key: string;
  exit: ExitSession;
  dest: string;
  /** An ASSOCIATE: its tunnel carries framed datagrams, which end on their own. */
  udp: boolean;
  /** First call wins; returns false when the request was already settled. */
  settle(o: Outcome): boolean;
}

/**
 * A request written straight on a tunnel ("open", see `DepotServer.#requestDirect`): its entry
 * among the pending requests, its deadline on the shared wheel and the reading of its answer,
 * as one object (it was a promise executor, a literal and nine closures per request).
 */
class DirectRequest implements Pending, Deadline {
  readonly id: number;
  readonly key: string;
  readonly exit: ExitSession;
  readonly dest: string;
  readonly udp: boolean;
  /** The deadline's time on the wheel (`Deadline`). */
  due: number;
  /** What the request came to: settled once. */
  readonly outcome: Promise<Outcome | "unanswered">;
  #resolve!: (o: Outcome | "unanswered") => void;
  #settled = false;
  /** A plain tunnel's FIN gate, registered before the request goes out (see `ExitSession.gate`). */
  readonly #gate: ConfirmedEnd | undefined;

  /**
   * @param pending the server's pending requests by id (this one is added, and removed once
   *   settled)
   * @param timeoutMs how long the answer may take
   * @param endWaitMs how long a plain tunnel's FIN waits for its `end`
   */
  constructor(
    r: { id: number; key: string; exit: ExitSession; dest: string; udp: boolean },
    readonly way: DirectWay,
    readonly pending: IdTable<Pending>,
    timeoutMs: number,
    endWaitMs: number,
  ) {
    this.failed = this.#failed.bind(this);
    this.relayDone = this.#relayDone.bind(this);
    this.id = r.id;
    this.key = r.key;
    this.exit = r.exit;
    this.dest = r.dest;
    this.udp = r.udp;
    this.outcome = new Promise((resolve) => this.#resolve = resolve);
    this.due = deadlines.clockMs() + timeoutMs;
    deadlines.add(this);
    // A plain tunnel's FIN waits for `end{id}`, which may come (on the control connection)
    // before we read the answer: the gate is registered before the request goes out.
    this.#gate = way.plain && r.exit.confirmsEnds && !r.udp
      ? r.exit.gate(r.id, way.plain, endWaitMs)
      : undefined;
    pending.set(r.id, this);
    r.exit.pending.add(this);
  }

  /** The deadline passed (`Deadline`). */
  fire(): void {
    this.settle({ ok: false, reason: "timeout", message: "no answer on the tunnel in time" });
  }

  /** First call wins; false when already settled. A failure gives the tunnel up. */
  settle(o: Outcome | "unanswered"): boolean {
    if (this.#settled) return false;
    this.#settled = true;
    deadlines.delete(this);
    this.pending.delete(this.id);
    this.exit.pending.delete(this);
    if (o === "unanswered" || !o.ok) {
      // A request given up (timeout, exit gone, shutdown) ends its tunnel at the local.
      this.way.giveUp();
      this.relayDone();
    }
    this.#resolve(o);
    return true;
  }

  /**
   * The request frame could not be written (or the answer not read). The two callbacks are
   * bound functions, not arrow class fields, which kept finished connections through scavenges
   * (lib/net/serve.ts LiveConn.handshakeDone).
   */
  readonly failed: (err: unknown) => void;
  /** The relay is over (or never started): the gate goes, the way lets its tunnel go. */
  readonly relayDone: () => void;

  #failed(err: unknown): void {
    this.settle({ ok: false, reason: "network-unreachable", message: describe(err) });
  }

  /**
   * The local's answer on the tunnel (`null`: the tunnel ended first): settle with it. Called
   * from a promise callback nothing awaits: a throw here would be an unhandled rejection,
   * which ends the process. It fails the request instead.
   */
  answer(msg: DepotMessage | null, sent: DirectSent): void {
    try {
      const o = this.#outcomeOf(msg, sent);
      // Settled meanwhile (timeout, exit gone): an answer that came anyway is dropped.
      if (!this.settle(o) && o !== "unanswered" && o.ok) {
        closeQuietly(o.conn);
        o.done();
      }
    } catch (err) {
      this.#failed(err);
    }
  }

  #relayDone(): void {
    const gate = this.#gate;
    if (gate) this.exit.ends.delete(this.id, gate);
    this.way.done();
  }

  #outcomeOf(msg: DepotMessage | null, sent: DirectSent): Outcome | "unanswered" {
    if (msg?.type === "tunnel" && msg.id === this.id && equalFixedLength(msg.key, this.key)) {
      const bound = msg.boundHost !== undefined && msg.boundPort !== undefined
        ? { host: msg.boundHost, port: msg.boundPort }
        : undefined;
      const tunnel = withPrefix(sent.conn, sent.leftover());
      const gate = this.#gate;
      if (gate) gate.inner = tunnel;
      return { ok: true, conn: gate ?? tunnel, bound, done: this.relayDone };
    }
    if (msg?.type === "connectFailed" && msg.id === this.id) {
      return { ok: false, reason: msg.reason, message: msg.message ?? msg.reason };
    }
    if (msg === null) {
      if (!this.way.retriable) {
        return { ok: false, reason: "other", message: "stream ended unanswered" };
      }
      // The local closed the standby as the request was written on it (a local without
      // "retire" expires its spares itself): a try lost, its latency added.
      this.exit.log.debug("standby spare ended unanswered, asking again", { id: this.id });
      return "unanswered";
    }
    return { ok: false, reason: "other", message: `unexpected ${msg.type} for request ${this.id}` };
  }
}

/** One relay through an exit, in its `live` list (its stats are in the server's `#live`). */
interface ExitRelay {
  readonly stats: RelayStats;
}

/** A connected depot-local. */
class ExitSession {
  readonly connectedSince = new Date();
  active = 0;
  total = 0;
  failures = 0;
  bytesUp = 0;
  bytesDown = 0;
  /**
   * Its relays' byte counts. Lists, not Sets, for what churns per connection here (`live`,
   * `pending`, `relays`): see lib/net/live_list.ts. A relay's `RelayStats` is in the server's
   * `#live`, so the exit lists a record of its own that points at it (an item is in one list).
   */
  readonly live = new LiveList<ExitRelay>();
  readonly pending = new LiveList<Pending>();
  /** The local announced "udp": it serves `associate`. */
  carriesUdp = false;
  /** The local announced "open": it takes requests on streams we open on its mux session. */
  opensStreams = false;
  /** Both sides announced "compact": hot messages to it go as compact frames. */
  compact: CompactCodec<DepotMessage> | undefined;
  /** Its mux session, when it opened one (and announced "open"). */
  mux: MuxSession | undefined;
  /** With "open": the secret (welcome's `sessionKey`) its mux and standby frames present. */
  sessionKey: string | undefined;
  /**
   * With "open": the key of every request written straight on a tunnel of this exit (see
   * `DirectRequest`). Such a request is answered on the way it went, which is the local's
   * already, so its key proves nothing a per-request one would: one per exit spares a random
   * secret and its hex per request. A fresh tunnel naming such a request is refused.
   */
  directKey: string | undefined;
  /** With "open": its idle standby spares, newest last. */
  readonly standby: Standby[] = [];
  /** It announced "share": it is told (`standbyShare`) when its standby bound changes. */
  hearsShare = false;
  /** It announced "retire": its idle standby spares are retired here (`retireAfterFactor`). */
  takesRetire = false;
  /** The standby bound it was told last (welcome's `standbyMax` or `standbyShare`). */
  toldShare: number | undefined;
  /** A mux session presented its key: its requests go there, it holds no standby spares. */
  muxBound = false;
  /**
   * Plain tunnels relaying now, by request id, waiting for (or past) their `end`. Not a `Map`:
   * it churns per connection (lib/net/id_table.ts).
   */
  readonly ends = new IdTable<ConfirmedEnd>();
  /** Its relays' aborts (see `relayAbort`), aborted when the control connection ends. */
  readonly relays = new LiveList<AbortHub>();
  /** Its "ok" requests' series (bound once). */
  readonly okCount: { inc(): void };
  constructor(
    readonly name: string,
    readonly ctl: ControlConn<DepotMessage>,
    readonly remote: string,
    readonly socksPassword: string | undefined,
    readonly agent: string | undefined,
    /** The local confirms clean tunnel ends (`end`): its tunnels' FINs wait for them. */
    readonly confirmsEnds: boolean,
    readonly log: Logger,
  ) {
    this.okCount = m.serverSeries.ok(name);
    // One listener for all its plain tunnels: an unconfirmed FIN never will be once the
    // control connection is gone.
    ctl.signal.addEventListener("abort", () => {
      for (const gate of this.ends) gate.fail();
      for (const a of [...this.relays]) {
        this.relays.delete(a);
        a.abort(ctl.signal.reason);
      }
    }, { once: true });
  }

  /**
   * The abort of one relay through this exit, aborted when the control connection ends; drop
   * it from `relays` when the relay is over. One per relay, not a listener each on the control
   * connection's long-lived signal: every add and remove of those scanned all the others (a
   * micro-benchmark: 12 µs per connection with 32 relaying, 85 with 1,000).
   */
  relayAbort(): AbortHub {
    const a = new AbortHub();
    if (this.ctl.signal.aborted) a.abort(this.ctl.signal.reason);
    else this.relays.add(a);
    return a;
  }

  /** A FIN gate for plain tunnel `id`, registered before its request goes out. */
  gate(id: number, tunnel: Duplex, waitMs: number): ConfirmedEnd {
    const gate = new ConfirmedEnd(tunnel, waitMs);
    if (this.ctl.signal.aborted) gate.fail();
    this.ends.set(id, gate);
    return gate;
  }

  /** Whether it takes a share of the standby spares: "open", and no mux session. */
  get holdsStandby(): boolean {
    return this.sessionKey !== undefined && !this.muxBound;
  }

  status(): ExitStatus {
    let up = this.bytesUp, down = this.bytesDown;
    for (const { stats: s } of this.live) (up += s.aToB, down += s.bToA);
    return {
      name: this.name,
      remote: this.remote,
      connectedSince: this.connectedSince.toISOString(),
      rttMs: this.ctl.rttMs === undefined ? null : Math.round(this.ctl.rttMs * 1000) / 1000,
      passwordProtected: this.socksPassword !== undefined,
      agent: this.agent ?? null,
      active: this.active,
      total: this.total,
      failures: this.failures,
      bytesUp: up,
      bytesDown: down,
      spares: this.standby.length,
    };
  }
}

/**
 * The depot server: give it three listeners with `start`, stop it with `stop`.
 *
 * @example
 * ```ts
 * import { DepotServer } from "./mod.ts";
 * const listen = () => Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const server = new DepotServer({ token: "a-long-random-depot-token" });
 * const socks = listen();
 * server.start({ control: listen(), socks, tunnel: listen() });
 * console.log(`SOCKS5 clients: 127.0.0.1:${socks.addr.port}`); // exits are depot-locals dialing in
 * await server.stop();
 * ```
 */
export class DepotServer {
  /** Set by a cluster (lib/cluster DepotCluster): exits held by the other instances. */
  cluster?: DepotClusterHooks;
  /** The shared secret; private so it never ends up in a status dump or a log. */
  #token: string;
  /** Exit for clients without username (`reconfigure` changes it). */
  defaultExit: string;
  /** Control heartbeat interval. */
  readonly heartbeatMs: number;
  /** Time for hellos, SOCKS and tunnel handshakes. */
  readonly handshakeTimeoutMs: number;
  /** Bound on waiting requests. */
  readonly maxPending: number;
  /** Bound on idle standby spares across exits (each exit its share). */
  readonly standbyTotal: number;
  /** Time a request may wait for its tunnel. */
  readonly pendingTimeoutMs: number;
  /** Relay idle timeout (0 = none). */
  readonly idleTimeoutMs: number;
  /** Silence allowed to locals' spare tunnel connections. */
  readonly spareIdleMs: number;
  /** Connections per listener. */
  readonly maxConns: number | undefined;
  /** Least idle time of a connection shed at a full listener. */
  readonly shedIdleMs: number | undefined;
  /** Bounds of each UDP association's relay. */
  readonly udp: FlowLimits;
  /** Carrier of the control and tunnel listeners. */
  readonly transport: TransportName;
  /** Compact frames offered (feature "compact"); undefined: JSON only. */
  readonly compact: CompactCodec<DepotMessage> | undefined;
  /** Where events go. */
  readonly log: Logger;

  readonly #exits = new Map<string, ExitSession>();
  /** Requests waiting for their answer, by id (not a `Map`: see lib/net/id_table.ts). */
  readonly #pending = new IdTable<Pending>();
  readonly #failures: FailureRecord[] = [];
  #servers: { control: Server; socks: Server; tunnel: Server } | undefined;
  /** Until when (performance.now()) fds count as short: see `#acceptFailed`. */
  #fdShortUntilMs = 0;
  #nextId = 1;
  #total = 0;
  #active = 0;
  #failureCount = 0;
  readonly #failuresByReason = new Map<string, number>();
  #closedBytesUp = 0;
  #closedBytesDown = 0;
  /** Byte counts of the relays running now (a list: see lib/net/live_list.ts). */
  readonly #live = new LiveList<RelayStats>();
  readonly #muxSessions = new Set<MuxSession>();
  #stopping = false;
  readonly #authLimiter: AuthFailureLimiter | undefined;

  /** A server with `opts`; nothing listens until `start`. */
  constructor(opts: DepotServerOptions = {}) {
    this.#token = opts.token ?? "";
    this.#authLimiter = opts.authLimiter;
    this.defaultExit = opts.defaultExit ?? defaultExitName;
    this.heartbeatMs = opts.heartbeatMs ?? defaultHeartbeatMs;
    this.handshakeTimeoutMs = opts.handshakeTimeoutMs ?? depotHandshakeTimeoutMs;
    this.maxPending = opts.maxPending ?? defaultMaxPending;
    this.standbyTotal = opts.standbyTotal ?? defaultStandbyTotal;
    this.pendingTimeoutMs = opts.pendingTimeoutMs ?? defaultPendingTimeoutMs;
    this.idleTimeoutMs = opts.idleTimeoutMs ?? 0;
    this.spareIdleMs = opts.spareIdleMs ??
      (this.handshakeTimeoutMs > 0
        ? Math.max(10, Math.floor(this.handshakeTimeoutMs / 2))
        : 60_000);
    this.maxConns = opts.maxConns;
    this.shedIdleMs = opts.shedIdleMs;
    this.udp = { idleTimeoutMs: defaultUdpIdleTimeoutMs, ...opts.udp };
    this.transport = opts.transport ?? "tcp";
    this.compact = opts.compact === false ? undefined : depotCompact;
    this.log = opts.log ?? silentLogger;
  }

  /** Start serving on the three listeners. */
  start(listeners: DepotListeners): void {
    if (this.#servers) throw new Error("depot server already started");
    const common = {
      maxConns: this.maxConns,
      shedIdleMs: this.shedIdleMs,
      handshakeTimeoutMs: this.handshakeTimeoutMs,
      onAcceptError: (err: unknown) => this.#acceptFailed(err),
    };
    // The links from depot-local (control, tunnel) ride the chosen carrier; SOCKS stays TCP.
    const carrier = transportKind(this.transport, false);
    this.#servers = {
      control: serve(
        listeners.control,
        withTransport(carrier, (c, ctx) => this.handleControl(c, ctx)),
        {
          ...common,
          log: this.log.child({ listener: "control" }),
        },
      ),
      socks: serve(listeners.socks, (c, ctx) => this.handleSocks(c, ctx), {
        ...common,
        // SOCKS clients are many and unauthenticated at accept: none may take the whole cap.
        maxConnsPerSource: perSourceShare(this.maxConns ?? defaultMaxConns),
        log: this.log.child({ listener: "socks" }),
      }),
      tunnel: serve(
        listeners.tunnel,
        withTransport(carrier, (c, ctx) => this.handleTunnel(c, ctx)),
        {
          ...common,
          // The idle standby spares (standbyTotal at most) wait here beside the relays'
          // tunnels: they never take the place of a relayed connection's tunnel.
          maxConns: (this.maxConns ?? defaultMaxConns) + this.standbyTotal,
          log: this.log.child({ listener: "tunnel" }),
        },
      ),
    };
    m.liveSources.add(this.#metricsSource);
  }

  /**
   * A listener's accept failed. Out of file descriptors (EMFILE), the idle standby spares are
   * what can go (up to 64 per exit, each an fd): each exit keeps its newest
   * {@linkcode fdShortStandbyPerExit}, the rest are closed (their locals do not refill on
   * that), and for {@linkcode fdShortWindowMs} after the last such failure no exit takes more.
   */
  #acceptFailed(err: unknown): void {
    if (!isOutOfFds(err)) return;
    const now = performance.now();
    const streak = now < this.#fdShortUntilMs;
    this.#fdShortUntilMs = now + fdShortWindowMs;
    const keptPerExit = this.#standbyShare();
    const closed = this.#trimStandby(keptPerExit);
    if (closed > 0 || !streak) {
      this.log.warn("out of file descriptors: idle standby spares closed", {
        closed,
        keptPerExit,
        error: errorMessage(err),
      });
    }
  }

  /**
   * The idle standby spares an exit may hold now: its {@linkcode #fairShare}, and
   * {@linkcode fdShortStandbyPerExit} while fds are short.
   */
  #standbyShare(): number {
    const fair = this.#fairShare();
    // No clock read while fds were never short: a spare arrives per plain connection.
    const short = this.#fdShortUntilMs > 0 && performance.now() < this.#fdShortUntilMs;
    return short ? Math.min(fdShortStandbyPerExit, fair) : fair;
  }

  /**
   * An exit's share of {@linkcode standbyTotal} among the exits that hold standby spares
   * ("open" ones without a mux session: a `--mux` exit or an older local holds none), at
   * least 1 and at most {@linkcode maxStandbyPerExit}: what the locals are told. The bound
   * while fds are short is enforced by closing spares, not told (it passes).
   */
  #fairShare(): number {
    let holders = 0;
    for (const e of this.#exits.values()) if (e.holdsStandby) holders++;
    return Math.min(maxStandbyPerExit, Math.max(1, Math.floor(this.standbyTotal / (holders || 1))));
  }

  /**
   * The exits holding standby spares changed (one connected, left, or bound a mux session):
   * close every exit's spares past the share now (the oldest first) and tell each welcomed
   * exit that hears it ("share") its new bound, so a remaining exit's local keeps its larger
   * share again once another left. How many spares were closed.
   */
  #sharesChanged(): number {
    const closed = this.#trimStandby(this.#standbyShare());
    const share = this.#fairShare();
    for (const exit of this.#exits.values()) {
      // Not welcomed yet (told in its welcome), or told this already.
      if (!exit.holdsStandby || !exit.hearsShare || exit.toldShare === undefined) continue;
      if (exit.toldShare === share) continue;
      exit.toldShare = share;
      exit.ctl.send({ type: "standbyShare", standbyMax: share }).catch(() => {
        // Its control connection is going away: its reader ends the exit.
      });
    }
    return closed;
  }

  /**
   * Close every exit's idle standby spares past `keep`, the oldest first (requests take the
   * newest); how many were closed.
   */
  #trimStandby(keep: number): number {
    let closed = 0;
    for (const exit of this.#exits.values()) {
      const extra = exit.standby.length - keep;
      if (extra <= 0) continue;
      for (const st of exit.standby.splice(0, extra)) st.drop();
      closed += extra;
    }
    return closed;
  }

  /** What the scrape-time gauges read. */
  readonly #metricsSource = () => ({
    exits: this.#exits.size,
    rtts: [...this.#exits.values()].flatMap((e) =>
      e.ctl.rttMs === undefined
        ? []
        : [{ side: "server" as const, exit: e.name, seconds: e.ctl.rttMs / 1000 }]
    ),
  });

  /** Bound addresses (after `start`). */
  get addrs(): { control: Deno.NetAddr; socks: Deno.NetAddr; tunnel: Deno.NetAddr } {
    const s = this.#servers;
    if (!s) throw new Error("depot server not started");
    return { control: s.control.addr, socks: s.socks.addr, tunnel: s.tunnel.addr };
  }

  /**
   * Change the shared token and the default exit while running (config reload). Connected
   * locals and relayed connections stay; the new token applies to the next hello or mux
   * session (a local still holding the old one is refused when it reconnects).
   */
  reconfigure(opts: { token?: string; defaultExit?: string }): void {
    if (opts.token !== undefined) this.#token = opts.token;
    if (opts.defaultExit !== undefined) this.defaultExit = opts.defaultExit;
  }

  /** Names of the connected exits. */
  exitNames(): string[] {
    return [...this.#exits.keys()];
  }

  /** Number of requests waiting for their exit. */
  get pendingCount(): number {
    return this.#pending.size;
  }

  /** Snapshot for `/status`. */
  status(): DepotServerStatus {
    let up = this.#closedBytesUp, down = this.#closedBytesDown;
    for (const s of this.#live) (up += s.aToB, down += s.bToA);
    const a = this.#servers ? this.addrs : undefined;
    return {
      listeners: {
        control: a ? formatAddr(a.control) : "",
        socks: a ? formatAddr(a.socks) : "",
        tunnel: a ? formatAddr(a.tunnel) : "",
      },
      defaultExit: this.defaultExit,
      exits: [...this.#exits.values()].map((e) => e.status()),
      muxSessions: this.#muxSessions.size,
      pending: this.#pending.size,
      active: this.#active,
      total: this.#total,
      failures: this.#failureCount,
      failuresByReason: Object.fromEntries(this.#failuresByReason),
      bytesUp: up,
      bytesDown: down,
      recentFailures: [...this.#failures],
    };
  }

  /**
   * Stop: refuse new SOCKS clients and hellos, fail pending requests, let live relays finish
   * for up to `drainMs` (then cut them), then tell every local "shutdown" and close the rest.
   */
  async stop(drainMs = 2_000): Promise<void> {
    this.#stopping = true;
    m.liveSources.delete(this.#metricsSource);
    const servers = this.#servers;
    for (const p of [...this.#pending]) {
      p.settle({ ok: false, reason: "network-unreachable", message: "server shutting down" });
    }
    // Relays run inside SOCKS handlers: this waits for them (or cuts them at the deadline).
    if (servers) await servers.socks.stop(drainMs);
    for (const exit of [...this.#exits.values()]) {
      // fail() does not reject: a send to a gone exit is dropped inside it.
      void exit.ctl.fail(DepotRefusal.shutdown, "server shutting down");
    }
    // close() does not reject; each session settles on its own.
    for (const mux of [...this.#muxSessions]) void mux.close("internal-error");
    if (servers) {
      await Promise.all([servers.control.stop(drainMs), servers.tunnel.stop(drainMs)]);
    }
  }

  // ---- control connections -------------------------------------------------------------

  /** Serve one control connection (a depot-local): hello, welcome, then requests. */
  async handleControl(
    conn: Duplex,
    ctx: { remote: string; log: Logger; handshakeDone(): void; signal?: AbortSignal },
  ): Promise<void> {
    const ctl = new ControlConn(noDelay(conn), depotProtocol, {
      maxMessageBytes: depotMaxMessageBytes,
    });
    let hello;
    try {
      hello = await ctl.expect("hello", this.handshakeTimeoutMs);
    } catch (err) {
      ctx.log.warn("control handshake failed", { remote: ctx.remote, error: describe(err) });
      ctl.close();
      return;
    }
    const tokenOk = await verifySecret(
      this.#authLimiter,
      ctx.remote,
      () => timingSafeEqual(hello.token, this.#token),
      { signal: ctx.signal },
    );
    if (!tokenOk) {
      ctx.log.warn("local refused: wrong token", { remote: ctx.remote, exit: hello.name });
      await ctl.fail(DepotRefusal.unauthorized, "wrong token");
      return;
    }
    if (this.#stopping) {
      await ctl.fail(DepotRefusal.shutdown, "server shutting down");
      return;
    }
    const log = this.log.child({ exit: hello.name });
    const held = this.#exits.get(hello.name);
    if (held && !(await this.#sameExitCredential(held, hello.socksPassword, ctx))) {
      log.warn("local refused: the exit name is held with another SOCKS password", {
        remote: ctx.remote,
        holder: held.remote,
      });
      await ctl.fail(
        DepotRefusal.nameTaken,
        `exit ${hello.name} is connected with another SOCKS password; a takeover needs the same one`,
      );
      return;
    }
    const exit = new ExitSession(
      hello.name,
      ctl,
      ctx.remote,
      hello.socksPassword,
      hello.agent,
      hello.features?.includes(endFeature) ?? false,
      log,
    );
    exit.carriesUdp = hello.features?.includes(udpFeature) ?? false;
    exit.opensStreams = hello.features?.includes(openFeature) ?? false;
    if (exit.opensStreams) {
      exit.sessionKey = randomSecret(16);
      exit.directKey = randomSecret(16);
    }
    exit.hearsShare = hello.features?.includes(shareFeature) ?? false;
    exit.takesRetire = hello.features?.includes(retireFeature) ?? false;
    if (this.compact && hello.features?.includes(compactFeature)) {
      // Before the welcome: the local sends compact frames as soon as it has read it.
      exit.compact = this.compact;
      ctl.useCompact(this.compact);
    }
    const stale = this.#exits.get(hello.name);
    if (stale) {
      log.info("exit reconnected, replacing the previous session", {
        remote: ctx.remote,
        previous: stale.remote,
      });
      this.#endExit(stale, "replaced by a new connection with the same name", {
        reason: DepotRefusal.replaced,
        message: "another local connected with this name",
      });
    }
    this.#exits.set(hello.name, exit);
    this.cluster?.exitsChanged(hello.name);
    // One more exit: the others' shares of the standby spares shrink (and they are told).
    const trimmed = this.#sharesChanged();
    if (trimmed > 0) log.debug("standby spares over the new share closed", { closed: trimmed });
    if (exit.holdsStandby) exit.toldShare = this.#fairShare();
    m.sessionsTotal.inc({ side: "server" });
    try {
      await ctl.send({
        type: "welcome",
        name: hello.name,
        heartbeatMs: this.heartbeatMs,
        tunnelPort: this.#servers?.tunnel.addr.port ?? 1,
        features: this.compact
          ? [muxFeature, endFeature, udpFeature, openFeature, retireFeature, compactFeature]
          : [muxFeature, endFeature, udpFeature, openFeature, retireFeature],
        spareIdleMs: this.spareIdleMs,
        sessionKey: exit.sessionKey,
        standbyMax: exit.toldShare,
      });
    } catch (err) {
      log.warn("welcome failed", { error: describe(err) });
    }
    ctx.handshakeDone();
    log.info("exit connected", {
      remote: ctx.remote,
      auth: hello.socksPassword !== undefined ? "password" : "none",
    });
    ctl.startHeartbeat({
      intervalMs: this.heartbeatMs,
      deadAfterMs: this.heartbeatMs * heartbeatDeadFactor,
    });
    let why = "closed by local";
    try {
      while (true) {
        const msg = await ctl.receive();
        if (msg === null) break;
        if (msg.type === "connectFailed") {
          const p = this.#pending.get(msg.id);
          if (p && p.exit === exit) {
            p.settle({ ok: false, reason: msg.reason, message: msg.message ?? msg.reason });
          }
        } else if (msg.type === "end") {
          // An id no longer relaying (already cut, or never this exit's) is ignored: the end
          // and a reset of the same tunnel may cross.
          exit.ends.get(msg.id)?.confirm();
        } else if (msg.type === "error") {
          why = `local error: ${msg.reason}`;
          break;
        } else {
          why = `unexpected ${msg.type}`;
          await ctl.fail("unexpected", `unexpected ${msg.type} on the control connection`);
          break;
        }
      }
    } catch (err) {
      why = describe(err);
    } finally {
      ctl.close();
      if (this.#exits.get(exit.name) === exit) this.#endExit(exit, why);
    }
  }

  /**
   * Unregister an exit: fail its pending requests and close its control connection (after
   * telling the local `notify`, when given); its relays end with the control connection.
   */
  #endExit(exit: ExitSession, why: string, notify?: { reason: string; message: string }): void {
    if (this.#exits.get(exit.name) === exit) {
      this.#exits.delete(exit.name);
      this.cluster?.exitsChanged();
      exit.log.info("exit disconnected", { why, active: exit.active, total: exit.total });
      // One fewer: the remaining exits' shares grow back.
      if (exit.holdsStandby) this.#sharesChanged();
    }
    for (const p of [...exit.pending]) {
      p.settle({ ok: false, reason: "network-unreachable", message: `exit gone: ${why}` });
    }
    for (const st of exit.standby.splice(0)) st.drop();
    if (notify) void exit.ctl.fail(notify.reason, notify.message); // does not reject
    else exit.ctl.close();
  }

  // ---- SOCKS connections ---------------------------------------------------------------

  /** Serve one SOCKS5 client connection. */
  async handleSocks(
    conn: Duplex,
    ctx: { remote: string; log: Logger; handshakeDone(): void },
  ): Promise<void> {
    let req;
    let triedExit = "?";
    try {
      req = await acceptDepotSocks(conn, {
        udpAssociate: true,
        defaultNeedsPassword: () => {
          const held = this.#exits.get(this.defaultExit);
          if (held) return held.socksPassword !== undefined;
          return this.cluster?.remoteExit(this.defaultExit)?.needsPassword ?? false;
        },
        authenticate: (user, pass) => {
          triedExit = user === "" ? this.defaultExit : user.slice(0, 64);
          // The shared limiter: a right password passes at once, wrong ones past the burst
          // are answered late (per source and exit name).
          return verifySecret(
            this.#authLimiter,
            ctx.remote,
            () => this.#checkSocksAuth(user, pass),
            {
              user: triedExit,
            },
          );
        },
      });
    } catch (err) {
      if (err instanceof Socks5Error && err.reason === "auth-failed") {
        this.#recordFailure(triedExit, "", "auth", "SOCKS authentication failed");
        // The exit asked for and the address, never the password tried.
        ctx.log.warn("SOCKS authentication failed", {
          remote: ctx.remote,
          exit: triedExit,
          failure: "auth-failed",
        });
        return;
      }
      if (err instanceof ProtocolError && err.reason === "bad-domain") {
        // A SOCKS client asking for a name that cannot be one (answered 0x01), as a UDP
        // datagram's is dropped "bad-domain": counted and worth a line; other garbage stays
        // at debug.
        this.#recordFailure(triedExit, "", "bad-domain", errorMessage(err));
        ctx.log.warn("SOCKS request refused", {
          remote: ctx.remote,
          failure: "bad-domain",
          error: errorMessage(err),
        });
        return;
      }
      ctx.log.debug("SOCKS handshake failed", { remote: ctx.remote, error: describe(err) });
      return;
    }
    ctx.handshakeDone();
    const startedMs = performance.now();
    const exitName = req.username ? req.username : this.defaultExit;
    // An ASSOCIATE names where the client sends from, not a destination: each datagram has its own.
    const dest = req.udpAssociate ? "udp" : joinHostPort(req.dest.host, req.dest.port);
    const exit = this.#exits.get(exitName);
    // Made when first used: a relayed connection below the info level never logs.
    let reqLog: Logger | undefined;
    const log = () => reqLog ??= ctx.log.child({ exit: exitName, remote: ctx.remote, dest });
    const stats: RelayStats = { aToB: 0, bToA: 0 };
    const remote = exit ? undefined : this.cluster?.remoteExit(exitName);
    if (remote) {
      await this.#socksViaCluster(conn, req, remote, exitName, dest, log(), startedMs);
      return;
    }
    if (!exit) {
      // Documented: no exit connected -> 0x03 (network unreachable), at once.
      this.#recordFailure(exitName, dest, "no-exit", "no local connected with this name");
      log().info("no exit connected, refusing", { failure: "no-exit" });
      await sendSocks5Reply(conn, Reply.networkUnreachable).catch(() => {
        // The SOCKS client hung up: it has no use for the reply.
      });
      return;
    }
    if (this.#pending.size >= this.maxPending) {
      this.#recordFailure(exitName, dest, "busy", `${this.maxPending} requests already pending`);
      log().warn("too many pending requests, refusing", {
        failure: "busy",
        maxPending: this.maxPending,
      });
      await sendSocks5Reply(conn, Reply.generalFailure).catch(() => {
        // The SOCKS client hung up: it has no use for the reply.
      });
      return;
    }

    let udp: BoundAssociation | undefined;
    if (req.udpAssociate) {
      udp = await this.#bindAssociation(conn, req.dest, exit, stats, log());
      if (!udp) {
        exit.failures++;
        return;
      }
    }
    const ask = udp
      ? { type: "associate" as const }
      : { type: "connect" as const, host: req.dest.host, port: req.dest.port };
    let outcome = await this.#askOnce(exit, ask, dest);
    while (outcome === "unanswered") outcome = await this.#askOnce(exit, ask, dest);
    if (!outcome.ok) {
      udp?.close();
      exit.failures++;
      this.#recordFailure(exitName, dest, outcome.reason, outcome.message);
      log().info("request failed", {
        failure: outcome.reason,
        ms: Math.round(performance.now() - startedMs),
        error: outcome.message,
      });
      await sendSocks5Reply(conn, replyForReason(outcome.reason)).catch(() => {
        // The SOCKS client hung up: it has no use for the reply.
      });
      return;
    }
    const tunnel = outcome.conn;
    // The reply leaves first: the client's wait ends before the bookkeeping runs.
    const replied = sendSocks5Reply(conn, Reply.succeeded, udp ? udp.assoc.addr : outcome.bound);
    try {
      exit.okCount.inc();
      m.serverSeries.connect.observe((performance.now() - startedMs) / 1000);
      m.serverSeries.active.inc(); // last: a throw above leaves no gauge to take back
    } catch (err) {
      abandonGranted(replied, outcome, udp);
      throw err;
    }
    this.#active++;
    this.#total++;
    exit.active++;
    exit.total++;
    const onExit: ExitRelay = { stats };
    exit.live.add(onExit);
    this.#live.add(stats);
    const relayAbort = exit.relayAbort(); // ends the relay with the control connection
    try {
      const r = await this.#relayGranted(
        conn,
        req.leftover,
        tunnel,
        replied,
        udp,
        relayAbort,
        stats,
        log,
      );
      if (this.log.enabled("info")) {
        log().info("connection closed", closedFields(r, stats, udp, startedMs));
      }
    } finally {
      outcome.done();
      exit.relays.delete(relayAbort);
      this.#active--;
      exit.active--;
      exit.live.delete(onExit);
      this.#live.delete(stats);
      exit.bytesUp += stats.aToB;
      exit.bytesDown += stats.bToA;
      this.#closedBytesUp += stats.aToB;
      this.#closedBytesDown += stats.bToA;
      m.serverSeries.active.dec();
      m.serverSeries.up.inc(stats.aToB);
      m.serverSeries.down.inc(stats.bToA);
    }
  }

  /**
   * A SOCKS request for an exit another instance holds: that instance connects (or opens a UDP
   * association) through it, and the stream between the two is relayed like a tunnel. An
   * ASSOCIATE's relay socket is bound here, where the client is; its datagrams ride the stream.
   */
  async #socksViaCluster(
    conn: Duplex,
    req: { dest: HostPort; leftover: Uint8Array; udpAssociate?: boolean },
    remote: RemoteExit,
    exitName: string,
    dest: string,
    log: Logger,
    startedMs: number,
  ): Promise<void> {
    const stats: RelayStats = { aToB: 0, bToA: 0 };
    let udp: BoundAssociation | undefined;
    if (req.udpAssociate) {
      const target = { name: exitName, carriesUdp: remote.carriesUdp };
      udp = await this.#bindAssociation(conn, req.dest, target, stats, log);
      if (!udp) return;
    }
    const outcome = udp
      ? await remote.associate()
      : await remote.connect(req.dest.host, req.dest.port);
    if (!outcome.ok) {
      udp?.close();
      this.#recordFailure(exitName, dest, outcome.reason, outcome.message);
      log.info("request failed", {
        failure: outcome.reason,
        via: "cluster",
        ms: Math.round(performance.now() - startedMs),
        error: outcome.message,
      });
      return await sendSocks5Reply(conn, replyForReason(outcome.reason)).catch(() => {
        // The SOCKS client hung up: it has no use for the reply.
      });
    }
    const replied = sendSocks5Reply(conn, Reply.succeeded, udp ? udp.assoc.addr : outcome.bound);
    try {
      m.requestsTotal.inc({ side: "server", exit: exitName, result: "ok" });
      m.connectSeconds.observe({ side: "server" }, (performance.now() - startedMs) / 1000);
      m.activeConnections.inc({ side: "server" }); // last: a throw above leaves no gauge to take back
    } catch (err) {
      abandonGranted(replied, outcome, udp);
      throw err;
    }
    this.#active++;
    this.#total++;
    this.#live.add(stats);
    try {
      const r = await this.#relayGranted(
        conn,
        req.leftover,
        outcome.conn,
        replied,
        udp,
        undefined,
        stats,
        () => log,
      );
      log.info("connection closed", { via: "cluster", ...closedFields(r, stats, udp, startedMs) });
    } finally {
      outcome.done();
      this.#active--;
      this.#live.delete(stats);
      this.#closedBytesUp += stats.aToB;
      this.#closedBytesDown += stats.bToA;
      m.activeConnections.dec({ side: "server" });
      m.bytesTotal.inc({ side: "server", direction: "up" }, stats.aToB);
      m.bytesTotal.inc({ side: "server", direction: "down" }, stats.bToA);
    }
  }

  /**
   * For a cluster: connect to `host:port` (or open a UDP association) through the exit `name`
   * held here, a request another instance received. The caller relays (ending it when
   * `signal`, the exit's control connection, ends) and then calls `done()`.
   */
  async connectHere(
    name: string,
    ask: HereRequest,
  ): Promise<(TunnelArrival & { signal: AbortSignal }) | Exclude<Outcome, TunnelArrival>> {
    const exit = this.#exits.get(name);
    if (!exit) {
      return { ok: false, reason: "network-unreachable", message: "exit not held here" };
    }
    const dest = ask.type === "connect" ? joinHostPort(ask.host, ask.port) : "udp";
    const outcome = ask.type === "associate" && !exit.carriesUdp
      ? { ok: false as const, reason: "other" as const, message: "this exit does not carry UDP" }
      : await this.#ask(exit, ask, dest);
    if (!outcome.ok) {
      exit.failures++;
      this.#recordFailure(name, dest, outcome.reason, outcome.message);
      return outcome;
    }
    exit.active++;
    exit.total++;
    const a = exit.relayAbort();
    return {
      ...outcome,
      signal: a.signal,
      done: () => {
        exit.relays.delete(a);
        exit.active--;
        outcome.done();
      },
    };
  }

  /** The exits held here with their SOCKS passwords (what a cluster publishes, as digests). */
  heldExits(): { name: string; socksPassword?: string; carriesUdp: boolean }[] {
    return [...this.#exits.values()].map((e) => ({
      name: e.name,
      socksPassword: e.socksPassword,
      carriesUdp: e.carriesUdp,
    }));
  }

  /**
   * Whether a hello may take over the exit `held`: its SOCKS password (or the lack of one) is
   * the exit's credential, compared in constant time; wrong ones count against the limiter.
   */
  #sameExitCredential(
    held: ExitSession,
    password: string | undefined,
    ctx: { remote: string; signal?: AbortSignal },
  ): Promise<boolean> {
    return verifySecret(
      this.#authLimiter,
      ctx.remote,
      () =>
        held.socksPassword === undefined
          ? password === undefined
          : password !== undefined && timingSafeEqual(password, held.socksPassword),
      { user: held.name, signal: ctx.signal },
    );
  }

  #checkSocksAuth(user: string, pass: string): boolean {
    const name = user === "" ? this.defaultExit : user;
    const exit = this.#exits.get(name);
    // An exit without a password accepts any; an unknown exit is refused later with 0x03
    // (its password cannot be checked while it is away).
    if (!exit) return this.cluster?.remoteExit(name)?.checkPassword(pass) ?? true;
    if (exit.socksPassword === undefined) return true;
    return timingSafeEqual(pass, exit.socksPassword);
  }

  /**
   * Wait for the reply of a granted SOCKS request (`replied`: 0x00 with the bound address, or
   * the association's relay address, written by the caller before its bookkeeping) and
   * relay it over `tunnel` (an exit's tunnel, or a stream to the instance holding the exit)
   * until it ends: a CONNECT's bytes after what the client sent early (`leftover`), or an
   * association's datagrams. The tunnel and the association are closed by then, whatever
   * happened.
   */
  async #relayGranted(
    conn: Duplex,
    leftover: Uint8Array,
    tunnel: Duplex,
    replied: Promise<void>,
    udp: BoundAssociation | undefined,
    signal: Abortable | undefined,
    stats: RelayStats,
    log: () => Logger,
  ): Promise<GrantedEnd> {
    try {
      await replied;
    } catch (err) {
      // The SOCKS client vanished before its reply was written.
      closeQuietly(tunnel);
      udp?.close();
      log().debug("client gone before the reply", { error: describe(err) });
      return { end: "reset" };
    }
    if (udp) {
      const idleMs = this.udp.idleTimeoutMs ?? defaultUdpIdleTimeoutMs;
      const r = await udp.relay(
        tunnel,
        conn,
        signal ? abortSignalOf(signal) : neverAborted,
        idleMs,
      );
      return { end: r.end, failure: r.failure, cause: r.message };
    }
    const r = await relay(withPrefix(conn, leftover), tunnel, {
      signal,
      idleTimeoutMs: this.idleTimeoutMs,
      stats,
    });
    return { end: r.end, cause: r.error && errorMessage(r.error) };
  }

  /**
   * Bind the UDP relay of an ASSOCIATE for the client of `conn`, or answer it: 0x07 when the
   * exit (held here or elsewhere) does not carry UDP (an older depot-local) or the connection
   * has no socket addresses, 0x01 when the relay cannot be bound. Undefined when answered.
   */
  async #bindAssociation(
    conn: Duplex & Partial<Pick<Deno.Conn, "localAddr" | "remoteAddr">>,
    requested: HostPort,
    exit: { name: string; carriesUdp: boolean },
    stats: RelayStats,
    log: Logger,
  ): Promise<BoundAssociation | undefined> {
    const local = conn.localAddr, remote = conn.remoteAddr;
    let problem: [number, FailureRecord["reason"], string] | undefined;
    if (!exit.carriesUdp) {
      problem = [Reply.commandNotSupported, "no-udp", "this exit does not carry UDP"];
    } else if (local?.transport !== "tcp" || remote?.transport !== "tcp") {
      problem = [Reply.commandNotSupported, "no-udp", "no socket address to bind a relay on"];
    } else {
      const table = new FlowTable<Flow>(this.udp, new UdpDrops(log, "depot-server"));
      const tally = new UdpTally("depot-server", stats);
      try {
        const socket = {
          local: { host: local.hostname, port: local.port },
          remote: { host: remote.hostname, port: remote.port },
        };
        const assoc = await UdpAssociation.bind(socket, requested, table, tally, log);
        return new BoundAssociation(assoc, table, tally);
      } catch (err) {
        table.close();
        problem = [Reply.generalFailure, "other", `udp relay: ${errorMessage(err)}`];
      }
    }
    const [reply, reason, message] = problem;
    this.#recordFailure(exit.name, "udp", reason, message);
    log.info("udp associate refused", { failure: reason, error: message });
    await sendSocks5Reply(conn, reply).catch(() => {
      // The SOCKS client hung up: it has no use for the reply.
    });
    return undefined;
  }

  /**
   * Send `connect` (or `associate`) to the exit and wait for its tunnel, its failure or the
   * timeout.
   */
  #request(
    exit: ExitSession,
    ask: { type: "connect"; host: string; port: number } | { type: "associate" },
    dest: string,
  ): Promise<Outcome> {
    const id = this.#nextId++;
    const key = randomSecret(16);
    return new Promise<Outcome>((resolve) => {
      let settled = false;
      // On the shared deadline wheel: a timer of its own per request cost ~5 µs of each.
      const cancelTimer = after(this.pendingTimeoutMs, () => {
        if (p.settle({ ok: false, reason: "timeout", message: "no tunnel in time" })) {
          exit.ctl.send({ type: "cancel", id }).catch(() => {
            // The exit is gone: nothing of this request is left to cancel there.
          });
        }
      });
      const p: Pending = {
        id,
        key,
        exit,
        dest,
        udp: ask.type === "associate",
        settle: (o) => {
          if (settled) return false;
          settled = true;
          cancelTimer();
          this.#pending.delete(id);
          exit.pending.delete(p);
          resolve(o);
          return true;
        },
      };
      this.#pending.set(id, p);
      exit.pending.add(p);
      exit.ctl.send({ ...ask, id, key }).catch((err) => {
        p.settle({ ok: false, reason: "network-unreachable", message: describe(err) });
      });
    });
  }

  /**
   * Open-with-data (feature "open"): the request frame goes straight on a tunnel (`way`: a mux
   * stream whose SYN carries it, or a standby spare), and the local's answer on it is the
   * outcome: `tunnel` (it relays from the next byte), `connectFailed`, or nothing in time (the
   * tunnel is given up). No control message and no `tunnelAccepted`. "unanswered": the tunnel
   * ended before any answer (a standby the local closed at that moment): ask another way.
   */
  #requestDirect(
    exit: ExitSession,
    way: DirectWay,
    ask: { type: "connect"; host: string; port: number } | { type: "associate" },
    dest: string,
  ): Promise<Outcome | "unanswered"> {
    const id = this.#nextId++;
    const key = exit.directKey ?? randomSecret(16);
    const udp = ask.type === "associate";
    const req = new DirectRequest(
      { id, key, exit, dest, udp },
      way,
      this.#pending,
      this.pendingTimeoutMs,
      this.heartbeatMs * heartbeatDeadFactor,
    );
    try {
      // A failed write or read of the answer goes to `failed`.
      way.send(requestFrame(exit, { ...ask, id, key }), req);
    } catch (err) {
      req.failed(err); // the request could not be encoded, or the mux session takes no stream
    }
    return req.outcome;
  }

  /**
   * Send the request the cheapest way the exit takes: a stream of its mux session, else a
   * standby spare (another one, or the control path, if the local closed that one at the same
   * moment: `#askOnce` again on "unanswered"), else `connect` on the control connection.
   */
  async #ask(
    exit: ExitSession,
    ask: { type: "connect"; host: string; port: number } | { type: "associate" },
    dest: string,
  ): Promise<Outcome> {
    let o = await this.#askOnce(exit, ask, dest);
    while (o === "unanswered") o = await this.#askOnce(exit, ask, dest);
    return o;
  }

  /**
   * One try of `#ask` (the SOCKS handler loops on it itself: no async frame between it and the
   * request's outcome). "unanswered" only from a standby spare.
   */
  #askOnce(
    exit: ExitSession,
    ask: { type: "connect"; host: string; port: number } | { type: "associate" },
    dest: string,
  ): Promise<Outcome | "unanswered"> {
    if (exit.mux) {
      return this.#requestDirect(exit, new StreamWay(exit.mux, this.compact), ask, dest);
    }
    const st = exit.standby.pop();
    if (!st) return this.#request(exit, ask, dest);
    return this.#requestDirect(exit, st.take(), ask, dest);
  }

  #recordFailure(exit: string, dest: string, reason: FailureRecord["reason"], msg?: string) {
    this.#failureCount++;
    this.#failuresByReason.set(reason, (this.#failuresByReason.get(reason) ?? 0) + 1);
    // Clients choose the exit name: only known names become label values, so a client
    // trying random usernames cannot grow the metric series without bound.
    const label = this.#exits.has(exit) || exit === this.defaultExit ? exit : "(unknown)";
    m.requestsTotal.inc({ side: "server", exit: label, result: reason });
    this.#failures.push({ at: new Date().toISOString(), exit, dest, reason, message: msg });
    if (this.#failures.length > recentFailureCount) this.#failures.shift();
  }

  // ---- tunnel connections --------------------------------------------------------------

  /**
   * Serve one tunnel connection (or mux stream): match it to its pending request, then hold
   * it open until the relay ends. A `mux` first frame turns the connection into a lib/mux
   * session whose streams are tunnels.
   */
  async handleTunnel(
    conn: Duplex,
    ctx: { remote: string; log: Logger; handshakeDone(): void; signal?: AbortSignal },
    allowMux = true,
  ): Promise<void> {
    // The first frames' reader borrows its buffer from the relay pool (an allocation per
    // tunnel before), and what it hands on (frames, bytes read past them) are copies. Its reads
    // have settled when the handler ends, except a given-up standby's answer read: that
    // standby is reset (its resource closed) before the buffer goes back, which cancels the
    // read before it can write into the buffer.
    const buf = relayPool.acquire(minRelayBufferBytes);
    try {
      await this.#tunnel(conn, ctx, allowMux, buf);
    } finally {
      relayPool.release(buf);
    }
  }

  async #tunnel(
    conn: Duplex,
    ctx: { remote: string; log: Logger; handshakeDone(): void; signal?: AbortSignal },
    allowMux: boolean,
    buf: Uint8Array,
  ): Promise<void> {
    const buffered = new BufferedReader(conn, buf);
    // Compact first frames are read from any local (a server that offers them decodes them as
    // strictly as JSON); they are sent only to a local that announced them.
    const reader = new ControlReader(buffered, depotProtocol, {
      maxMessageBytes: 1024,
      compact: this.compact,
    });
    let msg;
    try {
      msg = await reader.read();
    } catch (err) {
      if (err instanceof ControlError) await refuseTunnel(conn, ctx, err.reason, err.message);
      else ctx.log.debug("tunnel handshake failed", { error: describe(err) });
      return;
    }
    if (msg === null) return;
    if (msg.type === "mux" && allowMux) {
      const token = msg.token;
      const tokenOk = await verifySecret(
        this.#authLimiter,
        ctx.remote,
        () => timingSafeEqual(token, this.#token),
        { signal: ctx.signal },
      );
      if (!tokenOk) {
        await refuseTunnel(conn, ctx, DepotRefusal.unauthorized, "wrong token");
        return;
      }
      try {
        await new ControlWriter(conn, depotProtocol).send({ type: "muxAccepted" });
      } catch (err) {
        ctx.log.debug("mux handshake failed", { error: describe(err) });
        return;
      }
      ctx.handshakeDone();
      await this.#serveMux(
        withPrefix(conn, buffered.takeBuffered()),
        msg.name,
        ctx.remote,
        msg.sessionKey,
      );
      return;
    }
    if (msg.type === "standby" && allowMux) {
      await this.#holdStandby(conn, buffered, reader, msg, ctx);
      return;
    }
    if (msg.type !== "tunnel") {
      await refuseTunnel(conn, ctx, "unexpected", `expected tunnel, got ${msg.type}`);
      return;
    }
    const p = this.#pending.get(msg.id);
    // A request written on a tunnel is answered there, never by a fresh one (its key is the
    // exit's, not the request's: see `ExitSession.directKey`).
    if (!p || p instanceof DirectRequest) {
      await refuseTunnel(conn, ctx, DepotRefusal.unknownRequest, `no pending request ${msg.id}`);
      return;
    }
    // The key is ours (randomSecret(16): always 32 hex digits), so its length is no secret.
    if (!equalFixedLength(msg.key, p.key)) {
      // The request stays pending: a guessed id must not cancel someone else's request.
      await refuseTunnel(conn, ctx, DepotRefusal.badKey, `wrong key for request ${msg.id}`);
      return;
    }
    ctx.handshakeDone();
    let release!: () => void;
    const released = new Promise<void>((r) => release = r);
    // Nothing is read between here and the answer: the same bytes as taken after it.
    let tunnel = withPrefix(conn, buffered.takeBuffered());
    const { exit, id } = p;
    if (allowMux && exit.confirmsEnds && !p.udp) {
      // Registered before the answer: the local may report the end right after it.
      tunnel = exit.gate(id, tunnel, this.heartbeatMs * heartbeatDeadFactor);
    }
    const writer = new ControlWriter(conn, depotProtocol, { compact: exit.compact });
    try {
      try {
        await writer.send({ type: "tunnelAccepted", id });
      } catch (err) {
        p.settle({ ok: false, reason: "other", message: `tunnel write failed: ${describe(err)}` });
        return;
      }
      const bound = msg.boundHost !== undefined && msg.boundPort !== undefined
        ? { host: msg.boundHost, port: msg.boundPort }
        : undefined;
      const taken = p.settle({ ok: true, conn: tunnel, bound, done: release });
      if (!taken) return; // timed out or cancelled at the same moment: close it
      await released;
    } finally {
      exit.ends.delete(id);
    }
  }

  /**
   * A standby spare ("open"): kept in its exit's list until a request takes it (then the
   * handler holds it until the relay is over) or the local closes it; its first-frame read
   * stays pending meanwhile, and is the answer to the request written on it. Resolves when
   * the handler may let the connection go (undefined: at once); not an async frame of its own.
   */
  #holdStandby(
    conn: Duplex,
    buffered: BufferedReader,
    reader: ControlReader<DepotMessage>,
    msg: Extract<DepotMessage, { type: "standby" }>,
    ctx: { remote: string; log: Logger; handshakeDone(): void },
  ): Promise<void> | undefined {
    const exit = this.#exits.get(msg.name);
    // The key is ours (randomSecret(16): always 32 hex digits), so its length is no secret.
    if (exit?.sessionKey === undefined || !equalFixedLength(msg.sessionKey, exit.sessionKey)) {
      return refuseTunnel(conn, ctx, DepotRefusal.badKey, `wrong session key for exit ${msg.name}`);
    }
    // More than the local keeps, than the exit's share or than the fds allow now: closed.
    if (exit.standby.length >= this.#standbyShare()) return;
    ctx.handshakeDone();
    let release!: () => void;
    const released = new Promise<void>((r) => release = r);
    const answer = reader.read();
    const st = new Standby(conn, buffered, answer, release, exit.standby);
    exit.standby.push(st);
    if (exit.takesRetire) {
      st.due = deadlines.clockMs() + this.spareIdleMs * retireAfterFactor;
      deadlines.add(st);
    }
    const idleEnd = () => {
      if (st.used) return;
      deadlines.delete(st);
      const i = exit.standby.indexOf(st);
      if (i >= 0) exit.standby.splice(i, 1);
      release();
    };
    // While idle, any frame or the end of the connection drops it (a local without "retire"
    // closes the spares it replaces; we close those we retire); once used, the request reads
    // `answer`.
    answer.then(idleEnd, idleEnd);
    return released;
  }

  /** Serve a mux session: every stream the local opens is a tunnel (one handshake each). */
  async #serveMux(
    conn: Duplex,
    name: string,
    remote: string,
    sessionKey?: string,
  ): Promise<void> {
    const log = this.log.child({ exit: name, mux: remote });
    const session = MuxSession.server(conn, {
      keepaliveIntervalMs: this.heartbeatMs,
      keepaliveTimeoutMs: this.heartbeatMs * heartbeatDeadFactor,
      log,
    });
    this.#muxSessions.add(session);
    // The exit's requests go on streams we open (open-with-data) when its local takes them
    // and this session presents the exit session's key (ours: its length is no secret).
    const exit = this.#exits.get(name);
    const bound = exit?.sessionKey !== undefined && sessionKey !== undefined &&
      equalFixedLength(sessionKey, exit.sessionKey);
    if (bound) {
      exit.mux = session;
      if (!exit.muxBound) {
        // A --mux exit holds no standby spares: the others' shares grow.
        exit.muxBound = true;
        if (this.#exits.get(name) === exit) this.#sharesChanged();
      }
    }
    log.info("mux session opened");
    const streams = new Set<Promise<void>>();
    try {
      for await (const stream of session) {
        const p = this.#serveMuxStream(stream, log, remote);
        streams.add(p);
        p.finally(() => streams.delete(p));
      }
    } finally {
      if (exit?.mux === session) exit.mux = undefined;
      this.#muxSessions.delete(session);
      await session.close("internal-error");
      await Promise.allSettled([...streams]);
      log.info("mux session closed", { why: (await session.closed).reason });
    }
  }

  /** One mux stream: the tunnel handshake under its own timer, then the relay. */
  async #serveMuxStream(stream: Duplex, log: Logger, remote: string): Promise<void> {
    const cancelTimer = after(this.handshakeTimeoutMs, () => {
      log.warn("mux stream handshake timeout, closing", { timeoutMs: this.handshakeTimeoutMs });
      closeQuietly(stream);
    });
    const ctx = { remote, log, handshakeDone: cancelTimer };
    try {
      await this.handleTunnel(stream, ctx, false);
    } catch (err) {
      log.debug("mux stream failed", { error: describe(err) });
    } finally {
      cancelTimer();
      closeQuietly(stream);
    }
  }
}

/** Refuse a tunnel connection: the log line, and `error{reason}` to the local (best effort). */
async function refuseTunnel(
  conn: Duplex,
  ctx: { remote: string; log: Logger },
  reason: string,
  message: string,
): Promise<void> {
  ctx.log.warn("tunnel refused", { remote: ctx.remote, failure: reason, error: message });
  await new ControlWriter(conn, depotProtocol).send({ type: "error", reason, message }).catch(
    () => {
      // The refused side hung up already; the refusal is logged above.
    },
  );
}

/** A request's frame on a tunnel: compact when the exit announced it, else JSON. */
function requestFrame(
  exit: ExitSession,
  msg: Outgoing<Extract<DepotMessage, { type: "connect" | "associate" }>>,
): Uint8Array {
  return exit.compact?.encode(msg) ?? encodeFrame({ v: depotProtocol.version, ...msg });
}

function describe(err: unknown): string {
  if (err instanceof RemoteError || err instanceof ControlError) {
    return `${err.reason}: ${err.message}`;
  }
  return errorMessage(err);
}
