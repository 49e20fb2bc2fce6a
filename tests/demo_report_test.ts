/**
 * lib/demo: a failed check is a FAIL row and a line naming its service and the reason
 * (refused connection, short body, wrong bytes, no answer), and the final line counts it.
 */

import { assert, assertEquals, assertMatch, assertRejects } from "./_assert.ts";
import { listenLocal } from "./_util.ts";
import {
  type DemoCheck,
  DemoCheckError,
  demoPayload,
  expectBody,
  formatTable,
  helloText,
  httpGet,
  runChecks,
  startDemoOrigin,
  summaryLine,
  withConn,
} from "../lib/demo/mod.ts";

/** A one-shot server answering every connection with `reply` and closing. */
function answering(reply: string): { port: number; close(): Promise<void> } {
  const l = listenLocal();
  const loop = (async () => {
    for await (const c of l) {
      const buf = new Uint8Array(4096);
      await c.read(buf);
      await c.write(new TextEncoder().encode(reply));
      c.close();
    }
  })();
  return { port: l.addr.port, close: () => (l.close(), loop) };
}

Deno.test("demo report: failures name the service and the reason, the rest stay ok", async () => {
  const origin = startDemoOrigin();
  const refused = listenLocal();
  const refusedPort = refused.addr.port;
  refused.close();
  const short = answering("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this");
  const never = new Promise<number>(() => {});
  try {
    const checks: DemoCheck[] = [
      {
        path: "direct",
        through: "origin",
        service: "origin",
        run: async () =>
          expectBody(
            await withConn(origin.port, (c) => httpGet(c, origin.addr, "/hello")),
            helloText,
          ),
      },
      {
        path: "refused",
        through: "nothing",
        service: "depot-server + depot-local",
        run: () => withConn(refusedPort, (c) => httpGet(c, "x", "/hello")).then((f) => f.bytes),
      },
      {
        path: "short",
        through: "a server that stops early",
        service: "tunnel-server + tunnel-client",
        run: () => withConn(short.port, (c) => httpGet(c, "x", "/")).then((f) => f.bytes),
      },
      {
        path: "wrong bytes",
        through: "origin",
        service: "fusion-client + fusion-server",
        run: async () =>
          expectBody(
            await withConn(origin.port, (c) => httpGet(c, origin.addr, "/bytes/1000")),
            demoPayload(1001),
          ),
      },
      { path: "silent", through: "nothing", service: "seaprox", run: () => never },
    ];
    const results = await runChecks(checks, 300);
    assertEquals(results.map((r) => r.ok), [true, false, false, false, false]);
    const table = formatTable(results);
    const lines = table.split("\n");
    assertEquals(lines[0].split(/\s+/), ["path", "through", "time", "bytes", "ok"]);
    assertMatch(lines[1], /^direct\s+origin\s+\d+ ms\s+0\.00 MiB\s+ok$/);
    for (const path of ["refused", "short", "wrong bytes", "silent"]) {
      assert(lines.some((l) => l.startsWith(path) && l.endsWith("FAIL")), `${path} row:\n${table}`);
    }
    assertMatch(table, /\nFAIL refused \(depot-server \+ depot-local\): .*(refused|Connection)/i);
    assertMatch(
      table,
      /\nFAIL short \(tunnel-server \+ tunnel-client\): body ended after 9 of 100 bytes/,
    );
    assertMatch(
      table,
      /\nFAIL wrong bytes \(fusion-client \+ fusion-server\): got 1000 bytes .*want 1001/,
    );
    assertMatch(table, /\nFAIL silent \(seaprox\): no answer within 300 ms/);
    assertMatch(summaryLine(results, 1234, "x"), /^4 of 5 checks failed \(1\.2 s\)$/);
  } finally {
    await short.close();
    await origin.close();
  }
});

Deno.test("demo probes: a non-200 answer is refused with its status and text", async () => {
  const origin = startDemoOrigin();
  try {
    const got = await withConn(origin.port, (c) => httpGet(c, origin.addr, "/nothing-here"));
    const err = await assertRejects(() => Promise.resolve().then(() => expectBody(got, helloText)));
    assert(err instanceof DemoCheckError, String(err));
    assertMatch(err.message, /^HTTP 404: try \/hello/);
    assertEquals(got.status, 404);
    assertMatch(got.text, /try \/hello/);
  } finally {
    await origin.close();
  }
});
