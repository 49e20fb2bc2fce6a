/**
 * A yamux session over one Duplex: the read loop (decode, dispatch, never block on a
 * stream), the coalescing write queue, stream registry, limits, keepalive and go away.
 * @module
 */

import { liveSessions, muxRttSeconds, sessionEnded } from "./metrics.ts";
import { closeQuietly, type Duplex, noDelay } from "../net/duplex.ts";
import { errorMessage } from "../net/errors.ts";
import { IdTable } from "../net/id_table.ts";
import { deadlines } from "../net/deadline.ts";
import { setNotSentLowat } from "../net/notsent_lowat.ts";
import { drainSampleMinBytes, DrainWatch } from "./drain.ts";
import { type Logger, silentLogger } from "../log.ts";
import {
  defaultWindowBytes,
  encodeHeader,
  Flag,
  FrameDecoder,
  type FrameSink,
  FrameType,
  GoAwayCode,
  headerBytes,
  maxU32,
  MuxError,
} from "./frame.ts";
import { type OutFrame, Stream, type StreamHost } from "./stream.ts";

/** Options of a {@linkcode Session}. */
export interface SessionOptions {
  /** Streams open at once (both directions); a peer's SYN past it gets RST. @default 65536 */
  maxStreams?: number;
  /** Accepted-but-not-yet-`accept()`ed streams; past it a SYN gets RST. @default 256 */
  acceptBacklog?: number;
  /** Receive window each stream starts with (at least 256 KiB, yamux's). @default 262144 */
  initialWindowBytes?: number;
  /** Receive window a stream may grow to while its reader keeps up. @default 16777216 */
  maxWindowBytes?: number;
  /** Window growth beyond the initial windows, summed over all streams. @default 268435456 */
  windowBudgetBytes?: number;
  /** Ping interval for liveness and RTT; 0 disables keepalive. @default 30000 */
  keepaliveIntervalMs?: number;
  /** No ping reply and no other traffic for this long: the session is dead. @default 30000 */
  keepaliveTimeoutMs?: number;
  /** Largest data frame accepted (and sent). @default 16777216 */
  maxFrameBytes?: number;
  /**
   * Optional SYN response: hold the ACK of an accepted stream up to this long so it rides on
   * our first data (or FIN / window update) frame. 0 sends it at `accept()`. @default 0
   */
  synAckDelayMs?: number;
  /** `close("normal")` waits this long for open streams to finish. @default 10000 */
  drainTimeoutMs?: number;
  /**
   * A stream `close()`d before the peer's FIN is reset if that FIN has not come this long
   * after, so a peer that never closes cannot pin streams in a long-lived session; 0 = wait
   * forever. @default 60000
   */
  closeLingerMs?: number;
  /**
   * TCP_NOTSENT_LOWAT for the transport's socket, when it is a TCP (or TLS) connection and the
   * process may call libc (FFI): the kernel then takes only about this much unsent data and the
   * session's queue, where each stream's frames take turns, holds the rest, so one bulk stream
   * does not delay the others' frames by the megabytes an autotuned send buffer holds (on a
   * 50 Mbit link: 1.4 s; bench/RESULTS.md mhol). Set at the start; raised to 1 MiB while the
   * transport drains fast (there the buffer leaves in a few ms and a small option only costs
   * CPU) and set back once it drains slowly (see `#drained`, ./drain.ts; bench/RESULTS.md
   * mlow). 0 leaves the socket as it is.
   * @default 65536
   */
  notSentLowatBytes?: number;
  /** Logger for session events. @default silent */
  log?: Logger;
}

/**
 * TCP_NOTSENT_LOWAT a session sets on its TCP transport by default (see
 * {@linkcode SessionOptions.notSentLowatBytes}): chosen by measurement, bench/RESULTS.md mhol.
 */
export const defaultNotSentLowatBytes = 64 * 1024;

/** Whether a session has logged that it could not set TCP_NOTSENT_LOWAT (once a process). */
let lowatUnavailableLogged = false;

/** Counters of a session. */
export interface SessionStats {
  /** Streams in the session's table now (open, or waiting for their last FIN). */
  streamsOpen: number;
  /** Streams opened by either side since the start. */
  streamsTotal: number;
  /** Transport bytes read (headers included). */
  bytesIn: number;
  /** Transport bytes written (headers included). */
  bytesOut: number;
  /** Frames decoded. */
  framesIn: number;
  /** Frames written. */
  framesOut: number;
  /** Sum of the open streams' receive windows now (bytes). */
  recvWindowBytes: number;
  /**
   * Bytes of the session's own buffers now (read, write batches, staging, small views): what
   * bursts grow and a keepalive interval without traffic lets go again.
   */
  bufferBytes: number;
}

/** Why a session ended. */
export type SessionEndReason =
  | "local-close" // close() was called
  | "eof" // the transport ended
  | "remote-goaway" // the peer sent go away (with an error code) or closed after a normal one
  | "protocol-error" // the peer broke the protocol (we sent go away protocol error)
  | "internal-error" // close("internal-error") or a local failure
  | "keepalive-timeout" // the peer stopped answering
  | "conn-error"; // the transport failed

/**
 * Largest data frame we send; larger writes are split. A frame leaves whole, so this is what
 * another stream's frame may wait behind at most once it is the next in the queue (on a slow
 * link with TCP_NOTSENT_LOWAT: see `SessionOptions.notSentLowatBytes`); at least
 * `directReadMinBytes`, so a receiver still reads bulk payloads straight into its buffer. Each
 * is also the data one stream queues here at most before its writer waits for its frames to
 * reach the transport: what its writes put ahead of other streams' frames (bench/RESULTS.md
 * mhol), not the whole send window. Which applies follows the transport's drain rate (see
 * `#drained`): until a verdict, 256 KiB (mhol's); while it drains slowly, 64 KiB (a small frame
 * waits for less of a bulk one: mhol's 50 Mbit table, 89 -> 56 ms); while it drains fast, larger
 * (fewer frames and transport writes per GiB; the whole frame leaves within a few ms anyway).
 */
const maxSendFrameCapBytes = 256 * 1024;
const slowSendFrameBytes = 64 * 1024;
const fastSendFrameBytes = 1024 * 1024;
/**
 * TCP_NOTSENT_LOWAT while the transport drains fast (at least; a larger configured one stays):
 * as cheap as none on loopback (a 1 MiB frame still goes in one write), and a link that turns
 * slow then queues ~1 MiB unsent before the session sees it, not a whole send buffer (20 Mbit:
 * the first small answer after the change waited 0.7-0.9 s, not 2.0-2.3; bench/RESULTS.md
 * mlow). 256 KiB cost what 64 KiB does (every 1 MiB frame a partial write).
 */
const fastNotSentLowatBytes = 1024 * 1024;
/** Frames up to this size are copied into the coalescing buffer; larger go out directly. */
const coalesceCopyMaxBytes = 16 * 1024;
/**
 * The buffers small frames are coalesced into (the batch and its spare): each is made on the
 * first frame that needs it at this size, doubles whenever a batch overflows it, up to the max,
 * and is let go when the session has been quiet a whole keepalive interval (see
 * `#releaseBuffers`), so an idle session holds at most one small one.
 */
const minCoalesceBufferBytes = 4 * 1024;
const maxCoalesceBufferBytes = 256 * 1024;
/**
 * The staging buffer small writes are copied into (see `Session.stage`): its first size, and
 * the size it doubles up to while one batch of frames fills it.
 */
