import type { Session, Stream } from "../lib/mux/mod.ts";
import { assert, assertEquals } from "./_assert.ts";
import { muxPair } from "./_mux.ts";
import { echoInWrites, readWithin, sha256, until, within } from "./_util.ts";

/** Keepalive fast enough for a test; the timeout is only a hang's bound. */
const quickKeepalive = { keepaliveIntervalMs: 30, keepaliveTimeoutMs: 60_000 };
/** Small writes in one turn, and their size: enough to grow read and write buffers. */
const burstWrites = 200;
const burstWriteBytes = 1024;
/**
 * What an idle session may hold in its own buffers: the small read buffer and one small batch
 * buffer (each 4 KiB), which the keepalive pings themselves use.
 */
const idleBufferBytes = 8 * 1024;

/** Serve every stream of `server` as an echo in 1 KiB writes (many small frames per read). */
async function echoServer(server: Session): Promise<void> {
  for await (const s of server) {
    echoInWrites(s, burstWriteBytes).catch(() => {
      // The session closed mid-echo: the test's own reads report it.
    });
  }
}

/** A burst each way through an echo stream; the echo must equal what was sent. */
async function burst(client: Session, seed: number): Promise<void> {
  const s = await within(client.open(), "stream opened");
  const sent = new Uint8Array(burstWrites * burstWriteBytes);
  for (let i = 0; i < sent.length; i++) sent[i] = (i * 31 + seed) & 0xff;
  const writes: Promise<number>[] = [];
  for (let o = 0; o < sent.length; o += burstWriteBytes) {
    writes.push(s.write(sent.subarray(o, o + burstWriteBytes))); // all in one turn
  }
  await within(Promise.all(writes), "burst written");
  await s.closeWrite();
  const got = new Uint8Array(sent.length + 1);
  let n = 0;
  for (;;) {
    const k = await readWithin(s, got.subarray(n), "echo");
    if (k === null) break;
    n += k;
  }
  s.close();
  assertEquals(n, sent.length);
  assertEquals(sha256(got.subarray(0, n)), sha256(sent));
}

Deno.test("idle buffers: a session quiet for a keepalive interval lets go of what a burst grew, and works after", async () => {
  const p = await muxPair(quickKeepalive);
  const serving = echoServer(p.server);
  try {
    await burst(p.client, 1);
    for (const [name, session] of [["client", p.client], ["server", p.server]] as const) {
      assertEquals(typeof session.stats.bufferBytes, "number");
      await until(
        `the ${name}'s buffers back to at most ${idleBufferBytes} bytes`,
        () => session.stats.bufferBytes <= idleBufferBytes,
      );
    }
    // Everything made again on demand: bursts after the release are exact, twice (the second
    // finds the buffers the first made).
    await burst(p.client, 2);
    await burst(p.client, 3);
  } finally {
    await p.close();
    await serving;
  }
});

Deno.test("idle buffers: a stream open across the release, and a view lent before it, are intact", async () => {
  const p = await muxPair(quickKeepalive);
  let serving: Promise<void> | undefined;
  try {
    const accepted = p.server.accept();
    const c = await within(p.client.open({ data: new TextEncoder().encode("first view") }), "open");
    const s = (await within(accepted, "accept")) as Stream;
    const view = await within(s.readView(), "the first view"); // lent from the small-view arena
    assertEquals(new TextDecoder().decode(view!), "first view");
    // A burst on another stream grows the buffers; then the session goes quiet.
    serving = echoServer(p.server);
    await burst(p.client, 4);
    await until("the server's buffers let go", () => p.server.stats.bufferBytes <= idleBufferBytes);
    // The view held across the release still reads the same bytes while new ones arrive.
    await c.write(new TextEncoder().encode("second"));
    assertEquals(new TextDecoder().decode(view!), "first view");
    const buf = new Uint8Array(64);
    const n = await readWithin(s, buf, "the second write");
    assertEquals(new TextDecoder().decode(buf.subarray(0, n!)), "second");
    assertEquals(new TextDecoder().decode(view!), "first view");
    // Both directions of the old stream still work, to their FINs.
    await s.write(new TextEncoder().encode("answer"));
    await s.closeWrite();
    await c.closeWrite();
    const got = new Uint8Array(64);
    const k = await readWithin(c, got, "the answer");
    assertEquals(new TextDecoder().decode(got.subarray(0, k!)), "answer");
    assertEquals(await readWithin(c, got, "the FIN"), null);
    assertEquals(await readWithin(s, buf, "the FIN"), null);
    c.close();
    s.close();
  } finally {
    await p.close();
    await serving;
  }
});

Deno.test("idle buffers: a busy session's own buffers stay within their caps (read buffer at most 2 MiB)", async () => {
  const p = await muxPair();
  let most = 0;
  const serving = (async () => {
    for await (const s of p.server) {
      (async () => {
        const b = new Uint8Array(1 << 20);
        while ((await s.read(b)) !== null) most = Math.max(most, p.server.stats.bufferBytes);
        s.close();
      })().catch(() => {
        // The session closed mid-read: the writers' side reports it.
      });
    }
  })();
  try {
    // 32 streams × 4 MiB in 16 KiB (copied, small) frames: the server's reads fill its buffer
    // again and again, so it grows to its largest size.
    const piece = new Uint8Array(16 * 1024);
    await within(
      Promise.all(Array.from({ length: 32 }, async () => {
        const s = await p.client.open();
        for (let i = 0; i < 256; i++) await s.write(piece);
        await s.closeWrite();
        while ((await s.read(piece)) !== null) { /* to the server's FIN */ }
        s.close();
      })),
      "every stream written and closed",
    );
    // The read buffer's 2 MiB, the two 256 KiB batches, the staging buffer and a view arena.
    const capBytes = 2 * 1024 * 1024 + 3 * 256 * 1024 + 16 * 1024;
    assert(most <= capBytes, `the server held ${most} bytes of buffers (cap ${capBytes})`);
  } finally {
    await p.close();
    await serving;
  }
});
