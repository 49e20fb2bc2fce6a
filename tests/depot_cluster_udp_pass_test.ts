/**
 * The holder's side of a handed-over UDP association (lib/depot/udp.ts passAssociation, issue
 * 19), in process: instance A's link stream and the exit's tunnel are real loopback TCP
 * connections, or an exit whose writes wait until the test lets them through (a slow exit).
 * - A frame from A that is not a SOCKS5 UDP datagram of fragment 0 (unknown address type, a
 *   header cut short, an empty frame, an empty domain, a fragment) or a frame cut by A's close
 *   ends that association (ended by "instance", end=error with the decoder's reason, both
 *   streams closed; lib/cluster logs "cluster connection closed end=error endedBy=instance
 *   error=…" at warn); the datagrams before it reached the exit, and another association keeps
 *   passing datagrams both ways.
 * - A slow exit: B queues at most its queued-byte bound toward it, the rest of A's datagrams
 *   are dropped and counted ("queue-full", not in the tally), and so is an answer meanwhile
 *   (the bound is the association's, both ways); the queued ones arrive whole and in order
 *   once the exit reads, and the bound frees up for both ways.
 */

import { assert, assertEquals } from "./_assert.ts";
import { closeQuietly, type Duplex, type HostPort, writeAll } from "../lib/net/mod.ts";
import { encodeSocks5Udp } from "../lib/socks5/mod.ts";
import {
  DatagramStream,
  encodeDatagramFrame,
  type Flow,
  FlowTable,
  UdpDrops,
  UdpTally,
} from "../lib/udp/mod.ts";
import { type HandedAssociationEnd, passAssociation } from "../lib/depot/mod.ts";
import { logHandedAssociationEnd } from "../lib/cluster/mod.ts";
import { Logger, type LogLevel } from "../lib/log.ts";
import { tcpPair } from "./_depot.ts";
import { nextWithin, until, within } from "./_util.ts";

const dns: HostPort = { host: "192.0.2.53", port: 53 };

/** A SOCKS5 UDP datagram to (or from) `dns` whose payload tells `i` apart. */
function datagram(i: number, payloadBytes = 100): Uint8Array {
  return encodeSocks5Udp(
    dns,
    Uint8Array.from({ length: payloadBytes }, (_, j) => (i * 7 + j) & 0xff),
  );
}

/** A datagram table and tally for one association (no idle timer: the test ends it). */
function bounds(maxQueuedBytes?: number) {
  const table = new FlowTable<Flow>({ idleTimeoutMs: 0, maxQueuedBytes }, new UdpDrops());
  return { table, tally: new UdpTally("depot-cluster") };
}

/** One handed-over association between A's end of a link and the exit's end of a tunnel. */
async function handOver(exit?: Duplex, maxQueuedBytes?: number) {
  const [a, link] = await tcpPair();
  let exitEnd: Deno.TcpConn | undefined;
  let tunnel = exit;
  if (!tunnel) [tunnel, exitEnd] = await tcpPair();
  const { table, tally } = bounds(maxQueuedBytes);
  const stop = new AbortController();
  const done: Promise<HandedAssociationEnd> = passAssociation(
    link,
    tunnel,
    table,
    tally,
    stop.signal,
  );
  const own = bounds();
  return {
    a,
    exitEnd,
    table,
    tally,
    done,
    stop,
    /** A's side of the framed datagrams. */
    aFrames: new DatagramStream(a, own.table),
    /** The exit's side (a TCP tunnel only). */
    exitFrames: exitEnd ? new DatagramStream(exitEnd, own.table) : undefined,
    close: async () => {
      stop.abort();
      await done;
      closeQuietly(a);
      if (exitEnd) closeQuietly(exitEnd);
      own.table.close();
    },
  };
}

/** The closing lines lib/cluster writes for `end` of association `x`, with their levels. */
function closingLines(
  end: HandedAssociationEnd,
  x: { tally: UdpTally; table: FlowTable<Flow> },
): { level: LogLevel; text: string }[] {
  const lines: { level: LogLevel; text: string }[] = [];
  const log = new Logger("debug", {}, (text, level) => lines.push({ level, text }));
  logHandedAssociationEnd(log, end, x.tally, x.table.drops);
  return lines;
}

