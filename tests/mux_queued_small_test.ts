import type { Stream } from "../lib/mux/mod.ts";
import { assert, assertEquals } from "./_assert.ts";
import { muxPair } from "./_mux.ts";
import { readWithin, until, within } from "./_util.ts";

/** Streams accepted with their request unread, and the request's size (one small frame each). */
const parkedStreams = 1000;
const requestBytes = 100;
/**
 * ArrayBuffers those streams may hold together: their requests' copies (100 KB) in 16 KiB arenas,
 * with room for the sessions' own buffers. A pooled 16 KiB buffer per request was ~16 MB.
 */
const parkedBudgetBytes = 4 * 1024 * 1024;

const request = (i: number): Uint8Array =>
  new TextEncoder().encode(`request ${i} `.padEnd(requestBytes, "."));

Deno.test("queued small payloads: 1,000 streams accepted with a small request unread hold little memory, and each reads exactly", async () => {
  // All the SYNs arrive in one read, before the accept loop runs again: a backlog for them all.
  const p = await muxPair({ acceptBacklog: parkedStreams });
  try {
    const before = Deno.memoryUsage().external;
    const accepted: Stream[] = [];
    const accepting = (async () => {
      for await (const s of p.server) {
        accepted.push(s);
        if (accepted.length === parkedStreams) break;
      }
    })();
    const opened: Stream[] = [];
    for (let i = 0; i < parkedStreams; i++) {
      opened.push(await within(p.client.open({ data: request(i) }), `open ${i}`));
    }
    await within(accepting, "every stream accepted");
    // Every request has arrived (the stream's queue holds it) before it is read.
    await until(
      "every request queued",
      () => accepted.every((s) => s.bufferedBytes === requestBytes),
    );
    const held = Deno.memoryUsage().external - before;
    assert(held < parkedBudgetBytes, `${held} bytes of ArrayBuffers for ${parkedStreams} requests`);
    // Later data queues behind the first (a buffer of its own), both read in order.
    await opened[7].write(new TextEncoder().encode("and more"));
    const buf = new Uint8Array(requestBytes * 2);
    for (let i = 0; i < parkedStreams; i++) {
      const s = accepted[i];
      const n = await readWithin(s, buf.subarray(0, requestBytes), `request ${i}`);
      assertEquals(
        new TextDecoder().decode(buf.subarray(0, n!)),
        new TextDecoder().decode(request(i)),
      );
    }
    const n = await readWithin(accepted[7], buf, "the later data");
    assertEquals(new TextDecoder().decode(buf.subarray(0, n!)), "and more");
    for (const s of opened) s.close();
    for (const s of accepted) s.close();
  } finally {
    await p.close();
  }
});