const minStageBytes = 16 * 1024;
const maxStageBytes = 256 * 1024;
/** Size of each small-view arena (see `Session.lendSmall`): a pooled receive buffer's. */
const viewArenaBytes = 16 * 1024;
/** Payloads at least this long are read straight into a waiting reader's buffer. */
const directReadMinBytes = 64 * 1024;
/** Small data frames in a row that end bulk reading (see Session's `#bulkFrames`). */
const bulkExitFrames = 4;
/** Microtasks the read loop waits for a stream's reader to return before a bulk read. */
const directReadYieldTicks = 8;
/** Read buffer sizes: start small (idle sessions are cheap), grow while reads fill it. */
const minReadBufferBytes = 16 * 1024;
const maxReadBufferBytes = 2 * 1024 * 1024;
/**
 * The read buffer a session quiet for a whole keepalive interval goes down to (however large
 * a burst made it): what an idle session's pending read holds. Reads that fill it grow it again.
 */
const idleReadBufferBytes = 4 * 1024;
/** A zero-length buffer: where the batch, staging and view buffers are not made (yet). */
const noBytes = new Uint8Array(0);
/**
 * Before it encodes, the writer yields microtasks until none of this many in a row brought a
 * frame, so what the rest of this turn queues (a FIN or ACK right after a write; the answers
 * of every stream whose data came in the same transport read) leaves in the same transport
 * write. Yielding only a fixed 8, each stream's answer a few awaits later missed the batch:
 * 0.77 writes per short stream on the accepting side, 0.06 (one per read) with this.
 */
const writerQuietTicks = 8;
/**
 * Most microtasks the writer yields before a write, however busy the turn stays: real turns
 * end within 8-15 (tunnel and depot `--mux` under load), and a turn that keeps queueing frames
 * (streams writing in a loop of resolved awaits) made a lone frame wait for 256 rounds of
 * everything else that ran (bench/mux_busy.ts).
 */
const writerMaxYieldTicks = 64;
/** How long a go away may take to flush before the transport is closed anyway. */
const goAwayFlushMs = 1000;
/**
 * Answers (RSTs to refused SYNs, ping replies) queued at most before the read loop waits for
 * the writer: a peer that floods requests and never reads our answers meets TCP backpressure
 * instead of growing our queue.
 */
const maxQueuedControlFrames = 4096;
/** Bytes decoded between checks of that bound (at most 5462 frames' worth of answers). */
const controlCheckBytes = 64 * 1024;

/** Slots an emptied FrameQueue keeps its array with (more: it was a flood, let it go). */
const keptQueueSlots = 4096;

/**
 * A FIFO of frames with O(1) shift. Its array is kept when the queue empties (the writer
 * empties it every batch): no fresh array, regrown from nothing, per batch.
 */
