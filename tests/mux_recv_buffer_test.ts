import fc from "fast-check";
import { assertEquals } from "./_assert.ts";
import { RecvBuffer } from "../lib/mux/recv_buffer.ts";

Deno.test("mux RecvBuffer: random pushes and takes come out in order, byte for byte", () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.oneof(
          fc.record({ push: fc.integer({ min: 0, max: 70_000 }) }),
          fc.record({ take: fc.integer({ min: 1, max: 90_000 }) }),
        ),
        { maxLength: 60 },
      ),
      (ops) => {
        const rx = new RecvBuffer();
        const model: number[] = [];
        let seq = 0;
        for (const op of ops) {
          if ("push" in op) {
            const chunk = new Uint8Array(op.push);
            for (let i = 0; i < chunk.length; i++) chunk[i] = (seq + i) & 0xff;
            seq += chunk.length;
            rx.push(chunk);
            chunk.fill(0); // the buffer must have copied it
            for (let i = 0; i < op.push; i++) model.push((seq - op.push + i) & 0xff);
          } else {
            const out = new Uint8Array(op.take);
            const n = rx.take(out);
            assertEquals(n, Math.min(op.take, model.length));
            assertEquals(Array.from(out.subarray(0, n)), model.splice(0, n));
          }
          assertEquals(rx.length, model.length);
        }
        rx.clear();
        assertEquals(rx.length, 0);
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
