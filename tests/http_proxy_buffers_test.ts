/**
 * handleHttpProxy's pooled buffers when a handler throws (a bug: here the exchange hook): the
 * client and upstream reader buffers, 16 KiB each from lib/net's relay pool, go back to its
 * budget (`forget`: never handed out again, a read may still be pending on them). Before,
 * they were left to the GC still counted, so each such connection kept 32 KiB of the budget
 * for good, and every relay past it was held at the smallest buffer class.
 */

import { assert, assertEquals } from "./_assert.ts";
import { rawExchange, startHttpProxy, startRawOrigin } from "./_http.ts";
import { BufferedReader, closeQuietly, dial, relayPool, writeAll } from "../lib/net/mod.ts";
import { copyBody, requestBodyFraming } from "../lib/http/mod.ts";
import { readAll } from "./_util.ts";

const enc = new TextEncoder();

/** Bytes the relay pool holds for buffers in use (pooled free ones dropped first). */
function inUseBytes(): number {
  relayPool.trim();
  return relayPool.heldBytes;
}

Deno.test("http proxy: a connection whose handler throws gives its buffers' budget back to the pool", async () => {
  const origin = startRawOrigin(async (head, r, conn) => {
    await copyBody(r, conn, requestBodyFraming(head), () => Promise.resolve());
    await writeAll(conn, enc.encode("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
    return true;
  });
  const before = inUseBytes();
  let thrown = 0;
  const proxy = startHttpProxy({
    onExchange: () => {
      thrown++;
      throw new RangeError("exchange hook failed");
    },
  });
  try {
    for (let i = 0; i < 4; i++) {
      const c = await dial("127.0.0.1", proxy.addr.port);
      try {
        const r = new BufferedReader(c);
        const url = `http://127.0.0.1:${origin.addr.port}/${i}`;
        const res = await rawExchange(c, r, `GET ${url} HTTP/1.1\r\nHost: x\r\n\r\n`);
        assertEquals([res.head.status, res.body], [200, "ok"]);
        // The hook threw after the response: the proxy ends the connection.
        assertEquals((await readAll(c, "the proxy closing after the throw")).length, 0);
      } finally {
        closeQuietly(c);
      }
    }
  } finally {
    await proxy.stop();
    await origin.stop();
  }
  assertEquals(thrown, 4);
  assert(proxy.stats.errors >= 4, `handler errors counted: ${proxy.stats.errors}`);
  assertEquals(inUseBytes(), before, "relay pool bytes still counted after the connections");
});