class FrameQueue {
  #items: (OutFrame | undefined)[] = [];
  #head = 0;
  /** Index after the last frame (slots from here on are free, holding nothing). */
  #tail = 0;
  get length(): number {
    return this.#tail - this.#head;
  }
  push(f: OutFrame): void {
    if (this.#tail === this.#items.length) this.#items.push(f);
    else this.#items[this.#tail] = f;
    this.#tail++;
  }
  /** The first frame, left in the queue. */
  peek(): OutFrame | undefined {
    return this.#head === this.#tail ? undefined : this.#items[this.#head];
  }
  shift(): OutFrame | undefined {
    if (this.#head === this.#tail) return undefined;
    const f = this.#items[this.#head];
    this.#items[this.#head++] = undefined;
    if (this.#head === this.#tail) {
      this.#head = this.#tail = 0;
      if (this.#items.length > keptQueueSlots) this.#items = []; // a flood's: not kept
    } else if (this.#head > 1024 && this.#head * 2 > this.#tail) {
      this.#items.copyWithin(0, this.#head, this.#tail);
      this.#items.fill(undefined, this.#tail - this.#head, this.#tail);
      this.#tail -= this.#head;
      this.#head = 0;
    }
    return f;
  }
  /** Let go of the array an emptied queue keeps (a quiet session's). */
  release(): void {
    if (this.#head === this.#tail) this.#items = [];
  }
  /** Remove and return everything queued. */
  drain(): OutFrame[] {
    const rest = this.#items.slice(this.#head, this.#tail) as OutFrame[];
    this.#items = [];
    this.#head = this.#tail = 0;
    return rest;
  }
}

interface ResolvedOptions {
  maxStreams: number;
  acceptBacklog: number;
  initialWindowBytes: number;
  maxWindowBytes: number;
  windowBudgetBytes: number;
  keepaliveIntervalMs: number;
  keepaliveTimeoutMs: number;
  maxFrameBytes: number;
  synAckDelayMs: number;
  drainTimeoutMs: number;
  closeLingerMs: number;
}

interface PendingPing {
  sentAt: number;
  resolve: (rttMs: number) => void;
  reject: (e: Error) => void;
}

/**
 * A yamux session. `Session.client(conn)` opens odd stream ids, `Session.server(conn)` even.
 *
 * Guarantees: the read loop never waits for a stream (receive buffers are bounded by the
 * window the peer must respect; a peer that overruns it gets go away + close); writes are
 * coalesced into few transport writes; protocol errors end the session with go away
 * (protocol error), never a crash; `closed` resolves once the transport is closed and both
 * loops have finished.
 *
 * @example
 * ```ts
 * import { Session } from "./mod.ts";
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const accepted = listener.accept();
 * const conn = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
 * const server = Session.server(await accepted);
 * const session = Session.client(conn);
 * const stream = await session.open({ data: new TextEncoder().encode("GET /\n"), fin: true });
 * for await (const s of server) { // the server's first stream carries the request, then its end
 *   const buf = new Uint8Array(16);
 *   const n = await s.read(buf);
 *   console.assert(new TextDecoder().decode(buf.subarray(0, n!)) === "GET /\n");
 *   console.assert((await s.read(buf)) === null); // fin came in the same frame
 *   await s.write(new TextEncoder().encode("200"));
 *   await s.closeWrite();
 *   break;
 * }
 * const reply = new Uint8Array(3);
 * await stream.read(reply);
 * await session.close();
 * await server.close();
 * listener.close();
 * ```
 */
export class Session implements StreamHost, FrameSink {
  #conn: Duplex;
  #client: boolean;
  #opts: ResolvedOptions;
  #log: Logger;
  /** Open streams by id (not a Map: see lib/net/id_table.ts). */
  #streams = new IdTable<Stream>();
  #nextId: number;
  #backlog: Stream[] = [];
  #acceptWaiters: ((s: Stream | null) => void)[] = [];
  /** Set by `serveEach`: every stream the peer opens goes to it, not to `accept()`. */
  #serveEach: ((s: Stream) => void) | null = null;
  /** A stream for `#serveEach` whose SYN frame's payload is still being read. */
  #handOff: Stream | null = null;
  #decoder: FrameDecoder;
  #rxStream: Stream | null = null;
  #rxFin = false;
  /**
   * Bulk frames are coming: read headers in small pieces (see #readLoop). Set by a large data
   * frame, cleared only by `bulkExitFrames` small ones in a row: a sender relaying bulk data
   * sends a small frame now and then (a short read of its source), and the read after it would
   * otherwise take up to 2 MiB of the next large frame into our buffer, to be copied out.
   */
  #bulkFrames = false;
  /** Small data frames since the last large one. */
  #smallFrames = 0;
  #prio = new FrameQueue();
  #ordered = new FrameQueue();
  #writing = false;
  /** Frames enqueued since the start (the writer watches it to see a batch still growing). */
  #enqueued = 0;
  /** The read loop, paused until the writer has sent the queued answers (see below). */
  #controlDrained: (() => void) | null = null;
  #writerIdle: (() => void)[] = [];
  /** Frames the writer has encoded and not yet reported written (reused array). */
  #written: OutFrame[] = [];
  /**
   * The batch: frames encoded and not yet handed to the transport, in the order they leave.
   * Small frames go straight in when they are queued (see `encodeNow`), the writer adds the
   * queued ones; it is never the buffer a transport write is still reading (`#spare` is).
   */
  #out: Uint8Array<ArrayBuffer> = noBytes;
  #outLen = 0;
  /** Frames `encodeNow` put in `#out` (for `framesOut`; queued ones count when reported). */
  #outFrames = 0;
  /** Number of the batch `#out` holds: a frame's place in it may be changed only until then. */
  #batch = 0;
  /** The buffer the last batch was written from, filled next (made on the first write). */
  #spare: Uint8Array<ArrayBuffer> | null = null;
  /**
   * Streams with an ACK or FIN in `#out` encoded by `encodeNow`, and those flags: told when
   * the batch is written (their state moves on then).
   */
  #outStreams: Stream[] = [];
  #outFlags: number[] = [];
  /** The batch being written (`#takeBatch`): its buffer, `encodeNow` frames, streams, flags. */
  #flight: Uint8Array<ArrayBuffer> | null = null;
  #flightFrames = 0;
  #flightStreams: Stream[] = [];
  #flightFlags: number[] = [];
  /** Small payloads waiting in the queues, copied here by `stage`; reused from 0 once the
   * writer has taken every queued frame (so copied into `#out`). */
  #stage: Uint8Array<ArrayBuffer> = noBytes;
  #stageOff = 0;
  /** Small received payloads lent to view readers (see `lendSmall`), and its fill. */
  #viewArena: Uint8Array<ArrayBuffer> = noBytes;
  #viewArenaOff = 0;
  #pings = new Map<number, PendingPing>();
  #pingSeq = 0;
  /** Ping frames received and queued (requests and replies): activity that is not traffic. */
  #pingFrames = 0;
  /** Frames in and queued, pings left out, at the last keepalive tick (-1: none yet). */
  #activityAtTick = -1;
  /** The read loop's buffer (it grows while reads fill it; see #readLoop). */
  #readBuf = new Uint8Array(minReadBufferBytes);
  /** A quiet session let go of its buffers: the read loop takes a small one after its read. */
  #shrinkRead = false;
  #rtt: number | undefined;
  #localGoAway = false;
  #remoteGoAway = false;
  #shut = false;
  #closing: Promise<void> | null = null;
  #readDone: Promise<void>;
  #closedResolve!: (v: { reason: string; error?: Error }) => void;
  // Lingering closes and held-back SYN ACKs are on lib/net's shared deadline wheel, held by
  // their streams (Stream._linger, Stream._holdAck) and dropped when the stream is freed.
  /**
   * Releases this session's hold on the shared wheel (taken with `synAckDelayMs`): each
   * accepted stream adds a held-back ACK and most take it off again at once, so without a hold
   * a wheel that empties in between stopped and restarted its timer per stream.
   */
  #releaseWheel: (() => void) | null = null;
  /**
   * The wheel's clock as first read for a held-back ACK since the last transport read (-1:
   * not yet): the streams one read accepts share one clock read (an op call each).
   */
  #readClockMs = -1;
  #keepaliveTimer: ReturnType<typeof setInterval> | undefined;
  #keepaliveDeadline: number | undefined;
  /**
   * `bytesIn` when the pending keepalive ping went out: more since then is traffic that proves
   * the peer alive. (A counter the read loop keeps anyway, not a clock read per transport
   * read: `performance.now()` is an op call, ~0.2-0.4 µs, on every read of a busy session.)
   */
  #bytesInAtPing = 0;
  #windowReserved = 0;
  /**
   * How fast the transport drains (see ./drain.ts): TCP_NOTSENT_LOWAT is `#lowatBytes` unless
   * it counts as fast, then `fastNotSentLowatBytes`. Null: the option is not ours to switch (not
   * set, not TCP, no libc).
   */
  #drain: DrainWatch | null = null;
  #lowatBytes = 0;
  /** TCP_NOTSENT_LOWAT on the socket now. */
  #lowatNow = 0;
  #drainWaiter: (() => void) | null = null;
  #stats: SessionStats = {
    streamsOpen: 0,
    streamsTotal: 0,
    bytesIn: 0,
    bytesOut: 0,
    framesIn: 0,
    framesOut: 0,
    recvWindowBytes: 0,
    bufferBytes: 0,
  };

  /** Resolves when the session has ended: why, and the error if there was one. */
  readonly closed: Promise<{ reason: string; error?: Error }>;
  /** Largest receive window a stream may grow to. @internal */
  readonly maxWindowBytes: number;
  /** Largest data frame we send (it follows the drain rate: see `#sizeFrames`). @internal */
  maxSendFrameBytes = maxSendFrameCapBytes;
  /** Data a stream queues here at most before it waits for the transport. @internal */
  streamQueueBytes = maxSendFrameCapBytes;

  /** A session whose streams get odd ids (the dialling side, by convention). */
  static client(conn: Duplex, opts: SessionOptions = {}): Session {
    return new Session(conn, true, opts);
  }

  /** A session whose streams get even ids (the accepting side, by convention). */
  static server(conn: Duplex, opts: SessionOptions = {}): Session {
    return new Session(conn, false, opts);
  }

  private constructor(conn: Duplex, client: boolean, o: SessionOptions) {
    // The session coalesces frames itself; with Nagle on, the small header write before a
    // large payload waits for the peer's ACK (warren -> Go yamux: 424-541 vs 1374 MB/s).
    this.#conn = noDelay(conn);
    this.#client = client;
    this.#nextId = client ? 1 : 2;
    this.#opts = {
      maxStreams: o.maxStreams ?? 65536,
      acceptBacklog: o.acceptBacklog ?? 256,
      initialWindowBytes: Math.max(defaultWindowBytes, o.initialWindowBytes ?? defaultWindowBytes),
      maxWindowBytes: Math.max(defaultWindowBytes, o.maxWindowBytes ?? 16 * 1024 * 1024),
      windowBudgetBytes: o.windowBudgetBytes ?? 256 * 1024 * 1024,
      keepaliveIntervalMs: o.keepaliveIntervalMs ?? 30_000,
      keepaliveTimeoutMs: o.keepaliveTimeoutMs ?? 30_000,
      maxFrameBytes: o.maxFrameBytes ?? 16 * 1024 * 1024,
      synAckDelayMs: o.synAckDelayMs ?? 0,
      drainTimeoutMs: o.drainTimeoutMs ?? 10_000,
      closeLingerMs: o.closeLingerMs ?? 60_000,
    };
    this.#opts.maxWindowBytes = Math.max(this.#opts.maxWindowBytes, this.#opts.initialWindowBytes);
    this.maxWindowBytes = this.#opts.maxWindowBytes;
    this.#sizeFrames(maxSendFrameCapBytes);
    this.#log = o.log ?? silentLogger;
    const lowat = o.notSentLowatBytes ?? defaultNotSentLowatBytes;
    if (lowat > 0) this.#notSentLowat(conn, lowat);
    this.#decoder = new FrameDecoder(this.#opts.maxFrameBytes);
    this.closed = new Promise((r) => this.#closedResolve = r);
    if (this.#opts.synAckDelayMs > 0) this.#releaseWheel = deadlines.hold();
    liveSessions.add(this);
    this.#readDone = this.#readLoop();
    if (this.#opts.keepaliveIntervalMs > 0) {
      this.#keepaliveTimer = setInterval(
        () => this.#keepaliveTick(),
        this.#opts.keepaliveIntervalMs,
      );
      this.#sendPing().catch(() => {}); // an early RTT sample for window growth; may die with us
    }
  }

  /**
   * TCP_NOTSENT_LOWAT on the transport's socket, and its large writes watched from now on (see
   * `#drained`); where it cannot be set, one debug line.
   */
  #notSentLowat(conn: Duplex, bytes: number): void {
    const r = setNotSentLowat(conn, bytes);
    if (r === "set") {
      this.#lowatBytes = this.#lowatNow = bytes;
      this.#drain = new DrainWatch();
    }
    if (r === "set" || r === "not-tcp" || lowatUnavailableLogged) return;
    lowatUnavailableLogged = true;
    this.#log.debug("TCP_NOTSENT_LOWAT not set: a bulk stream may delay the others", {
      reason: r,
    });
  }

  // ------------------------------------------------------------ public API

