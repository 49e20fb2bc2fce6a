/**
 * Framed writes (`Stream.writeFramed`, used by `relay()`): the header goes into the room in
 * front of the payload and each data frame is one transport write; split frames (window or
 * frame size smaller than the write) put their headers into payload already sent. Lent reads
 * (`Stream.readView`, also used by `relay()`): the received bytes in order, kept intact until
 * released. And a bulk stream leaves room for small exchanges on the same session.
 */

import { assert, assertEquals } from "./_assert.ts";
import { muxPair, tcpPair } from "./_mux.ts";
import { createHash } from "node:crypto";
import {
  acceptWithin,
  blockStream,
  blockStreamSha256,
  drainHash,
  readWithin,
  sendBlocks,
  sha256,
  until,
  within,
} from "./_util.ts";
import { Session, type SessionOptions, type Stream } from "../lib/mux/mod.ts";
import { type Duplex, framedWriter, relay, viewReader, withPrefix } from "../lib/net/mod.ts";

const MiB = 1 << 20;

/** A transport that records the length of every write asked of it, and the bytes written. */
class CountingConn implements Duplex {
  asked: number[] = [];
  written = 0;
  constructor(readonly inner: Deno.TcpConn) {}
  read(p: Uint8Array): Promise<number | null> {
    return this.inner.read(p);
  }
  async write(p: Uint8Array): Promise<number> {
    this.asked.push(p.length);
    const n = await this.inner.write(p);
    this.written += n;
    return n;
  }
  closeWrite(): Promise<void> {
    return this.inner.closeWrite();
  }
  close(): void {
    this.inner.close();
  }
}

/** A client session over a counting transport and its server. */
async function countedPair(opts: SessionOptions = {}) {
  const [a, b] = await tcpPair();
  const conn = new CountingConn(a);
  const base = { keepaliveIntervalMs: 0, drainTimeoutMs: 3000, ...opts };
  const client = Session.client(conn, base);
  const server = Session.server(b, base);
  return {
    conn,
    client,
    server,
    close: () => Promise.all([client.close(), server.close()]),
  };
}

/** `payload` behind `headroom` bytes of junk, as relay() hands it over. */
function withRoom(payload: Uint8Array, headroom: number): Uint8Array {
  const b = new Uint8Array(headroom + payload.length).fill(0xee, 0, headroom);
  b.set(payload, headroom);
  return b;
}

Deno.test("mux framed write: a stream offers headroom, a TCP conn does not", async () => {
  const p = await muxPair();
  try {
    const s = await p.client.open();
    assertEquals(framedWriter(s)?.headroomBytes, 12);
    const [a, b] = await tcpPair();
    assertEquals(framedWriter(a), null);
    a.close();
    b.close();
    s.close();
  } finally {
    await p.close();
  }
});

Deno.test("mux framed write: header and payload leave in one write, split frames intact", async () => {
  // 100,000-byte frames (and the 256 KiB initial window): a 1 MiB write is a dozen frames,
  // most with their header written over the tail of the payload before them.
  const p = await countedPair({ maxFrameBytes: 100_000 });
  try {
    const s = await p.client.open();
    const t = await acceptWithin(p.server, "the stream the peer opened");
    const payload = crypto.getRandomValues(new Uint8Array(65536));
    const big = new Uint8Array(MiB);
    for (let o = 0; o < big.length; o += payload.length) big.set(payload, o);
    const expected = big.slice();
    const reading = drainHash(t);
    reading.catch(() => {});
    p.conn.asked = [];
    p.conn.written = 0;
    const framesBefore = p.client.stats.framesOut;
    assertEquals(await s.writeFramed(withRoom(big, 12)), MiB);
    const frames = p.client.stats.framesOut - framesBefore;
    assert(frames >= Math.ceil(MiB / 100_000), `${frames} frames`);
    // Every frame went out with its header in one write: no header written on its own.
    assertEquals(p.conn.asked.filter((n) => n === 12).length, 0);
    assertEquals(p.conn.written, MiB + 12 * frames);
    // A small framed write takes the copying path and still arrives.
    await s.writeFramed(withRoom(new TextEncoder().encode("tail"), 12));
    await s.closeWrite();
    const got = await reading;
    const tail = new TextEncoder().encode("tail");
    const whole = new Uint8Array(MiB + tail.length);
    whole.set(expected);
    whole.set(tail, MiB);
    assertEquals(got.bytes, whole.length);
    assertEquals(got.sha256, sha256(whole));
    s.close();
    t.close();
  } finally {
    await p.close();
  }
});

Deno.test("mux framed write: relay() over streams, both ways, frames split by window and size", async () => {
  // Windows that never grow past 256 KiB and odd frame sizes: the relay's reads (up to 4 MiB)
  // are split into many frames, most with their header over payload already sent.
  const p = await muxPair({ maxWindowBytes: 256 * 1024, maxFrameBytes: 77_777 });
  const [user, front] = await tcpPair();
  try {
    const s = await p.client.open();
    const t = await acceptWithin(p.server, "the stream the peer opened");
    const relaying = relay(front, s);
    const total = 48 * MiB;
    const [down, up] = await Promise.all([
      drainHash(user),
      drainHash(t),
      sendBlocks(t, total, 7).then(() => t.closeWrite()),
      sendBlocks(user, total, 8).then(() => user.closeWrite()),
    ]);
    assertEquals(down.sha256, blockStreamSha256(total, 7));
    assertEquals(up.sha256, blockStreamSha256(total, 8));
    const r = await relaying;
    assertEquals([r.end, r.aToB, r.bToA], ["done", total, total]);
    t.close();
  } finally {
    user.close();
    await p.close();
  }
});

