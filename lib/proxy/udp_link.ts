/**
 * UDP over a seaprox link: one link stream per association (a SOCKS5 UDP ASSOCIATE, or one
 * peer of a `udp://` forward), its datagrams framed on the stream, leaving at the far node
 * through that node's own way out (direct, with its ACL and flow bounds, or its own chain).
 *
 * | when            | direction | bytes                                                        |
 * | --------------- | --------- | ------------------------------------------------------------ |
 * | request         | A -> B     | u8 2 (UDP) · u32 association id (0 on the TCP link)          |
 * | reply           | B -> A     | u8 result (link.ts's table); 9 = B carries no UDP, then u8 length · why |
 * | then, each way  | both      | lib/udp `DatagramStream` frames: u16 length · SOCKS5 UDP header (FRAG 0, address) · payload |
 *
 * The address is the destination going out and the answering source coming back. A frame's
 * length covers header and payload, so a datagram whose frame passes 65,535 bytes is dropped
 * as "too-big". A far node too old to know the request answers 8
 * ("other"): both map to {@linkcode UdpUnsupportedError}, SOCKS5 reply 0x07.
 * @module
 */

import type { Logger } from "../log.ts";
import {
  type BufferedReader,
  closeQuietly,
  type Duplex,
  errorMessage,
  type HostPort,
  NetError,
  netFailureReasons,
  writeAll,
  writeQuietly,
} from "../net/mod.ts";
import { decodeSocks5Udp, encodeSocks5Udp } from "../socks5/mod.ts";
import {
  DatagramStream,
  type Flow,
  FlowTable,
  type UdpChannel,
  type UdpChannelOpener,
  UdpDrops,
  udpListenerOf,
  UdpTally,
} from "../udp/mod.ts";

/** First byte of a link stream request that asks for a UDP association. */
export const linkUdpRequest = 2;
/** Result code: the far node carries no UDP (a reason follows). */
export const linkUdpUnsupported = 9;

/**
 * UDP cannot be carried this way: a hop of the chain (HTTP CONNECT, a SOCKS5 server without
 * UDP ASSOCIATE, a far node without UDP) cannot take datagrams. The message names the hop;
 * SOCKS5 clients get reply 0x07 (command not supported).
 */
export class UdpUnsupportedError extends NetError {
  override name = "UdpUnsupportedError";
  constructor(message: string, options?: ErrorOptions) {
    super("other", message, options);
  }
}

/** The request of a UDP association on a link stream. */
export function encodeLinkUdpRequest(associationId: number): Uint8Array {
  const out = new Uint8Array(5);
  out[0] = linkUdpRequest;
  new DataView(out.buffer).setUint32(1, associationId);
  return out;
}

/**
 * Read the far node's answer to a UDP request: resolves when it accepted; rejects with
 * {@linkcode UdpUnsupportedError} (it carries no UDP, or does not know the request) or a
 * `NetError` with its reason. `what` names the hop in messages.
 */
export async function readLinkUdpResult(r: BufferedReader, what: string): Promise<void> {
  let code: number;
  let why = "";
  try {
    code = await r.readByte();
    if (code === linkUdpUnsupported) {
      why = new TextDecoder().decode(await r.readExact(await r.readByte()));
    }
  } catch (err) {
    throw new NetError("other", `${what}: stream ended before the UDP result`, { cause: err });
  }
  if (code === 0) return;
  if (code === linkUdpUnsupported) {
    throw new UdpUnsupportedError(`${what}: far node carries no UDP: ${why}`);
  }
  const reason = netFailureReasons[code - 1] ?? "other";
  if (reason === "other") {
    throw new UdpUnsupportedError(`${what}: far node refused UDP (a seaprox without UDP links?)`);
  }
  throw new NetError(reason, `${what}: far node: ${reason} opening UDP`);
}

/** The reply a far node sends for a UDP request it cannot serve. */
function unsupportedReply(why: string): Uint8Array {
  const text = new TextEncoder().encode(why).subarray(0, 255);
  return Uint8Array.of(linkUdpUnsupported, text.length, ...text);
}

/** How long a closed association's stream waits for the far end's FIN before it is cut. */
export const streamUdpLingerMs = 5_000;

