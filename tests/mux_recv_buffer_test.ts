import fc from "./_fc.ts";
import { assert, assertEquals } from "./_assert.ts";
import { RecvBuffer } from "../lib/mux/recv_buffer.ts";

Deno.test("mux RecvBuffer: random pushes and takes come out in order, byte for byte", () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.oneof(
          fc.record({
            push: fc.integer({ min: 0, max: 70_000 }),
            // Bytes of the same frame still to come (a size hint only).
            rest: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 5_000_000 })),
          }),
          fc.record({ take: fc.integer({ min: 1, max: 90_000 }) }),
          // A small payload's own copy, kept as it is (pushOwned).
          fc.record({ owned: fc.integer({ min: 0, max: 4096 }) }),
          fc.record({ view: fc.integer({ min: 1, max: 90_000 }) }),
          fc.record({
            reserve: fc.integer({ min: 1, max: 300_000 }),
            fill: fc.double({ min: 0, max: 1, noNaN: true }),
            min: fc.integer({ min: 1, max: 300_000 }),
          }),
        ),
        { maxLength: 60 },
      ),
      (ops) => {
        const rx = new RecvBuffer();
        const model: number[] = [];
        let seq = 0;
        /** The bytes lent by the last takeView, and what they must still read. */
        let lent: { view: Uint8Array; bytes: number[] } | null = null;
        /** Buffers handed over by pushOwned, and what they held: nothing may write into them. */
        const owned: { buf: Uint8Array; was: number[] }[] = [];
        const release = () => {
          if (lent) assertEquals(Array.from(lent.view), lent.bytes, "a lent view stays intact");
          rx.releaseView();
          lent = null;
        };
        for (const op of ops) {
          if ("view" in op) {
            release();
            const view = rx.takeView(op.view);
            assert(view.length <= op.view && (view.length > 0 || model.length === 0));
            const bytes = model.splice(0, view.length);
            assertEquals(Array.from(view), bytes);
            lent = { view, bytes };
          } else if ("owned" in op) {
            const buf = new Uint8Array(op.owned);
            for (let i = 0; i < buf.length; i++) buf[i] = (seq + i) & 0xff;
            seq += buf.length;
            rx.pushOwned(buf);
            owned.push({ buf, was: Array.from(buf) });
            for (let i = 0; i < op.owned; i++) model.push((seq - op.owned + i) & 0xff);
          } else if ("push" in op) {
            const chunk = new Uint8Array(op.push);
            for (let i = 0; i < chunk.length; i++) chunk[i] = (seq + i) & 0xff;
            seq += chunk.length;
            rx.push(chunk, chunk.length + op.rest);
            chunk.fill(0); // the buffer must have copied it
            for (let i = 0; i < op.push; i++) model.push((seq - op.push + i) & 0xff);
          } else if ("reserve" in op) {
            // A transport read into the reserved room that returned `got` bytes.
            const room = rx.reserve(op.reserve, op.min);
            assert(room.length >= Math.min(op.reserve, op.min) && room.length <= op.reserve);
            const got = Math.floor(room.length * op.fill);
            for (let i = 0; i < got; i++) room[i] = (seq + i) & 0xff;
            seq += got;
            rx.commit(got);
            for (let i = 0; i < got; i++) model.push((seq - got + i) & 0xff);
          } else {
            const out = new Uint8Array(op.take);
            const n = rx.take(out);
            assertEquals(n, Math.min(op.take, model.length));
            assertEquals(Array.from(out.subarray(0, n)), model.splice(0, n));
          }
          assertEquals(rx.length, model.length);
        }
        rx.clear();
        release();
        assertEquals(rx.length, 0);
        for (const o of owned) assertEquals(Array.from(o.buf), o.was, "an owned buffer untouched");
      },
    ),
    { numRuns: 200 },
  );
});

Deno.test("mux RecvBuffer: holds more than the largest pooled class", () => {
  const rx = new RecvBuffer();
  const big = new Uint8Array(5 * 1024 * 1024).map((_, i) => i % 251);
  rx.push(big.subarray(0, 3 * 1024 * 1024));
  rx.push(big.subarray(3 * 1024 * 1024));
  const out = new Uint8Array(big.length);
  assertEquals(rx.take(out), big.length);
  assertEquals(out, big);
  assertEquals(rx.length, 0);
});