Deno.test("mux fairness: small exchanges complete while a bulk stream keeps the session busy", async () => {
  const p = await muxPair();
  try {
    // Bulk: the client writes until told to stop; the server reads it all as fast as it can.
    const bulk = await p.client.open();
    const bulkIn = await acceptWithin(p.server, "the stream the peer opened");
    let stop = false;
    let received = 0;
    const block = new Uint8Array(4 * MiB);
    const sending = (async () => {
      while (!stop) await bulk.write(block);
      await bulk.closeWrite();
    })();
    const draining = (async () => {
      const buf = new Uint8Array(MiB);
      const more = () => readWithin(bulkIn, buf, "the bulk stream", received);
      for (let n = await more(); n !== null; n = await more()) received += n;
    })();
    await until("16 MiB of the bulk stream at the server", () => received >= 16 * MiB);
    // Small echo exchanges on new streams, one after another, behind the bulk frames: with a
    // writer that let the bulk stream go first until it ends, they would never complete.
    const echo = (async () => {
      for (let s = await p.server.accept(); s; s = await p.server.accept()) {
        const st: Stream = s;
        (async () => {
          const b = new Uint8Array(64);
          const n = await st.read(b);
          if (n !== null) await st.write(b.slice(0, n));
          await st.closeWrite();
          st.close();
        })();
      }
    })();
    const atStart = received;
    for (let i = 0; i < 20; i++) {
      const s = await p.client.open({ data: new TextEncoder().encode(`ping ${i}`), fin: true });
      const b = new Uint8Array(64);
      const n = await readWithin(s, b, `the echo of ping ${i} behind the bulk stream`);
      assertEquals(new TextDecoder().decode(b.subarray(0, n!)), `ping ${i}`);
      s.close();
    }
    stop = true;
    await sending;
    await draining;
    assert(received > atStart, "the bulk stream moved while the small exchanges ran");
    bulkIn.close();
    bulk.close();
    await p.close();
    await echo;
  } finally {
    await p.close();
  }
});

Deno.test("mux lent reads: readView gives the bytes in order, null at FIN, views survive a reset", async () => {
  const p = await muxPair();
  try {
    const s = await p.client.open();
    const t = await acceptWithin(p.server, "the stream the peer opened");
    assert(viewReader(t) !== null);
    const sent = crypto.getRandomValues(new Uint8Array(65536));
    await s.write(sent);
    await s.write(new TextEncoder().encode("end"));
    await s.closeWrite();
    const got: number[] = [];
    const next = () => within(t.readView(), "the bytes and FIN as views");
    for (let v = await next(); v !== null; v = await next()) got.push(...v);
    assertEquals(got.length, sent.length + 3);
    assertEquals(new Uint8Array(got.slice(0, sent.length)), sent);
    t.releaseView();
    s.close();
    t.close();

    // A view still being written on when its stream is reset keeps its bytes while other
    // streams receive: its buffer goes back to the pool only at releaseView.
    const a = await p.client.open();
    const aIn = await acceptWithin(p.server, "the stream the peer opened");
    const block = new Uint8Array(200 * 1024).fill(0x5a);
    await a.write(block);
    const nextView = () => within(aIn.readView(), "a view of the block");
    let view = await nextView();
    while (view!.length === 0) view = await nextView();
    const copy = view!.slice();
    aIn.reset();
    const b = await p.client.open();
    const bIn = await acceptWithin(p.server, "the stream the peer opened");
    const other = new Uint8Array(4 * MiB).fill(0xa5);
    const draining = drainHash(bIn);
    await b.write(other);
    await b.closeWrite();
    await draining;
    assertEquals(view, copy);
    aIn.releaseView();
    a.close();
    b.close();
    bIn.close();
  } finally {
    await p.close();
  }
});

Deno.test("mux framed write and lent reads pass through withPrefix (bytes left over by a handshake)", async () => {
  const p = await muxPair({ maxFrameBytes: 50_000 });
  const [user, front] = await tcpPair();
  try {
    const s = await p.client.open();
    const t = await acceptWithin(p.server, "the stream the peer opened");
    const head = new TextEncoder().encode("left over");
    const wrapped = withPrefix(s, head);
    assertEquals(framedWriter(wrapped)?.headroomBytes, 12);
    assert(viewReader(wrapped) !== null);
    assertEquals(viewReader(withPrefix(user, head)), null, "a TCP conn gains nothing");
    const relaying = relay(front, wrapped);
    const total = 8 * MiB;
    const [down, up] = await Promise.all([
      drainHash(user),
      drainHash(t),
      sendBlocks(t, total, 3).then(() => t.closeWrite()),
      sendBlocks(user, total, 4).then(() => user.closeWrite()),
    ]);
    // The prefix comes first, then the stream's bytes.
    const expected = createHash("sha256").update(head);
    for (const chunk of blockStream(total, 3)) expected.update(chunk);
    assertEquals(down.bytes, head.length + total);
    assertEquals(down.sha256, expected.digest("hex"));
    assertEquals(up.sha256, blockStreamSha256(total, 4));
    assertEquals((await relaying).end, "done");
    t.close();
  } finally {
    user.close();
    await p.close();
  }
});