  /** Latest measured round-trip time in ms (pings, and ACKs of streams we opened). */
  get rttMs(): number | undefined {
    return this.#rtt;
  }

  /** Live counters (a snapshot copy). */
  get stats(): SessionStats {
    let recvWindowBytes = 0;
    for (const st of this.#streams) recvWindowBytes += st.windowBytes;
    const bufferBytes = this.#readBuf.length + this.#out.length + (this.#spare?.length ?? 0) +
      (this.#flight?.length ?? 0) + this.#stage.length + this.#viewArena.length;
    return { ...this.#stats, streamsOpen: this.#streams.size, recvWindowBytes, bufferBytes };
  }

  /** Whether this side opens odd stream ids. */
  get isClient(): boolean {
    return this.#client;
  }

  /**
   * Open a stream. With `data`, the first bytes ride in the SYN frame (no round trip); with
   * `fin` too, a small request is one frame: SYN + data + FIN (seed 004's "QuRe").
   * Rejects with `MuxError` "session-closed", "goaway", "too-many-streams" or
   * "streams-exhausted".
   */
  open(opts: { data?: Uint8Array; fin?: boolean } = {}): Promise<Stream> {
    const refused = this.#openRefused();
    if (refused) return Promise.reject(refused);
    const s = this.#newStream();
    const { data, fin } = opts;
    if (data !== undefined && data.length > 0) {
      // The usual small first write is queued at once (no async frame); others may wait.
      if (!s.writeNow(data)) return this.#openWriting(s, data, fin === true);
    } else if (!fin) s._sendSyn();
    return fin ? s.closeWrite().then(() => s) : Promise.resolve(s);
  }

  /**
   * `open({ data })` without its promise: the stream at once, `data` (a small first write)
   * queued in its SYN frame. For an opener that reads the answer next (depot-server's
   * requests on `--mux`): no turn between the open and that read. Throws the `MuxError` that
   * `open()` rejects with. When the send window or the transport's backlog cannot take `data`
   * now, it is written as `write()` would, and a failed write resets the stream (its reads then
   * fail).
   */
  openNow(data: Uint8Array): Stream {
    const refused = this.#openRefused();
    if (refused) throw refused;
    const s = this.#newStream();
    if (data.length === 0) s._sendSyn();
    else if (!s.writeNow(data)) s.write(data).catch(s.reset.bind(s));
    return s;
  }

  /** Why a stream cannot be opened now, if it cannot. */
  #openRefused(): MuxError | undefined {
    if (this.#shut || this.#localGoAway) return new MuxError("session-closed", "session is closed");
    if (this.#remoteGoAway) return new MuxError("goaway", "peer sent go away");
    if (this.#streams.size >= this.#opts.maxStreams) {
      return new MuxError("too-many-streams", `maxStreams ${this.#opts.maxStreams} reached`);
    }
    if (this.#nextId > maxU32) return new MuxError("streams-exhausted", "no stream ids left");
    return undefined;
  }

  /** A stream of ours, its id taken and counted (`#openRefused` said it may be). */
  #newStream(): Stream {
    const id = this.#nextId;
    this.#nextId += 2;
    const s = new Stream(this, id, true, this.#opts.initialWindowBytes);
    this.#streams.set(id, s);
    this.#stats.streamsTotal++;
    // The ACK gives the first RTT sample (for window growth) until a ping has measured one.
    if (this.#rtt === undefined) s._openedAt = performance.now();
    return s;
  }

  /** The rest of `open()` when its data must wait for the writer lock or send window. */
  async #openWriting(s: Stream, data: Uint8Array, fin: boolean): Promise<Stream> {
    await s.write(data);
    if (fin) await s.closeWrite();
    return s;
  }

  /**
   * The next stream the peer opened, or `null` once the session is closed (at once once
   * `serveEach` took the streams over).
   */
  accept(): Promise<Stream | null> {
    if (this.#serveEach) return Promise.resolve(null);
    const s = this.#backlog.shift();
    if (s) {
      this.#accepted(s, false);
      return Promise.resolve(s);
    }
    if (this.#shut || this.#localGoAway) return Promise.resolve(null);
    return new Promise((r) => this.#acceptWaiters.push(r));
  }

  /**
   * Accepted streams until the session closes. (A plain iterator over `accept()`, not an async
   * generator: a generator's resume and its `yield`'s own await cost each accepted stream two
   * promise turns more.)
   */
  [Symbol.asyncIterator](): AsyncIterator<Stream> {
    let done = false;
    const end = (): IteratorResult<Stream> => {
      done = true;
      return { value: undefined, done: true };
    };
    return {
      next: () => {
        if (done) return Promise.resolve(end());
        return this.accept().then((s) => s === null ? end() : { value: s, done: false });
      },
      return: () => Promise.resolve(end()),
    };
  }

  /**
   * Hand every stream the peer opens to `handler`, called synchronously from the read loop as
   * soon as the stream's SYN frame has been read whole, its payload (if any) queued on it (a
   * `takeView()` gets it at once): what a stream's first bytes ask for can start in the same
   * turn, as the frame is read, instead of a turn later through `accept()`'s promise (depot
   * `--mux`'s exit dials the target before its session issues its next transport read).
   * Streams already waiting for `accept()` are handed over now; `accept()` and the iterator
   * return `null` from now on, and `acceptBacklog` no longer applies (none wait). `handler`
   * must not block the read loop for long; if it throws, that stream is reset. Once per session.
   */
  serveEach(handler: (s: Stream) => void): void {
    if (this.#serveEach) throw new Error("serveEach: the session's streams are served already");
    this.#serveEach = handler;
    for (const w of this.#acceptWaiters.splice(0)) w(null);
    for (const s of this.#backlog.splice(0)) this.#handOver(s, false);
  }

  /** `s` goes to the `serveEach` handler (its ACK held back or sent, as `accept()` does). */
  #handOver(s: Stream, inRead: boolean): void {
    this.#accepted(s, inRead);
    try {
      this.#serveEach!(s);
    } catch (err) {
      this.#log.warn("mux stream handler failed", { id: s.id, error: errorMessage(err) });
      s.reset();
    }
  }

  /** The stream `#incoming` set aside for `serveEach` is complete: hand it over. */
  #handOffDone(): void {
    const s = this.#handOff!;
    this.#handOff = null;
    this.#handOver(s, true);
  }

  /** Send a ping and resolve with the round-trip time in ms. */
  ping(): Promise<number> {
    if (this.#shut) return Promise.reject(new MuxError("session-closed", "session is closed"));
    return this.#sendPing();
  }

  /**
   * Go away and end the session. "normal": stop accepting streams, let open streams finish
   * (up to drainTimeoutMs), then close. Error codes close at once.
   */
  close(code: "normal" | "protocol-error" | "internal-error" = "normal"): Promise<void> {
    if (this.#closing && code !== "normal" && !this.#shut) {
      // Escalation: a graceful close still draining becomes an immediate one.
      const reason = code === "protocol-error" ? "protocol-error" : "internal-error";
      const goAway = code === "protocol-error"
        ? GoAwayCode.protocolError
        : GoAwayCode.internalError;
      return this.#fail(reason, undefined, goAway).then(() => this.closed).then(() => {});
    }
    if (this.#closing) return this.#closing.then(() => this.closed).then(() => {});
    this.#closing = (async () => {
      if (this.#shut) return;
      if (code !== "normal") {
        await this.#fail(
          code === "protocol-error" ? "protocol-error" : "internal-error",
          undefined,
          code === "protocol-error" ? GoAwayCode.protocolError : GoAwayCode.internalError,
        );
        return;
      }
      this.#localGoAway = true;
      this.#sendControl(FrameType.goAway, 0, 0, GoAwayCode.normal);
      for (const w of this.#acceptWaiters.splice(0)) w(null);
      for (const s of this.#backlog.splice(0)) s.reset();
      if (this.#streams.size > 0) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        await new Promise<void>((resolve) => {
          this.#drainWaiter = resolve;
          timer = setTimeout(resolve, this.#opts.drainTimeoutMs);
        });
        clearTimeout(timer);
        this.#drainWaiter = null;
      }
      await this.#shutdown("local-close");
    })();
    return this.#closing.then(() => this.closed).then(() => {});
  }

  // ------------------------------------------------------- StreamHost

  /** @internal */
  enqueue(f: OutFrame, priority: boolean): void {
    if (this.#shut) {
      f.done?.reject(new MuxError("session-closed", "session is closed"));
      return;
    }
    (priority ? this.#prio : this.#ordered).push(f);
    this.#enqueued++;
    if (!this.#writing) {
      this.#writing = true;
      this.#writeLoop();
    }
  }

  /**
   * @internal Encode a frame straight into the batch (`#out`), its payload (at most a small
   * write's size) copied there: no OutFrame, no staged copy, no report of its own. Returns its
   * offset in the batch (see `addFin`), or -1 when it must be queued instead: frames are queued
   * ahead of it (it would overtake them), the batch is at its largest size, or the session is
   * shut. Its ACK or FIN moves `s`'s state on once the batch is written (`_batchWritten`).
   */
  encodeNow(
    s: Stream,
    type: number,
    flags: number,
    length: number,
    payload: Uint8Array | null,
  ): number {
    if (this.#ordered.length > 0 || this.#shut) return -1;
    const at = this.#outLen;
    const end = at + headerBytes + (payload === null ? 0 : payload.length);
    if (end > this.#out.length && !this.#growOut(end)) return -1;
    const out = this.#out;
    encodeHeader(out, at, type, flags, s.id, length);
    if (payload !== null) out.set(payload, at + headerBytes);
    this.#outLen = end;
    this.#outFrames++;
    if ((flags & (Flag.ack | Flag.fin)) !== 0) {
      this.#outStreams.push(s);
      this.#outFlags.push(flags);
    }
    this.#enqueued++;
    if (!this.#writing) {
      this.#writing = true;
      this.#writeLoop();
    }
    return at;
  }

  /** @internal The number of the batch `encodeNow` encodes into now. */
  get batch(): number {
    return this.#batch;
  }

  /**
   * @internal Add FIN to `s`'s frame at offset `at` of batch `batch` (`encodeNow`'s), if that
   * batch has not been handed to the transport yet; false: it has, send FIN on a frame of its own.
   */
  addFin(s: Stream, at: number, batch: number): boolean {
    if (batch !== this.#batch || this.#shut) return false;
    this.#out[at + 3] |= Flag.fin; // the low byte of the big-endian flags
    this.#outStreams.push(s);
    this.#outFlags.push(Flag.fin);
    return true;
  }

  /**
   * @internal A copy of `p` (at most a small write's size) for a queued frame, valid until the
   * writer has encoded that frame: one shared buffer filled from its start again each time the
   * queues empty, instead of a fresh ArrayBuffer per write (`slice`: an allocation the GC
   * must free again, several µs per small write on a busy process).
   */
  stage(p: Uint8Array): Uint8Array {
    const n = p.length;
    let off = this.#stageOff;
    if (off + n > this.#stage.length) {
      // Full: a fresh buffer; queued frames keep the old one alive until they are written.
      const size = Math.min(maxStageBytes, Math.max(minStageBytes, this.#stage.length * 2));
      this.#stage = new Uint8Array(Math.max(n, size));
      off = 0;
    }
    this.#stage.set(p, off);
    this.#stageOff = off + n;
    return this.#stage.subarray(off, off + n);
  }

  /**
   * @internal A copy of `p` (at most `smallViewMaxBytes`) lent to a stream's view reader:
   * bump-allocated in a shared arena whose bytes are never overwritten (a full arena is
   * replaced, left to the GC once no view of it is held), so the view stays valid however
   * long its reader holds it, and no stream keeps a buffer of its own between frames. A view
   * held by a stalled reader pins at most one arena, as a pooled receive buffer did.
   */
  lendSmall(p: Uint8Array): Uint8Array {
    const n = p.length;
    let off = this.#viewArenaOff;
    if (off + n > this.#viewArena.length) {
      this.#viewArena = new Uint8Array(viewArenaBytes);
      off = 0;
    }
    this.#viewArena.set(p, off);
    this.#viewArenaOff = off + n;
    return this.#viewArena.subarray(off, off + n);
  }

  /** @internal */
  freeStream(s: Stream): void {
    this.#streams.delete(s.id, s);
    if (this.#streams.size === 0) this.#drainWaiter?.();
  }

  /** @internal */
  reserveWindow(bytes: number): boolean {
    if (this.#windowReserved + bytes > this.#opts.windowBudgetBytes) return false;
    this.#windowReserved += bytes;
    return true;
  }

  /** @internal */
  releaseWindow(bytes: number): void {
    this.#windowReserved -= bytes;
  }

  // ---------------------------------------------------------- read side

  async #readLoop(): Promise<void> {
    let buf = this.#readBuf;
    let small = 0;
    const nextHeader = new Uint8Array(headerBytes);
    try {
      while (!this.#shut) {
        const rs = this.#rxStream;
        if (rs !== null && this.#decoder.payloadLeft >= directReadMinBytes) {
          // Bulk payload: give its reader a few microtasks to come back for more (it was
          // just handed the previous piece), then read the transport into its buffer.
          // No reader back in time, or one that reads views: read into the stream's receive
          // buffer instead (one copy out later, none for a view).
          for (let i = 0; i < directReadYieldTicks && !rs._readerWaiting; i++) await null;
          // The read may also take the next frame's header (never more): one read per frame
          // instead of two when the rest of the payload and that header are both there.
          const left = this.#decoder.payloadLeft;
          const want = left + headerBytes;
          let target = rs._takeDirect(want, directReadMinBytes);
          const direct = target !== null;
          target ??= rs._reserveQueue(want);
          if (target !== null) {
            const done = (k: number) => direct ? rs._directDone(k) : rs._queueDone(k);
            let n: number | null = 0;
            try {
              n = await this.#conn.read(target);
            } finally {
              if (!n) done(0);
            }
            if (n === null) {
              if (!this.#shut) this.#shutdown(this.#remoteGoAway ? "remote-goaway" : "eof");
              return;
            }
            this.#stats.bytesIn += n;
            this.#readClockMs = -1;
            const k = Math.min(n, left);
            // Header bytes past the payload: kept apart before the stream owns the target again.
            if (n > k) nextHeader.set(target.subarray(k, n));
            const complete = this.#decoder.skipPayload(k);
            done(k);
            if (complete && this.#rxStream === rs) {
              this.#rxStream = null;
              if (this.#rxFin) rs._rxFin();
              if (this.#handOff === rs) this.#handOffDone();
            }
            if (n > k) this.#decoder.push(nextHeader, this, 0, n - k);
            continue;
          }
        }
        // Amid bulk frames, read up to the end of the next header and no further: its payload
        // then goes straight to the stream's reader or buffer instead of being copied from
        // ours, and the reader never gets a sliver of it (a relay would shrink its buffer).
        const bulk = this.#bulkFrames;
        const n = await this.#conn.read(
          bulk ? buf.subarray(0, Math.min(buf.length, this.#decoder.toNextHeader)) : buf,
        );
        if (n === null) {
          if (!this.#shut) {
            this.#shutdown(this.#remoteGoAway ? "remote-goaway" : "eof");
          }
          return;
        }
        this.#stats.bytesIn += n;
        this.#readClockMs = -1;
        // Decoded a slice at a time so a flood of requests queues at most one slice of
        // answers past maxQueuedControlFrames before the loop waits for the writer.
        for (let o = 0; o < n && !this.#shut; o += controlCheckBytes) {
          this.#decoder.push(buf, this, o, Math.min(n, o + controlCheckBytes));
          if (this.#prio.length > maxQueuedControlFrames && this.#writing && !this.#shut) {
            await new Promise<void>((r) => this.#controlDrained = r);
          }
        }
        if (this.#shrinkRead) {
          this.#shrinkRead = false; // a quiet session (#releaseBuffers)
          buf = this.#readBuf = new Uint8Array(idleReadBufferBytes);
          small = 0;
          continue;
        }
        if (bulk) continue;
        if (n === buf.length && buf.length < maxReadBufferBytes) {
          // Capped: 1 MiB × 4 overshot the largest size (a 4 MiB read buffer per busy session).
          buf = this.#readBuf = new Uint8Array(Math.min(buf.length * 4, maxReadBufferBytes));
          small = 0;
        } else if (n < buf.length / 16 && buf.length > minReadBufferBytes && ++small > 16) {
          buf = this.#readBuf = new Uint8Array(buf.length / 4); // one step down: bursts regrow quickly
          small = 0;
        }
      }
    } catch (err) {
      if (this.#shut) return; // we closed the transport ourselves
      if (err instanceof MuxError && err.reason === "remote-error") {
        // The peer's go away with an error code: its own failure (or a peer that tears its end
        // down at once, as depot-local when its control connection ends), not a fault in what
        // it sent us: no protocol error of ours to warn about; the session's end says why.
        this.#log.info("mux peer went away", { error: err.message });
        this.#fail("remote-goaway", err);
      } else if (err instanceof MuxError) {
        this.#log.warn("mux protocol error", { failure: err.reason, error: err });
        this.#fail("protocol-error", err, GoAwayCode.protocolError);
      } else {
        this.#fail("conn-error", err instanceof Error ? err : new Error(errorMessage(err)));
      }
    }
  }

  /** @internal FrameSink: one validated header. */
  onFrame(type: number, flags: number, id: number, length: number): void {
    this.#stats.framesIn++;
    if (type === FrameType.ping) return this.#onPing(flags, length);
    if (type === FrameType.goAway) return this.#onGoAway(length);
    this.#streamFrame(type, flags, id, length);
    // A new stream for `serveEach` goes now, unless its SYN frame's payload is still to come.
    if (this.#handOff !== null && this.#rxStream !== this.#handOff) this.#handOffDone();
  }

  /** A frame of a stream (data or window update): its flags, and where its payload goes. */
  #streamFrame(type: number, flags: number, id: number, length: number): void {
    this.#rxStream = null;
    this.#rxFin = false;
    if (id === 0) throw new MuxError("bad-stream-id", "stream frame on stream id 0");
    let s: Stream | undefined;
    if ((flags & Flag.syn) !== 0) {
      s = this.#incoming(id);
      if (!s) return; // refused with RST; any payload is discarded
    } else {
      s = this.#streams.get(id);
      if (!s) return; // unknown or already closed stream: payload discarded
    }
    if ((flags & Flag.rst) !== 0) {
      s._rxReset();
      return;
    }
    if ((flags & Flag.ack) !== 0) {
      if (s._openedAt !== undefined && this.#rtt === undefined) {
        this.#rtt = performance.now() - s._openedAt; // first sample until a ping measures
      }
      s._rxAck();
    } else if (!s._established) {
      // Any frame of the peer on a stream it accepted stands for its ACK: Go yamux never
      // sends ACK for a stream whose FIN arrived before it was accepted (QuRe).
      s._rxAck();
    }
    const fin = (flags & Flag.fin) !== 0;
    if (type === FrameType.windowUpdate) {
      s._rxWindow(length);
      if (fin) s._rxFin();
      return;
    }
    const verdict = s._rxData(length);
    if (verdict === "overrun") {
      throw new MuxError("window-exceeded", `stream ${id}: ${length} bytes exceed its window`);
    }
    if (verdict === "after-fin") {
      s._resetAfterClose(); // data after the peer's own FIN: that stream is broken
      return;
    }
    if (verdict === "discard") {
      if (s._localClosed && !fin && length > 0) s._resetAfterClose();
      else if (fin) s._rxFin();
      return;
    }
    if (length === 0) {
      if (fin) s._rxFin();
      return;
    }
    this.#rxStream = s;
    this.#rxFin = fin;
    if (length >= directReadMinBytes) {
      this.#bulkFrames = true;
      this.#smallFrames = 0;
    } else if (this.#bulkFrames && ++this.#smallFrames >= bulkExitFrames) {
      this.#bulkFrames = false;
    }
  }

  /** @internal FrameSink: payload of the current data frame. */
  onPayload(chunk: Uint8Array, last: boolean): void {
    const s = this.#rxStream;
    if (!s) return;
    s._rxPayload(chunk, this.#decoder.payloadLeft);
    if (last) {
      this.#rxStream = null;
      if (this.#rxFin) s._rxFin();
      if (this.#handOff === s) this.#handOffDone();
    }
  }

  #incoming(id: number): Stream | undefined {
    if ((id & 1) === (this.#client ? 1 : 0)) {
      throw new MuxError("bad-stream-id", `peer opened stream ${id} with our id parity`);
    }
    if (this.#streams.has(id)) throw new MuxError("duplicate-stream", `stream ${id} opened twice`);
    if (this.#localGoAway || this.#shut) {
      this.#sendControl(FrameType.windowUpdate, Flag.rst, id, 0);
      return undefined;
    }
    if (
      this.#streams.size >= this.#opts.maxStreams ||
      (this.#serveEach === null && this.#backlog.length >= this.#opts.acceptBacklog)
    ) {
      this.#log.debug("mux refusing stream", { id, streams: this.#streams.size });
      this.#sendControl(FrameType.windowUpdate, Flag.rst, id, 0);
      return undefined;
    }
    const s = new Stream(this, id, false, this.#opts.initialWindowBytes);
    this.#streams.set(id, s);
    this.#stats.streamsTotal++;
    if (this.#serveEach) {
      this.#handOff = s; // handed over once its SYN frame is read whole (see onFrame)
      return s;
    }
    const w = this.#acceptWaiters.shift();
    if (w) {
      this.#accepted(s, true);
      w(s);
    } else this.#backlog.push(s);
    return s;
  }

  /** `s` is handed to the app: its ACK goes now or is held back; `inRead`: within a read. */
  #accepted(s: Stream, inRead: boolean): void {
    const delayMs = this.#opts.synAckDelayMs;
    if (delayMs <= 0) {
      s._sendAck();
      return;
    }
    let nowMs: number;
    if (!inRead) nowMs = deadlines.clockMs();
    else if (this.#readClockMs >= 0) nowMs = this.#readClockMs;
    else nowMs = this.#readClockMs = deadlines.clockMs();
    s._holdAck(nowMs + delayMs); // off the wheel once the ACK rides on a frame
  }

  /** @internal A stream was closed before the peer's FIN: RST it if that FIN never comes. */
  lingerStream(s: Stream): void {
    if (this.#opts.closeLingerMs > 0) s._linger(deadlines.clockMs() + this.#opts.closeLingerMs);
  }

  #onPing(flags: number, value: number): void {
    this.#pingFrames++;
    if ((flags & Flag.syn) !== 0) {
      this.#pingFrames++; // the reply
      this.#sendControl(FrameType.ping, Flag.ack, 0, value);
      return;
    }
    const p = this.#pings.get(value);
    if (!p) return; // an unsolicited or late reply: nothing waits for it
    this.#pings.delete(value);
    const rtt = performance.now() - p.sentAt;
    muxRttSeconds.observe(rtt / 1000);
    this.#rtt = this.#rtt === undefined ? rtt : this.#rtt * 0.75 + rtt * 0.25;
    p.resolve(rtt);
  }

  #onGoAway(code: number): void {
    if (code === GoAwayCode.normal) {
      this.#remoteGoAway = true;
      return;
    }
    const what = code === GoAwayCode.protocolError
      ? "protocol error"
      : code === GoAwayCode.internalError
      ? "internal error"
      : `unknown code ${code}`;
    throw new MuxError("remote-error", `peer went away: ${what}`);
  }

  #sendPing(): Promise<number> {
    const value = this.#pingSeq = (this.#pingSeq + 1) >>> 0;
    const sentAt = performance.now();
    const p = new Promise<number>((resolve, reject) => {
      this.#pings.set(value, { sentAt, resolve, reject });
    });
    this.#pingFrames++;
    this.#sendControl(FrameType.ping, Flag.syn, 0, value);
    return p;
  }

  #keepaliveTick(): void {
    if (this.#shut) return;
    const activity = this.#stats.framesIn + this.#enqueued - this.#pingFrames;
    if (activity === this.#activityAtTick) this.#releaseBuffers();
    this.#activityAtTick = activity;
    const now = performance.now();
    if (this.#keepaliveDeadline !== undefined) {
      if (now < this.#keepaliveDeadline) return;
      if (this.#stats.bytesIn !== this.#bytesInAtPing) {
        this.#keepaliveDeadline = undefined; // traffic since the ping proves liveness; ping again
      } else {
        this.#fail(
          "keepalive-timeout",
          new MuxError("keepalive-timeout", "no reply to keepalive"),
          undefined,
        );
        return;
      }
    }
    this.#keepaliveDeadline = now + this.#opts.keepaliveTimeoutMs;
    this.#bytesInAtPing = this.#stats.bytesIn;
    this.#sendPing().then(() => this.#keepaliveDeadline = undefined, () => {});
    // A check at the deadline itself, so detection does not wait for the next interval.
    const t = setTimeout(() => {
      this.#deadlineTimers.delete(t);
      if (this.#keepaliveDeadline !== undefined) this.#keepaliveTick();
    }, this.#opts.keepaliveTimeoutMs + 1);
    this.#deadlineTimers.add(t);
  }
  #deadlineTimers = new Set<ReturnType<typeof setTimeout>>();

  // --------------------------------------------------------- write side

  #sendControl(type: number, flags: number, id: number, length: number): void {
    this.enqueue(
      {
        type,
        flags,
        id,
        length,
        payload: null,
        framed: false,
        stream: null,
        encoded: false,
        done: null,
      },
      type !== FrameType.windowUpdate || flags === 0 || (flags & Flag.rst) !== 0,
    );
  }

  /**
   * The single writer: once the turn stops queueing frames, writes the batch (`#out`: the
   * small frames `encodeNow` put there) in one transport write, with the queued frames added in
   * their order (priority queue first, so window updates and pings overtake queued data): small
   * ones copied into the batch, large payloads written straight from the caller's buffer after
   * the batch before them. Each queued frame is reported written as soon as its bytes are with
   * the transport, each batch's ACKs and FINs likewise.
   */
  async #writeLoop(): Promise<void> {
    const written = this.#written; // encoded, not yet reported (emptied by #report)
    try {
      while (!this.#shut) {
        // Yield until this turn stops queueing frames (see writerQuietTicks), within bounds.
        let seen = this.#enqueued;
        for (let i = 0, quiet = 0; i < writerMaxYieldTicks && quiet < writerQuietTicks; i++) {
          await null;
          if (this.#enqueued !== seen) (seen = this.#enqueued, quiet = 0);
          else quiet++;
        }
        while (!this.#shut) {
          const q = this.#prio.length > 0 ? this.#prio : this.#ordered;
          // Looked at, not taken, until it is encoded: while a frame is queued, `encodeNow`
          // queues the frames after it instead of putting them in the batch ahead of it.
          const f = q.peek();
          if (f === undefined) break;
          const p = f.payload;
          const large = p !== null && p.length > coalesceCopyMaxBytes;
          const end = this.#outLen + (large && f.framed ? 0 : headerBytes) +
            (large || p === null ? 0 : p.length);
          if (end > this.#out.length && !this.#growOut(end)) {
            await this.#writeOut(); // a full batch: out first, then this frame again
            this.#report();
            continue;
          }
          q.shift();
          f.encoded = true;
          written.push(f);
          if (large && f.framed) {
            // Header in the room in front of the payload (see OutFrame.framed): one write,
            // after the batch before it.
            await this.#writeOut();
            const whole = new Uint8Array(
              p.buffer,
              p.byteOffset - headerBytes,
              p.length + headerBytes,
            );
            encodeHeader(whole, 0, f.type, f.flags, f.id, f.length);
            await this.#writeAll(whole);
            this.#report();
            continue;
          }
          const at = this.#outLen;
          encodeHeader(this.#out, at, f.type, f.flags, f.id, f.length);
          if (!large && p !== null) this.#out.set(p, at + headerBytes);
          this.#outLen = end;
          if (large) {
            await this.#writeOut(); // the header with the batch, then the payload
            await this.#writeAll(p);
            this.#report();
          }
        }
        if (this.#shut) break;
        // The queues are empty: every staged payload taken was copied into the batch.
        this.#stageOff = 0;
        if (this.#outLen > 0) {
          // Written here rather than through #writeOut: one async frame less per batch.
          const b = this.#takeBatch();
          const t0 = this.#drain !== null && b.length >= drainSampleMinBytes
            ? performance.now()
            : -1;
          const n = await this.#conn.write(b);
          if (n <= 0) throw new Deno.errors.WriteZero("transport write returned 0");
          this.#stats.bytesOut += n;
          if (n < b.length) await this.#writeAll(b.subarray(n), false);
          if (t0 >= 0) this.#drained(b.length, t0);
          this.#batchWritten();
        }
        this.#report();
        if (this.#prio.length === 0 && this.#ordered.length === 0 && this.#outLen === 0) break;
        // More arrived while we wrote: batch the rest of their turn too.
      }
    } catch (err) {
      const e = new MuxError("session-closed", `transport write failed: ${errorMessage(err)}`, {
        cause: err,
      });
      for (const f of written) f.done?.reject(e);
      written.length = 0;
      if (!this.#shut) this.#fail("conn-error", err instanceof Error ? err : e);
    } finally {
      this.#writing = false;
      this.#resumeReader();
      if (this.#shut) {
        // Encoded but not written: their writers must not wait for them.
        const e = new MuxError("session-closed", "session is closed");
        for (const f of written) f.done?.reject(e);
        written.length = 0;
        this.#rejectQueued();
      }
      for (const w of this.#writerIdle.splice(0)) w();
    }
  }

  /**
   * Make `#out` hold at least `end` bytes (keeping its frames); false past the largest size. A
   * batch not made yet (`noBytes`) takes the spare if there is one (a write finished since
   * `#takeBatch` found none), else starts at `minCoalesceBufferBytes`.
   */
  #growOut(end: number): boolean {
    if (end > maxCoalesceBufferBytes) return false;
    if (this.#out.length === 0 && this.#spare !== null) {
      this.#out = this.#spare;
      this.#spare = null;
      if (end <= this.#out.length) return true;
    }
    let size = Math.max(minCoalesceBufferBytes, this.#out.length * 2);
    while (size < end) size *= 2;
    const grown = new Uint8Array(Math.min(size, maxCoalesceBufferBytes));
    grown.set(this.#out.subarray(0, this.#outLen));
    this.#out = grown;
    return true;
  }

  /**
   * The session was quiet a whole keepalive interval (no frame in or out but pings): let go of
   * what bursts grew, so an idle session costs a small read buffer and at most one small batch
   * buffer (bench/mux_mem.ts: ~0.5 MiB per session after a burst of small frames before this).
   * The batch and its spare, the staging and view buffers are made again by the next frame
   * that needs them; the read loop takes `idleReadBufferBytes` after its next read (the pending
   * read holds the big one until then: the keepalive ping's reply comes within a round trip).
   * Nothing queued or in flight is touched: with the writer busy the write side is left as is.
   */
  #releaseBuffers(): void {
    if (!this.#writing && this.#flight === null && this.#outLen === 0) {
      this.#out = noBytes;
      this.#spare = null;
      if (this.#stageOff === 0) this.#stage = noBytes;
      this.#prio.release();
      this.#ordered.release();
    }
    // Views lent from the arena keep their own bytes alive; the next small view makes a new one.
    this.#viewArena = noBytes;
    this.#viewArenaOff = 0;
    if (this.#readBuf.length > idleReadBufferBytes) this.#shrinkRead = true;
  }

  /**
   * The batch's bytes, handed to the transport: `#out` starts the next batch in the spare
   * buffer (a write in flight still reads these bytes). `#batchWritten` once they are written.
   */
  #takeBatch(): Uint8Array {
    const b = this.#out.subarray(0, this.#outLen);
    this.#flight = this.#out;
    this.#flightFrames = this.#outFrames;
    this.#out = this.#spare ?? noBytes; // made by the next frame, if any comes before the spare
    this.#spare = null;
    this.#outLen = 0;
    this.#outFrames = 0;
    this.#batch++;
    const streams = this.#outStreams, flags = this.#outFlags;
    this.#outStreams = this.#flightStreams;
    this.#outFlags = this.#flightFlags;
    this.#flightStreams = streams;
    this.#flightFlags = flags;
    return b;
  }

  /** The batch `#takeBatch` handed out is written: its buffer is the spare, its streams told. */
  #batchWritten(): void {
    this.#spare = this.#flight;
    this.#flight = null;
    this.#stats.framesOut += this.#flightFrames;
    const streams = this.#flightStreams, flags = this.#flightFlags;
    for (let i = 0; i < streams.length; i++) streams[i]._batchWritten(flags[i]);
    streams.length = 0;
    flags.length = 0;
  }

  /** Write the batch now (before a large payload, or when it is full). */
  async #writeOut(): Promise<void> {
    if (this.#outLen === 0) return;
    await this.#writeAll(this.#takeBatch());
    this.#batchWritten();
  }

  /** The queued frames encoded so far are with the transport: tell their streams and waiters. */
  #report(): void {
    const written = this.#written;
    this.#stats.framesOut += written.length;
    for (let i = 0; i < written.length; i++) {
      const f = written[i];
      f.stream?._flushed(f);
      f.done?.resolve();
    }
    written.length = 0;
    if (this.#controlDrained && this.#prio.length <= maxQueuedControlFrames) {
      this.#resumeReader();
    }
  }

  /** Let the read loop go on if it waits for our answers to be written (see #controlDrained). */
  #resumeReader(): void {
    const r = this.#controlDrained;
    this.#controlDrained = null;
    r?.();
  }

  /**
   * Write all of `p` (counted in `bytesOut`); a large `p` is timed for the drain rate unless
   * `timed` is false (the caller times it).
   */
  async #writeAll(p: Uint8Array, timed = true): Promise<void> {
    const t0 = timed && this.#drain !== null && p.length >= drainSampleMinBytes
      ? performance.now()
      : -1;
    let off = 0;
    while (off < p.length) {
      const n = await this.#conn.write(off === 0 ? p : p.subarray(off));
      if (n <= 0) throw new Deno.errors.WriteZero("transport write returned 0");
      off += n;
    }
    this.#stats.bytesOut += p.length;
    if (t0 >= 0) this.#drained(p.length, t0);
  }

  /**
   * A large write of `bytes` started at `t0` is done: once a window of them shows the
   * transport drains slowly, TCP_NOTSENT_LOWAT goes to `#lowatBytes` (the kernel then holds
   * little unsent data ahead of another stream's frame); once it drains fast, up to
   * `fastNotSentLowatBytes` (on a fast transport the send buffer leaves within a few ms, and a
   * small option costs the sender about a third more CPU per GiB: bench/RESULTS.md mlow). Where
   * the option cannot be changed any more, the watch stops with it as it is.
   */
  #drained(bytes: number, t0: number): void {
    const d = this.#drain!;
    if (!d.sample(bytes, performance.now() - t0) || this.#shut) return;
    const lowat = d.slow === false
      ? Math.max(this.#lowatBytes, fastNotSentLowatBytes)
      : this.#lowatBytes;
    if (lowat !== this.#lowatNow) {
      if (setNotSentLowat(this.#conn, lowat) !== "set") {
        this.#drain = null; // left as it is, and so are the frames
        return;
      }
      this.#lowatNow = lowat;
    }
    this.#sizeFrames(d.slow ? slowSendFrameBytes : fastSendFrameBytes);
  }

  /**
   * Frames of at most `bytes` (and the session's `maxFrameBytes`) from now on, and as much
   * queued per stream.
   */
  #sizeFrames(bytes: number): void {
    this.maxSendFrameBytes = Math.max(1, Math.min(bytes, this.#opts.maxFrameBytes));
    this.streamQueueBytes = bytes;
  }

  #rejectQueued(): void {
    // The batch not yet handed to the transport goes too (its frames have no waiters).
    this.#outLen = 0;
    this.#outFrames = 0;
    this.#outStreams.length = 0;
    this.#outFlags.length = 0;
    this.#batch++;
    const e = new MuxError("session-closed", "session is closed");
    for (const f of this.#prio.drain()) f.done?.reject(e);
    for (const f of this.#ordered.drain()) f.done?.reject(e);
  }

  /** Resolves when the writer has nothing left (or `ms` passed). */
  #flushed(ms: number): Promise<void> {
    if (!this.#writing) return Promise.resolve();
    let timer: ReturnType<typeof setTimeout> | undefined;
    return new Promise<void>((resolve) => {
      this.#writerIdle.push(resolve);
      timer = setTimeout(resolve, ms);
    }).finally(() => clearTimeout(timer));
  }

  // ----------------------------------------------------------- shutdown

  /** End with an error: go away with `code` (if given), flush briefly, shut down. */
  #fail(reason: SessionEndReason, error?: Error, code?: number): Promise<void> {
    if (this.#shut) return Promise.resolve();
    this.#failing ??= (async () => {
      if (code !== undefined) {
        this.#rejectQueued(); // nothing queued matters any more except the go away
        this.#sendControl(FrameType.goAway, 0, 0, code);
        this.#localGoAway = true;
        await this.#flushed(goAwayFlushMs);
      }
      await this.#shutdown(reason, error);
    })();
    return this.#failing;
  }
  #failing: Promise<void> | null = null;

  async #shutdown(reason: SessionEndReason, error?: Error): Promise<void> {
    if (this.#shut) return;
    if (reason === "local-close") {
      // The go away and the last FINs and RSTs leave before the session is shut: the writer
      // stops at #shut and drops what is still queued (with no stream open, close() got here
      // before the writer had run once, and the peer saw only EOF). Bounded: a peer that does
      // not read cannot hold close() up.
      await this.#flushed(goAwayFlushMs);
      if (this.#shut) return; // ended another way meanwhile (the peer closed, an error)
    }
    this.#shut = true;
    sessionEnded(this);
    this.#log.debug("mux session end", { end: reason, error });
    clearInterval(this.#keepaliveTimer);
    for (const t of this.#deadlineTimers) clearTimeout(t);
    this.#deadlineTimers.clear();
    this.#releaseWheel?.();
    this.#releaseWheel = null;
    closeQuietly(this.#conn);
    const err = new MuxError("session-closed", `session ended: ${reason}`, { cause: error });
    for (const s of [...this.#streams]) s._abort(err);
    this.#streams.clear();
    this.#backlog = [];
    this.#handOff = null;
    for (const w of this.#acceptWaiters.splice(0)) w(null);
    for (const p of this.#pings.values()) p.reject(err);
    this.#pings.clear();
    this.#rejectQueued();
    this.#drainWaiter?.();
    // A transport whose close() does not end a pending read must not hold `closed` forever.
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.#readDone.catch(() => {
        // The read loop's own failure was recorded as the close reason already.
      }),
      new Promise<void>((r) => timer = setTimeout(r, goAwayFlushMs)),
    ]);
    clearTimeout(timer);
    await this.#flushed(goAwayFlushMs);
    this.#closedResolve(error ? { reason, error } : { reason });
  }
}
