/**
 * lib/udp DatagramStream: datagrams framed over a byte stream come back whole and in order on
 * any split of the input (one byte per read up to whole), a stream cut inside a frame is a
 * typed "eof" error while one cut between frames is a clean end, random bytes never escape as
 * anything but a datagram or that error, and sends over the queued-byte bound are dropped and
 * counted instead of piling up.
 */

import { assert, assertEquals } from "./_assert.ts";
import { ChunkedSource, splits } from "./_chunked.ts";
import { ProtocolError } from "../lib/net/mod.ts";
import {
  DatagramStream,
  encodeDatagramFrame,
  type Flow,
  FlowTable,
  maxDatagramFrameBytes,
  UdpDrops,
} from "../lib/udp/mod.ts";
import { concatBytes } from "../lib/net/bytes.ts";

function table(maxQueuedBytes?: number): FlowTable<Flow> {
  return new FlowTable<Flow>({ idleTimeoutMs: 0, maxQueuedBytes }, new UdpDrops());
}

/** Datagrams of sizes 0, 1, 300 and the largest a frame holds, with distinct contents. */
const datagrams = [0, 1, 300, maxDatagramFrameBytes].map((n, i) =>
  Uint8Array.from({ length: n }, (_, j) => (i * 31 + j) & 0xff)
);
const wire = concatBytes(...datagrams.map(encodeDatagramFrame));

for (const [name, split] of splits) {
  Deno.test(`udp stream: frames decode whole and in order (${name})`, async () => {
    const t = table();
    const s = new DatagramStream(new ChunkedSource(wire, split), t);
    for (const d of datagrams) assertEquals(await s.read(), d);
    assertEquals(await s.read(), null);
    t.close();
  });
}

Deno.test("udp stream: cut inside a frame is a typed eof; between frames a clean end", async () => {
  for (let cut = 1; cut < 2 + 300; cut += 37) {
    const t = table();
    const s = new DatagramStream(new ChunkedSource(wire.subarray(0, 2 + 0 + 2 + 1 + cut), 5), t);
    assertEquals(await s.read(), datagrams[0]);
    assertEquals(await s.read(), datagrams[1]);
    const err = await s.read().then(() => undefined, (e) => e);
    assert(err instanceof ProtocolError && err.reason === "eof", `cut ${cut}: ${err}`);
    t.close();
  }
});

Deno.test("udp stream: random bytes give datagrams or a typed error, nothing else", async () => {
  for (let i = 0; i < 200; i++) {
    const junk = crypto.getRandomValues(new Uint8Array(1 + Math.floor(Math.random() * 600)));
    const t = table();
    const s = new DatagramStream(new ChunkedSource(junk, 7), t);
    let total = 0;
    try {
      for (let d = await s.read(); d !== null; d = await s.read()) total += 2 + d.length;
      assertEquals(total, junk.length); // a clean end only where a frame ended
    } catch (err) {
      assert(err instanceof ProtocolError, `random input: ${err}`);
    }
    t.close();
  }
});

Deno.test("udp stream: sends are written in order, and over the byte bound dropped", async () => {
  const t = table(3 * (2 + 100));
  const sink = new ChunkedSource(new Uint8Array(0), 1);
  const s = new DatagramStream(sink, t);
  const sent = Array.from({ length: 5 }, (_, i) => new Uint8Array(100).fill(i));
  const taken = sent.map((d) => s.send(d));
  assertEquals(taken, [true, true, true, false, false]);
  assertEquals(t.drops.count("queue-full"), 2);
  assert(!s.send(new Uint8Array(maxDatagramFrameBytes + 1)), "a datagram too big for a frame");
  assertEquals(t.drops.count("too-big"), 1);
  await s.flushed();
  assertEquals(t.queuedBytes, 0);
  assertEquals(sink.output(), concatBytes(...sent.slice(0, 3).map(encodeDatagramFrame)));
  t.close();
});
