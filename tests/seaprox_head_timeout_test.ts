/**
 * seaprox's handshake timeout also bounds every later request head on a kept-alive HTTP
 * proxy connection: a client that sends one good request and then dribbles the next head
 * is cut, instead of holding the connection until the idle timeout, and its record (the close
 * log line) says `end=handshake-timeout`, as for a first head (it said `end=done`).
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { closeQuietly, dial, writeAll } from "../lib/net/mod.ts";
import { parseListenUrl, type ProxyConnectionRecord, startSeaprox } from "../lib/proxy/mod.ts";
import { startOrigin, until, within } from "./_util.ts";

Deno.test("seaprox http: a dribbled second head is cut by --handshake-timeout", async () => {
  const origin = startOrigin();
  const records: ProxyConnectionRecord[] = [];
  const sp = await startSeaprox({
    hooks: { onClose: (r) => records.push(r) },
    listeners: [parseListenUrl("http://127.0.0.1:0")],
    prefer: "ipv4",
    handshakeTimeoutMs: 300,
    // Ten times the dribble's bound: a cut within it is the head timeout's, on any box.
    idleTimeoutMs: 600_000,
  });
  const c = await dial("127.0.0.1", sp.servers[0].addr.port);
  try {
    const enc = new TextEncoder();
    const req = `GET http://127.0.0.1:${origin.port}/hello?id=1 HTTP/1.1\r\n` +
      `Host: 127.0.0.1:${origin.port}\r\n\r\n`;
    await writeAll(c, enc.encode(req));
    const buf = new Uint8Array(4096);
    const n = await within(c.read(buf), "the first response");
    assertMatch(new TextDecoder().decode(buf.subarray(0, n ?? 0)), /^HTTP\/1\.1 200[\s\S]*hello 1/);
    // The next head, one byte every 100 ms: cut after ~300 ms, long before the idle timeout.
    const started = Date.now();
    let closed = false;
    for (const ch of req.repeat(10)) {
      try {
        await writeAll(c, enc.encode(ch));
      } catch {
        closed = true; // the proxy closed the connection under us
        break;
      }
      await new Promise((r) => setTimeout(r, 100));
      if (Date.now() - started > 60_000) break; // a hang's bound
    }
    assert(closed, "connection still open after 60 s of dribbling");
    await until("the connection's close record", () => records.length === 1);
    assertEquals(records[0].end, "handshake-timeout");
  } finally {
    closeQuietly(c);
    await sp.stop(100);
    await origin.close();
  }
});