/**
 * A {@linkcode UdpChannel} over a byte stream (a link stream): datagrams out as lib/udp
 * `DatagramStream` frames holding a SOCKS5 UDP datagram (its address: the destination going
 * out, the source coming back), frames in as answers. Writes queue within the table's
 * queued-byte bound (beyond it a datagram is dropped, "queue-full"). Ends when the stream
 * ends, fails or carries a malformed frame.
 *
 * `close()` ends the stream the same way at both ends, so a normal end never looks like a
 * failure at the other one: its FIN once the queued frames are written, then what the other
 * end still sends is read and dropped until its FIN. An end that sends none within
 * {@linkcode streamUdpLingerMs} is cut; `cut()` (an evicted flow) ends it at once.
 */
export class StreamUdpChannel implements UdpChannel {
  onDatagram: UdpChannel["onDatagram"] = () => {};
  readonly ended: Promise<string>;
  readonly #stream: Duplex;
  readonly #frames: DatagramStream;
  readonly #flows: FlowTable<Flow>;
  readonly #counted: (bytes: number) => void;
  readonly #cut: () => void;
  #closed = false;
  /** The read loop is over (the other end's FIN, or a failure). */
  #readDone = false;
  #linger: ReturnType<typeof setTimeout> | undefined;
  #end!: (why: string) => void;