Deno.test("mux RecvBuffer: clear during a reservation keeps the lent room out of the pool", () => {
  const rx = new RecvBuffer();
  rx.push(new Uint8Array(1000).fill(1));
  const room = rx.reserve(64 * 1024);
  rx.clear(); // the stream was reset while the transport read was in flight
  assertEquals(rx.length, 0);
  // Another stream takes buffers from the same pool: it must not get the lent one.
  const other = new RecvBuffer();
  const mine = new Uint8Array(60 * 1024).fill(7); // the same size class as the lent room
  other.push(mine);
  room.fill(9); // the read lands
  rx.commit(room.length);
  assertEquals(rx.length, 0, "data read after the clear is dropped");
  const out = new Uint8Array(mine.length);
  assertEquals(other.take(out), mine.length);
  assertEquals(out, mine);
  // The buffer is usable again afterwards.
  rx.push(new Uint8Array([1, 2, 3]));
  const three = new Uint8Array(3);
  assertEquals(rx.take(three), 3);
  assertEquals(Array.from(three), [1, 2, 3]);
});

Deno.test("mux RecvBuffer: a reservation uses the free room at the end without moving bytes", () => {
  const rx = new RecvBuffer();
  const first = rx.reserve(64 * 1024); // a 64 KiB buffer from the pool
  first.fill(1);
  rx.commit(40 * 1024);
  const out = new Uint8Array(10 * 1024);
  rx.take(out); // 30 KiB wait at offset 10 KiB, 24 KiB free at the end
  const room = rx.reserve(1024 * 1024, 16 * 1024);
  assertEquals(room.length, 24 * 1024, "the free tail, not a moved or regrown buffer");
  assertEquals(room.buffer, first.buffer);
  room.fill(2);
  rx.commit(room.length);
  const all = new Uint8Array(64 * 1024);
  assertEquals(rx.take(all), 54 * 1024);
  assertEquals(all.subarray(0, 30 * 1024), new Uint8Array(30 * 1024).fill(1));
  assertEquals(all.subarray(30 * 1024, 54 * 1024), new Uint8Array(24 * 1024).fill(2));
});

Deno.test("mux RecvBuffer: a lent view stays out of the pool until released, even after clear", () => {
  const rx = new RecvBuffer();
  rx.push(new Uint8Array(60 * 1024).fill(5));
  const view = rx.takeView(1024 * 1024);
  assertEquals(view.length, 60 * 1024);
  rx.clear(); // the stream was closed while a relay was still writing the view
  // Another stream takes buffers of the same class from the same pool: not the lent one.
  const other = new RecvBuffer();
  other.push(new Uint8Array(60 * 1024).fill(9));
  assertEquals(view, new Uint8Array(60 * 1024).fill(5), "the lent bytes were not reused");
  rx.releaseView();
  // Released, the buffer is pooled again: the next stream of its class gets it back.
  const third = new RecvBuffer();
  const room = third.reserve(60 * 1024);
  assertEquals(room.buffer, view.buffer);
  third.commit(0);
  const out = new Uint8Array(60 * 1024);
  assertEquals(other.take(out), out.length);
  assertEquals(out, new Uint8Array(60 * 1024).fill(9));
});

Deno.test("mux RecvBuffer: a reservation that got nothing leaves no empty buffer in the queue", () => {
  // fast-check's counterexample: two empty reservations, then a byte behind them.
  const rx = new RecvBuffer();
  rx.push(new Uint8Array([1]));
  rx.reserve(16384, 16384); // the first buffer lacks room: a second one
  rx.commit(0);
  rx.reserve(16385, 16385); // and a third
  rx.commit(0);
  rx.push(new Uint8Array([2]));
  assertEquals(Array.from(rx.takeView(1)), [1]);
  rx.releaseView();
  assertEquals(Array.from(rx.takeView(1)), [2], "not an empty view while a byte waits");
  rx.releaseView();
  assertEquals(rx.length, 0);
});

Deno.test("mux RecvBuffer: slices of one frame's payload lie together and leave in one view", () => {
  // The session hands a frame's payload over in slices of at most 64 KiB (one transport read
  // decoded a slice at a time): sized for the whole frame, they are one write for a relay
  // instead of sixteen.
  const rx = new RecvBuffer();
  const slice = 64 * 1024;
  const frame = 16 * slice;
  for (let off = 0; off < frame; off += slice) {
    rx.push(new Uint8Array(slice).fill(off / slice), frame - off);
  }
  const view = rx.takeView(4 * 1024 * 1024);
  assertEquals(view.length, frame, "one view for the whole frame");
  for (let k = 0; k < 16; k++) assertEquals(view[k * slice], k);
  rx.releaseView();
  assertEquals(rx.length, 0);
  // Without the hint (the rest of a frame unknown) a piece still gets a buffer of its size.
  rx.push(new Uint8Array(100));
  rx.push(new Uint8Array(slice));
  let views = 0;
  while (rx.length > 0) {
    rx.takeView(frame);
    rx.releaseView();
    views++;
  }
  assert(views <= 2);
});
