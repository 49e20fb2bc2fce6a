/**
 * Hostile clients against every seaprox listener (in-process): random garbage, truncated
 * handshakes, a valid handshake dribbled one byte at a time. Every connection must end
 * (answered and closed, or cut at the handshake timeout), never crash or hang the proxy,
 * and a good client must still be served afterwards.
 */

import { assert, assertEquals } from "./_assert.ts";
import { closeQuietly, dial, type Duplex, withPrefix, writeAll } from "../lib/net/mod.ts";
import {
  parseListenUrl,
  type ProxyConnectionRecord,
  type Seaprox,
  startSeaprox,
} from "../lib/proxy/mod.ts";
import { socks5Connect } from "../lib/socks5/mod.ts";
import { askAfterEof, echoAfterEofServer, waitUntil } from "./_seaprox.ts";
import { readWithin, TimedOutError } from "./_util.ts";

/** Send `bytes` (ignoring a reset), then read until the proxy closes; true if it closed. */
async function sendAndExpectClose(port: number, bytes: Uint8Array): Promise<void> {
  const c = await dial("127.0.0.1", port);
  try {
    try {
      await writeAll(c, bytes);
    } catch {
      // The proxy may close before we finish writing garbage: that is a fine answer.
    }
    const buf = new Uint8Array(4096);
    try {
      while ((await readWithin(c, buf, "the proxy's close")) !== null) { /* the answer, if any */ }
    } catch (err) {
      if (err instanceof TimedOutError) throw err;
      // A reset is a close too.
    }
  } finally {
    closeQuietly(c);
  }
}

function random(n: number): Uint8Array {
  const b = new Uint8Array(n);
  crypto.getRandomValues(b);
  return b;
}

Deno.test("seaprox hostile: garbage, truncation and dribbled handshakes never hang it", async () => {
  const echo = echoAfterEofServer();
  const records: ProxyConnectionRecord[] = [];
  const sp: Seaprox = await startSeaprox({
    listeners: [
      parseListenUrl("socks5://127.0.0.1:0"),
      parseListenUrl("socks5://u:p@127.0.0.1:0"),
      parseListenUrl("http://127.0.0.1:0"),
    ],
    prefer: "ipv4",
    handshakeTimeoutMs: 300,
    hooks: { onClose: (r) => records.push(r) },
  });
  const [socks, socksAuth, http] = sp.servers.map((s) => s.addr.port);
  try {
    let sent = 0;
    for (const port of [socks, socksAuth, http]) {
      // Concurrently: silent half-handshakes each wait out the handshake timeout.
      await Promise.all(Array.from({ length: 40 }, (_, i) => {
        const len = i % 4 === 0 ? 0 : Math.floor(Math.random() * 600);
        const junk = random(len);
        // Make some of it look like the start of the real protocol, so deeper states are hit.
        if (i % 3 === 1 && len > 2 && port !== http) junk.set([5, Math.min(junk[1], 3)]);
        if (i % 3 === 1 && port === http) {
          junk.set(new TextEncoder().encode("CONNECT ").subarray(0, len));
        }
        sent++;
        return sendAndExpectClose(port, junk);
      }));
    }
    // Truncated valid handshakes: greeting only; greeting + half a request.
    await sendAndExpectClose(socks, new Uint8Array([5, 1, 0]));
    await sendAndExpectClose(socks, new Uint8Array([5, 1, 0, 5, 1, 0, 3, 10, 0x61]));
    await sendAndExpectClose(http, new TextEncoder().encode("CONNECT 127.0.0.1:1 HTTP/1.1\r\n"));
    sent += 3;
    await waitUntil(() => records.length >= sent, 20_000);
    assertEquals(sp.table.size, 0);
    for (const r of records) {
      assert(r.end !== "done" || r.bytesUp === 0, `garbage must not be relayed: ${r.description}`);
    }

    // A valid SOCKS5 handshake dribbled one byte at a time still works.
    const c = await dial("127.0.0.1", socks);
    try {
      const dribble: Duplex = {
        read: (p) => c.read(p),
        write: async (p) => {
          for (let i = 0; i < p.length; i++) {
            await writeAll(c, p.subarray(i, i + 1));
            await new Promise((r) => setTimeout(r, 1));
          }
          return p.length;
        },
        closeWrite: () => c.closeWrite(),
        close: () => c.close(),
      };
      const { leftover } = await socks5Connect(dribble, { host: "127.0.0.1", port: echo.port });
      assertEquals(await askAfterEof(withPrefix(c, leftover), "still"), "got 5: still");
    } finally {
      closeQuietly(c);
    }
  } finally {
    await sp.stop(0);
    await echo.close();
  }
});
