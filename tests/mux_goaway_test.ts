import { MuxError } from "../lib/mux/mod.ts";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { muxPair } from "./_mux.ts";
import {
  acceptWithin,
  blockStreamSha256,
  drainHash,
  readWithin,
  sendBlocks,
  until,
  within,
} from "./_util.ts";

Deno.test("goaway: close('normal') refuses new streams but lets open ones finish", async () => {
  const p = await muxPair();
  try {
    const c = await p.client.open();
    const s = await acceptWithin(p.server, "the stream the peer opened");
    const closing = p.server.close("normal");
    await p.client.ping(); // the reply comes after the go away: the client has seen it
    // The client learned of the go away: new opens fail with a typed error.
    const err = await assertRejects(p.client.open());
    assert(err instanceof MuxError && err.reason === "goaway", String(err));
    // The open stream still carries data both ways until both FINs.
    const [got] = await Promise.all([
      drainHash(s),
      sendBlocks(c, 4 << 20, 2).then(() => c.closeWrite()),
    ]);
    assertEquals(got.sha256, blockStreamSha256(4 << 20, 2));
    await s.closeWrite();
    assertEquals(await readWithin(c, new Uint8Array(1), "the acceptor's FIN"), null);
    await closing;
    assertEquals((await p.server.closed).reason, "local-close");
    assertEquals((await p.client.closed).reason, "remote-goaway");
    assertEquals(await p.server.accept(), null, "accept() returns null once closed");
  } finally {
    await p.close();
  }
});

Deno.test("goaway: close('protocol-error') ends at once; the peer's streams fail", async () => {
  const p = await muxPair();
  try {
    const c = await p.client.open();
    await p.server.accept();
    const reading = c.read(new Uint8Array(10));
    await p.server.close("protocol-error");
    const err = await assertRejects(within(reading, "the pending read to end at the GOAWAY"));
    assert(err instanceof MuxError && err.reason === "session-closed", String(err));
    const end = await p.client.closed;
    assertEquals(end.reason, "remote-goaway");
    assertEquals((await p.server.closed).reason, "protocol-error");
    const e2 = await assertRejects(p.client.open());
    assert(e2 instanceof MuxError && e2.reason === "session-closed");
  } finally {
    await p.close();
  }
});

Deno.test("goaway: async iteration over accepted streams ends when the session closes", async () => {
  const p = await muxPair();
  try {
    const seen: number[] = [];
    const loop = (async () => {
      for await (const s of p.server) {
        seen.push(s.id);
        s.close();
      }
    })();
    for (let i = 0; i < 3; i++) (await p.client.open()).close();
    await until("the server to accept the 3 streams", () => seen.length === 3);
    await p.client.close();
    await loop;
    assertEquals(seen, [1, 3, 5]);
  } finally {
    await p.close();
  }
});

Deno.test("goaway: a draining close('normal') can be escalated to an immediate close", async () => {
  const p = await muxPair({ drainTimeoutMs: 60_000 });
  try {
    const c = await p.client.open();
    await p.server.accept();
    const draining = p.client.close("normal"); // would wait for c for a minute
    await new Promise((r) => setTimeout(r, 20));
    await p.client.close("internal-error");
    await draining;
    assertEquals((await p.client.closed).reason, "internal-error");
    const err = await assertRejects(c.write(new Uint8Array(1)));
    assert(err instanceof MuxError && err.reason === "session-closed", String(err));
  } finally {
    await p.close();
  }
});