/** Frames from A that are not SOCKS5 UDP datagrams of fragment 0, with the reason expected. */
const malformed: [string, Uint8Array, RegExp][] = [
  [
    "unknown address type",
    encodeDatagramFrame(Uint8Array.of(0, 0, 0, 9, 1, 2, 3, 4, 0, 53, 7)),
    /address type/,
  ],
  ["header cut short", encodeDatagramFrame(Uint8Array.of(0, 0, 0, 1, 127)), /truncated/],
  ["empty frame", encodeDatagramFrame(new Uint8Array(0)), /truncated/],
  ["empty domain", encodeDatagramFrame(Uint8Array.of(0, 0, 0, 3, 0, 0, 53, 1)), /empty domain/],
  [
    "fragment",
    encodeDatagramFrame(Uint8Array.from(datagram(1), (b, i) => i === 2 ? 1 : b)),
    /fragment/,
  ],
];

for (const [name, frame, reason] of malformed) {
  Deno.test(`depot cluster udp pass: a frame from A with ${name} ends that association only`, async () => {
    const x = await handOver();
    const y = await handOver();
    try {
      // A good datagram first: it reaches the exit as it came.
      await writeAll(x.a, encodeDatagramFrame(datagram(1)));
      assertEquals(await nextWithin(x.exitFrames!, "datagram 1 at the exit"), datagram(1));
      await writeAll(x.a, frame);
      const end = await within(x.done, `${name}: the association ends`);
      assertEquals(end.by, "instance");
      assertEquals(end.end, "error");
      assert(reason.test(end.message ?? ""), end.message);
      // The holder's closing line says so at warn, with the reason.
      const [line] = closingLines(end, x);
      assertEquals(line.level, "warn");
      assert(reason.test(line.text) && / error="?[^ ]/.test(line.text), line.text);
      // Both of the holder's streams are closed: the exit and A see the end, nothing more.
      assertEquals(await nextWithin(x.exitFrames!, "the exit's end"), null);
      assertEquals(await nextWithin(x.aFrames, "A's end"), null);
      assertEquals([x.tally.datagramsUp, x.table.drops.total], [1, 0]);
      // The other association still passes datagrams both ways.
      await writeAll(y.a, encodeDatagramFrame(datagram(2)));
      assertEquals(await nextWithin(y.exitFrames!, "datagram 2 at the exit"), datagram(2));
      await writeAll(y.exitEnd!, encodeDatagramFrame(datagram(3)));
      assertEquals(await nextWithin(y.aFrames, "datagram 3 at A"), datagram(3));
      assertEquals([y.tally.datagramsUp, y.tally.datagramsDown], [1, 1]);
    } finally {
      await x.close();
      await y.close();
    }
  });
}

Deno.test("depot cluster udp pass: a frame cut short by A's close ends the association (eof)", async () => {
  const x = await handOver();
  try {
    // The length says 1,000 bytes; 10 come, then A goes.
    await writeAll(x.a, Uint8Array.of(0x03, 0xe8, ...datagram(4).subarray(0, 10)));
    x.a.close();
    const end = await within(x.done, "the association ends");
    assertEquals([end.by, end.end], ["instance", "error"]);
    assert(/eof|ended|closed/i.test(end.message ?? ""), end.message);
    assertEquals(closingLines(end, x)[0].level, "warn");
    assertEquals(await nextWithin(x.exitFrames!, "the exit's end"), null);
    assertEquals(x.tally.datagramsUp, 0);
  } finally {
    await x.close();
  }
});

/** An exit whose writes wait until `open()`; what it answers is pushed with `answer()`. */
class SlowExit implements Duplex {
  written: Uint8Array[] = [];
  #gate = Promise.withResolvers<void>();
  #closed = Promise.withResolvers<null>();
  #answers: Uint8Array[] = [];
  #wake: (() => void) | undefined;
  #isClosed = false;

  open(): void {
    this.#gate.resolve();
  }
  answer(bytes: Uint8Array): void {
    this.#answers.push(bytes);
    this.#wake?.();
  }
  /** Everything written so far, concatenated. */
  output(): Uint8Array {
    const out = new Uint8Array(this.written.reduce((s, p) => s + p.length, 0));
    let o = 0;
    for (const p of this.written) (out.set(p, o), o += p.length);
    return out;
  }

  async read(p: Uint8Array): Promise<number | null> {
    while (this.#answers.length === 0) {
      if (this.#isClosed) return null;
      const woken = new Promise<void>((r) => this.#wake = r);
      await Promise.race([woken, this.#closed.promise]);
    }
    const next = this.#answers.shift()!;
    const n = Math.min(p.length, next.length);
    p.set(next.subarray(0, n));
    if (n < next.length) this.#answers.unshift(next.subarray(n));
    return n;
  }
  async write(p: Uint8Array): Promise<number> {
    const copy = p.slice();
    await Promise.race([this.#gate.promise, this.#closed.promise]);
    if (this.#isClosed) throw new Deno.errors.BrokenPipe("slow exit closed");
    this.written.push(copy);
    return p.length;
  }
  closeWrite(): Promise<void> {
    return Promise.resolve();
  }
  close(): void {
    this.#isClosed = true;
    this.#closed.resolve(null);
  }
}

Deno.test("depot cluster udp pass: toward a slow exit, B queues at most its bound, drops and counts the rest, then passes the queued ones in order", async () => {
  const exit = new SlowExit();
  const x = await handOver(exit, 16 * 1_112);
  try {
    // 200 datagrams of 1,112 bytes framed (a 10-byte SOCKS5 header, 1,100 of payload, the
    // 2-byte length); the bound holds 16 of them.
    const frames = Array.from({ length: 200 }, (_, i) => encodeDatagramFrame(datagram(i, 1_100)));
    assertEquals(frames[0].length, 1_112);
    const bound = x.table.maxQueuedBytes;
    let most = 0;
    const watch = setInterval(() => most = Math.max(most, x.table.queuedBytes), 1);
    try {
      for (const f of frames) await writeAll(x.a, f);
      const drops = () => x.table.drops.count("queue-full");
      await until(
        "every frame taken or dropped",
        () => x.tally.datagramsUp + drops() === frames.length,
      );
    } finally {
      clearInterval(watch);
    }
    assertEquals(x.tally.datagramsUp, 16);
    assertEquals(x.table.drops.count("queue-full"), 184);
    assertEquals(x.table.drops.total, 184);
    assertEquals(x.table.queuedBytes, 16 * 1_112);
    assert(most <= bound, `${most} bytes queued over the bound ${bound}`);
    assertEquals(exit.written.length, 0);
    // The bound is the association's, both ways: an answer while it is full is dropped too.
    exit.answer(encodeDatagramFrame(datagram(500)));
    await until("the answer dropped", () => x.table.drops.count("queue-full") === 185);
    assertEquals(x.tally.datagramsDown, 0);
    // The exit reads again: the first 16 arrive whole and in order, and the bound is free.
    exit.open();
    await until("the queue drains", () => x.table.queuedBytes === 0);
    const first16 = new Uint8Array(16 * 1_112);
    frames.slice(0, 16).forEach((f, i) => first16.set(f, i * 1_112));
    assertEquals(exit.output(), first16);
    await writeAll(x.a, frames[199]);
    await until("a datagram after the drain", () => x.tally.datagramsUp === 17);
    assertEquals(exit.output().subarray(16 * 1_112), frames[199]);
    exit.answer(encodeDatagramFrame(datagram(501)));
    assertEquals(await nextWithin(x.aFrames, "the answer at A"), datagram(501));
    assertEquals([x.tally.datagramsDown, x.table.drops.total], [1, 185]);
    // A leaves: the association ends at a frame boundary, ended by the instance.
    x.a.close();
    const end = await within(x.done, "the association ends");
    assertEquals([end.by, end.end], ["instance", "done"]);
    // A normal end is an info line, with the drops counted.
    const [line] = closingLines(end, x);
    assertEquals(line.level, "info");
    assert(/ end=done .* drops=185 /.test(line.text), line.text);
  } finally {
    await x.close();
  }
});
