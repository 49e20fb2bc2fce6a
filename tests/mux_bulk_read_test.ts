/**
 * Amid bulk frames, one small data frame (a sender's short read of its source) does not make
 * the session read up to its whole buffer past it: the next large frame's payload would land
 * in the session's own buffer and be copied out, instead of going to the stream's buffer as
 * it is read.
 */

import { assert, assertEquals } from "./_assert.ts";
import { tcpPair } from "./_mux.ts";
import { acceptWithin, sha256, within } from "./_util.ts";
import { encodeFrame, Flag, FrameType, headerBytes } from "../lib/mux/frame.ts";
import { Session } from "../lib/mux/mod.ts";
import type { Duplex } from "../lib/net/mod.ts";

/** A transport that records where in its byte stream each read starts and how much it asks. */
class ReadLog implements Duplex {
  reads: { at: number; ask: number }[] = [];
  #pos = 0;
  constructor(readonly inner: Deno.TcpConn) {}
  async read(p: Uint8Array): Promise<number | null> {
    this.reads.push({ at: this.#pos, ask: p.length });
    const n = await this.inner.read(p);
    if (n !== null) this.#pos += n;
    return n;
  }
  write(p: Uint8Array): Promise<number> {
    return this.inner.write(p);
  }
  closeWrite(): Promise<void> {
    return this.inner.closeWrite();
  }
  close(): void {
    this.inner.close();
  }
}

const payload = (n: number, seed: number) => new Uint8Array(n).map((_, i) => (i * seed) & 0xff);

Deno.test("mux bulk reads: a small frame amid large ones is read to the next header only", async () => {
  const [a, b] = await tcpPair();
  const log = new ReadLog(a);
  const session = Session.server(log, { keepaliveIntervalMs: 0, drainTimeoutMs: 3000 });
  try {
    const big1 = payload(100 * 1024, 7);
    const small = payload(36, 3);
    const big2 = payload(120 * 1024, 11); // all three within the initial 256 KiB window
    const frames = [
      encodeFrame(FrameType.data, Flag.syn, 1, big1),
      encodeFrame(FrameType.data, 0, 1, small),
      encodeFrame(FrameType.data, Flag.fin, 1, big2),
    ];
    for (const f of frames) {
      for (let o = 0; o < f.length;) o += await b.write(f.subarray(o));
    }
    const s = await acceptWithin(session, "the stream the peer opened");
    const got: Uint8Array[] = [];
    const next = () => within(s.readView(), "the frames' bytes and FIN");
    for (let v = await next(); v !== null; v = await next()) {
      got.push(v.slice());
      s.releaseView();
    }
    const all = new Uint8Array(got.reduce((k, v) => k + v.length, 0));
    got.reduce((off, v) => (all.set(v, off), off + v.length), 0);
    const sent = new Uint8Array(big1.length + small.length + big2.length);
    sent.set(big1);
    sent.set(small, big1.length);
    sent.set(big2, big1.length + small.length);
    assertEquals(all.length, sent.length);
    assertEquals(sha256(all), sha256(sent));
    // From the small frame's header on, no read may reach past the large frame's header.
    const smallAt = frames[0].length;
    const bigHeaderEnd = smallAt + frames[1].length + headerBytes;
    const between = log.reads.filter((r) => r.at >= smallAt && r.at < bigHeaderEnd);
    assert(between.length > 0, JSON.stringify(log.reads));
    for (const r of between) {
      assert(r.at + r.ask <= bigHeaderEnd, `read ${JSON.stringify(r)} past ${bigHeaderEnd}`);
    }
    s.close();
  } finally {
    b.close();
    await session.close();
  }
});
