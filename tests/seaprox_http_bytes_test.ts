/**
 * seaprox's HTTP listener counts the bytes it moves for a connection's record and its live
 * counters (status pages): a CONNECT tunnel's relay counts into them itself, a forward request's
 * upstream through lib/http's counting wrapper; the per-request report of a tunnel that follows
 * forward requests on one kept-alive connection gives the tunnel's own bytes.
 */

import { assert, assertEquals } from "./_assert.ts";
import { Logger } from "../lib/log.ts";
import { dial, writeAll } from "../lib/net/mod.ts";
import {
  ConnectionTable,
  directDialer,
  httpProxy,
  type ProxyConnectionRecord,
  serveProxy,
} from "../lib/proxy/mod.ts";
import { listenLocal, readAll, within } from "./_util.ts";
import { echoAfterEofServer, rawServer, readHttpHead, waitUntil } from "./_seaprox.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** An HTTP proxy listener whose records and debug lines the test reads. */
function startProxy() {
  const lines: string[] = [];
  const records: ProxyConnectionRecord[] = [];
  const table = new ConnectionTable(16);
  const proxy = serveProxy(listenLocal(), httpProxy(), {
    dialer: directDialer({ prefer: "ipv4" }),
    table,
    log: new Logger("debug", { svc: "test" }, (l) => lines.push(l)),
    hooks: { onClose: (r) => records.push(r) },
  });
  return { proxy, table, lines, records };
}

/** Open a CONNECT tunnel to 127.0.0.1:`port` on `c`; its answer head. */
async function connectTo(c: Deno.TcpConn, port: number): Promise<string> {
  await writeAll(c, enc.encode(`CONNECT 127.0.0.1:${port} HTTP/1.1\r\nHost: x\r\n\r\n`));
  return await readHttpHead(c);
}

Deno.test("seaprox http: a CONNECT tunnel's bytes are counted live and in its record", async () => {
  const origin = echoAfterEofServer();
  const { proxy, table, lines, records } = startProxy();
  try {
    const c = await dial("127.0.0.1", proxy.addr.port);
    try {
      assert((await connectTo(c, origin.port)).startsWith("HTTP/1.1 200 "));
      await writeAll(c, enc.encode("ping"));
      // While the tunnel is open, what went up shows on the live connection.
      await waitUntil(() => table.list()[0]?.bytesUp === 4);
      await c.closeWrite();
      assertEquals(dec.decode(await readAll(c, "the answer through the tunnel")), "got 4: ping");
    } finally {
      c.close();
    }
    await waitUntil(() => records.length === 1);
    assertEquals([records[0].end, records[0].bytesUp, records[0].bytesDown], ["done", 4, 11]);
    assert(lines.some((l) => /msg="http exchange" method=CONNECT .*up=4 down=11/.test(l)));
  } finally {
    await proxy.stop();
    await origin.close();
  }
});

Deno.test("seaprox http: forward requests then a CONNECT on one connection, all counted", async () => {
  const answer = enc.encode("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi");
  let originRead = 0;
  // One request head per connection, answered with `answer`; then it waits for the proxy's
  // close (the CONNECT's other destination drops the kept-alive upstream).
  const web = rawServer(async (c) => {
    let head = "";
    const buf = new Uint8Array(4096);
    while (!head.includes("\r\n\r\n")) {
      const n = await within(c.read(buf), "the forwarded request head");
      if (n === null) return;
      originRead += n;
      head += dec.decode(buf.subarray(0, n));
    }
    await writeAll(c, answer);
    await readAll(c, "the proxy's close of the kept-alive upstream");
  });
  const echo = echoAfterEofServer();
  const { proxy, lines, records } = startProxy();
  try {
    const c = await dial("127.0.0.1", proxy.addr.port);
    try {
      await writeAll(
        c,
        enc.encode(`GET http://127.0.0.1:${web.port}/ HTTP/1.1\r\nHost: x\r\n\r\n`),
      );
      const head = await readHttpHead(c);
      assert(head.startsWith("HTTP/1.1 200 "), head);
      const body = new Uint8Array(2);
      assertEquals(await within(c.read(body), "the forwarded body"), 2);
      assert((await connectTo(c, echo.port)).startsWith("HTTP/1.1 200 "));
      assertEquals(await askEof(c, "ping"), "got 4: ping");
    } finally {
      c.close();
    }
    await waitUntil(() => records.length === 1);
    const r = records[0];
    assert(originRead > 0);
    assertEquals([r.end, r.bytesUp, r.bytesDown], ["done", originRead + 4, answer.length + 11]);
    // The tunnel's own report counts the tunnel only, not the forward request before it.
    assert(
      lines.some((l) => /msg="http exchange" method=CONNECT .*up=4 down=11/.test(l)),
      lines.join("\n"),
    );
  } finally {
    await proxy.stop();
    await web.close();
    await echo.close();
  }
});

/** Send `text`, shut our write side, read the whole answer. */
async function askEof(c: Deno.TcpConn, text: string): Promise<string> {
  await writeAll(c, enc.encode(text));
  await c.closeWrite();
  return dec.decode(await readAll(c, "the answer after our EOF"));
}
