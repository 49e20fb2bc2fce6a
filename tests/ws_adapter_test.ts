/**
 * lib/transport WebSocketDuplex (the embeddable front's control path): bytes written from one
 * reused buffer arrive as written (it hands `send()` the caller's bytes without a copy of its
 * own), in order, both ways, and a closed socket reads null and refuses writes.
 */
import { assertEquals, assertRejects } from "./_assert.ts";
import { WebSocketDuplex } from "../lib/transport/ws_adapter.ts";
import { createHash } from "node:crypto";
import { readWithin, within } from "./_util.ts";

/** A server-side (Deno.upgradeWebSocket) and a client-side WebSocketDuplex, connected. */
async function pair(): Promise<{
  server: WebSocketDuplex;
  client: WebSocketDuplex;
  close(): Promise<void>;
}> {
  let accepted!: (d: WebSocketDuplex) => void;
  const serverSide = new Promise<WebSocketDuplex>((r) => accepted = r);
  const http = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req, { idleTimeout: 0 });
    accepted(new WebSocketDuplex(socket));
    return response;
  });
  const client = new WebSocketDuplex(new WebSocket(`ws://127.0.0.1:${http.addr.port}/`));
  await within(client.opened, "the client WebSocket's open");
  const server = await within(serverSide, "the server's upgraded WebSocket");
  await within(server.opened, "the server WebSocket's open");
  return {
    server,
    client,
    close: async () => {
      client.close();
      server.close();
      await http.shutdown();
    },
  };
}

/** Read exactly `n` bytes from `d` (hashing them), in whatever pieces arrive. */
async function readHash(d: WebSocketDuplex, n: number): Promise<string> {
  const h = createHash("sha256");
  const buf = new Uint8Array(7_000); // not a multiple of the writes: pieces split
  let got = 0;
  while (got < n) {
    const k = await readWithin(d, buf, `${n} bytes over the WebSocket`, got);
    if (k === null) throw new Error(`eof after ${got} of ${n} bytes`);
    h.update(buf.subarray(0, k));
    got += k;
  }
  return h.digest("hex");
}

Deno.test("ws adapter: writes from one reused buffer arrive as written, both ways", async () => {
  const p = await pair();
  try {
    const pieces = 600;
    const size = 10_000;
    for (const [from, to] of [[p.server, p.client], [p.client, p.server]]) {
      const want = createHash("sha256");
      const buf = new Uint8Array(size);
      const reading = readHash(to, pieces * size);
      for (let i = 0; i < pieces; i++) {
        buf.fill(i % 251); // overwritten right after each write resolves (and before it goes)
        buf[0] = i >> 8;
        want.update(buf);
        await from.write(buf);
      }
      assertEquals(await reading, want.digest("hex"));
    }
  } finally {
    await p.close();
  }
});

Deno.test("ws adapter: a closed socket reads null and refuses writes", async () => {
  const p = await pair();
  try {
    p.client.close();
    assertEquals(await readWithin(p.server, new Uint8Array(16), "the close at the server"), null);
    await assertRejects(() => p.server.write(new Uint8Array(1)));
  } finally {
    await p.close();
  }
});