  /**
   * Serve `stream` (its bytes after the UDP result) within `flows`' bounds; `counted` counts
   * the payload of each datagram sent on (a `UdpTally`'s up, or down on the far node).
   * `cut` ends the stream when the other end sends no FIN after `close()` (default
   * `stream.close()`; a mux stream's `reset` frees it at once).
   */
  constructor(
    stream: Duplex,
    flows: FlowTable<Flow>,
    counted: (bytes: number) => void,
    cut: () => void = () => stream.close(),
  ) {
    this.#stream = stream;
    this.#frames = new DatagramStream(stream, flows);
    this.#flows = flows;
    this.#counted = counted;
    this.#cut = cut;
    this.ended = new Promise((resolve) => this.#end = resolve);
    void this.#readLoop(); // never rejects: its end settles `ended`
  }

  send(dest: HostPort, data: Uint8Array): boolean {
    if (this.#closed) return false;
    let packet: Uint8Array;
    try {
      packet = encodeSocks5Udp(dest, data);
    } catch (err) {
      this.#flows.drops.drop("malformed", errorMessage(err));
      return false;
    }
    if (!this.#frames.send(packet)) return false;
    this.#counted(data.length);
    return true;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#end("closed");
    if (this.#readDone) {
      closeQuietly(this.#stream);
      return;
    }
    this.#linger = setTimeout(() => this.#cut(), streamUdpLingerMs);
    this.#frames.flushed().then(() => this.#stream.closeWrite()).catch(() => {
      // The stream failed under the FIN: the read loop ends with it.
    });
  }

  /** End at once (an evicted flow's carrier): the other end sees a reset. */
  cut(): void {
    if (!this.#closed) {
      this.#closed = true;
      this.#end("closed");
    }
    clearTimeout(this.#linger);
    this.#cut();
  }

  /**
   * One answer to `onDatagram`: a throw of it (a bug) loses that datagram only, an "internal"
   * drop, logged; the association goes on.
   */
  #deliver(from: HostPort, data: Uint8Array): void {
    try {
      this.onDatagram(from, data);
    } catch (err) {
      this.#flows.drops.failed(from, err);
    }
  }

  async #readLoop(): Promise<void> {
    let why = "far end closed the stream";
    try {
      for (let frame; (frame = await this.#frames.read()) !== null;) {
        // After close(): answers that were on their way, read only to reach the FIN.
        if (this.#closed) continue;
        const d = decodeSocks5Udp(frame);
        // Our peers send whole datagrams only (FRAG 0): a fragment is dropped, not reassembled.
        if (d.frag !== 0) this.#flows.drops.drop("fragmented", "on a link stream");
        else this.#deliver(d.dest, d.data);
      }
    } catch (err) {
      why = `stream failed: ${errorMessage(err)}`;
    }
    this.#readDone = true;
    if (this.#closed) {
      // Our end's drain is over: both FINs are through (or the stream failed).
      clearTimeout(this.#linger);
      closeQuietly(this.#stream);
      return;
    }
    this.#end(why);
    this.close();
  }
}

/**
 * Join a carried association (`near`: datagrams from the near node, answers back to it) to
 * the way out (`far`) until either ends, `stop` fires or nothing moved for `idleTimeoutMs`;
 * then both are closed. Resolves with how it ended.
 */
export async function spliceUdp(
  near: UdpChannel,
  far: UdpChannel,
  stop: AbortSignal,
  idleTimeoutMs: number,
): Promise<string> {
  let lastMs = performance.now();
  // Locals first: a function literal assigned to a property is made in V8's old generation
  // and keeps the association through scavenges (tests/source_closure_test.ts).
  const outward: UdpChannel["onDatagram"] = (dest, data) => {
    lastMs = performance.now();
    far.send(dest, data);
  };
  const back: UdpChannel["onDatagram"] = (from, data) => {
    lastMs = performance.now();
    near.send(from, data);
  };
  near.onDatagram = outward;
  far.onDatagram = back;
  let timer: ReturnType<typeof setInterval> | undefined;
  let onStop = () => {};
  try {
    return await Promise.race([
      near.ended.then((why) => `near side: ${why}`),
      far.ended.then((why) => `way out: ${why}`),
      new Promise<string>((resolve) => {
        onStop = () => resolve("stopped");
        if (stop.aborted) onStop();
        stop.addEventListener("abort", onStop, { once: true });
      }),
      new Promise<string>((resolve) => {
        if (idleTimeoutMs <= 0) return;
        timer = setInterval(() => {
          if (performance.now() - lastMs >= idleTimeoutMs) resolve("idle");
        }, Math.min(5_000, Math.max(100, idleTimeoutMs / 4)));
      }),
    ]);
  } finally {
    clearInterval(timer);
    stop.removeEventListener("abort", onStop);
    near.close();
    far.close();
  }
}

/** What the far node needs to serve UDP requests. */
export interface ServeLinkUdpOptions {
  /** How this node's datagrams leave (direct with its ACL, or its own chain); none: refused. */
  udp?: UdpChannelOpener;
  /** Why UDP is refused when `udp` is unset (names the hop that cannot carry it). */
  udpRefusal?: string;
  /** Close an association after this long without a datagram; 0 = never. @default 300000 */
  idleTimeoutMs?: number;
}

/**
 * How an accepted association's datagrams travel between the nodes (QUIC: its datagrams,
 * tagged with the association id); by default, frames on the stream itself.
 */
export type LinkUdpNear = (
  associationId: number,
  stream: Duplex,
  flows: FlowTable<Flow>,
  counted: (bytes: number) => void,
) => UdpChannel;

/**
 * Serve one UDP request on a link stream (the request already read; `s` carries what
 * follows): open this node's way out, answer the result, carry datagrams until the stream
 * or the way out ends. One log line per association; counted as
 * `warren_udp_*{relay="seaprox-link"}` (up: sent toward destinations).
 */
export async function serveLinkUdp(
  s: Duplex,
  associationId: number,
  opts: ServeLinkUdpOptions,
  stop: AbortSignal,
  log: Logger,
  near: LinkUdpNear = (_id, stream, flows, counted) => new StreamUdpChannel(stream, flows, counted),
): Promise<void> {
  if (!opts.udp) {
    const why = opts.udpRefusal ?? "UDP is off on this node";
    log.info("link: udp association refused", { failure: "udp-unsupported", why });
    await writeQuietly(s, unsupportedReply(why));
    s.close();
    return;
  }
  const drops = new UdpDrops(log, "seaprox-link", udpListenerOf(log));
  const flows = new FlowTable<Flow>({ idleTimeoutMs: opts.idleTimeoutMs }, drops);
  const tally = new UdpTally("seaprox-link", undefined, drops.listener);
  let far: UdpChannel;
  try {
    far = await opts.udp({ flows, tally, signal: stop });
  } catch (err) {
    flows.close();
    const reply = err instanceof UdpUnsupportedError
      ? unsupportedReply(err.message)
      : Uint8Array.of(
        1 + netFailureReasons.indexOf(err instanceof NetError ? err.reason : "other"),
      );
    log.info("link: udp association refused", { error: errorMessage(err) });
    await writeQuietly(s, reply);
    s.close();
    return;
  }
  try {
    await writeAll(s, Uint8Array.of(0));
  } catch {
    // The stream died while the way out opened: nothing to carry.
    far.close();
    flows.close();
    closeQuietly(s);
    return;
  }
  const t0 = performance.now();
  const nearSide = near(associationId, s, flows, (bytes) => tally.down(bytes));
  const end = await spliceUdp(nearSide, far, stop, opts.idleTimeoutMs ?? 300_000);
  flows.close();
  log.info("udp association closed", {
    end,
    up: tally.datagramsUp,
    down: tally.datagramsDown,
    ms: Math.round(performance.now() - t0),
    ...(drops.total > 0 ? { dropped: JSON.stringify(drops.snapshot()) } : {}),
    peak: flows.peak,
    evicted: flows.evicted,
    ...nearSide.counts?.(),
  });
}
