/**
 * Seaprox.reconcile (lib/proxy), the reload of seaprox's listeners, without a process: new
 * URLs are bound, removed ones stop accepting while their connections go on, and a refused
 * set (bad URL, open proxy, busy port) changes nothing.
 */

import { assert, assertEquals, assertRejects } from "./_assert.ts";
import {
  diffListeners,
  OpenProxyError,
  parseListenUrl,
  ProxyUrlError,
  startSeaprox,
} from "../lib/proxy/mod.ts";
import { closeQuietly, dial, type Duplex, writeAll } from "../lib/net/mod.ts";
import { startTarget } from "./_depot.ts";
import { readWithin } from "./_util.ts";

/** Send `text` on an echo connection and read it back whole. */
async function echo(conn: Duplex, text: string): Promise<string> {
  await writeAll(conn, new TextEncoder().encode(text));
  const buf = new Uint8Array(text.length);
  let got = 0;
  while (got < buf.length) {
    const n = await readWithin(conn, buf.subarray(got), `the echo of ${JSON.stringify(text)}`, got);
    if (n === null) throw new Error("echo connection closed");
    got += n;
  }
  return new TextDecoder().decode(buf);
}

Deno.test("reconcile: the listener diff is by URL as written", () => {
  assertEquals(diffListeners(["a", "b"], ["b", "c"]), { add: ["c"], remove: ["a"] });
  assertEquals(diffListeners(["a"], ["a", "a"]), { add: [], remove: [] });
  assertEquals(diffListeners([], []), { add: [], remove: [] });
});

Deno.test("reconcile: adds and removes listeners, live connections stay, refusals change nothing", async () => {
  const target = startTarget();
  const a = `static://127.0.0.1:0?to=127.0.0.1:${target.port}`;
  const b = `static://127.0.0.1:0/?to=127.0.0.1:${target.port}`;
  const sp = await startSeaprox({ listeners: [] });
  try {
    assertEquals(await sp.reconcile([a]), { added: [a], removed: [] });
    const portA = sp.servers[0].addr.port;
    const live = await dial("127.0.0.1", portA);
    await writeAll(live, new Uint8Array([0x45])); // "E": the target echoes
    assertEquals(await echo(live, "ping"), "ping");

    assertEquals(await sp.reconcile([b]), { added: [b], removed: [a] });
    assertEquals(sp.specs.map((s) => s.url), [b]);
    assertEquals(await echo(live, "pong"), "pong", "a connection of a removed listener goes on");
    closeQuietly(live);

    assert(
      (await assertRejects(() => sp.reconcile([b, "nope://127.0.0.1:1"]))) instanceof ProxyUrlError,
    );
    assert(
      (await assertRejects(() => sp.reconcile([b, "socks5://0.0.0.0:0"]))) instanceof
        OpenProxyError,
    );
    // A busy port: the URL before it in the list was bound, then undone.
    const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    try {
      await assertRejects(() =>
        sp.reconcile([b, "socks5://127.0.0.1:0", `socks5://127.0.0.1:${busy.addr.port}`])
      );
    } finally {
      busy.close();
    }
    assertEquals(sp.specs.map((s) => s.url), [b], "nothing changed");
    assertEquals(sp.servers.length, 1);
    assertEquals(await sp.reconcile([b]), { added: [], removed: [] });
  } finally {
    await sp.stop(0);
    await target.close();
  }
});

Deno.test("reconcile: an open proxy is refused at start unless allowOpen", async () => {
  const open = parseListenUrl("socks5://0.0.0.0:0");
  assert(
    (await assertRejects(() => startSeaprox({ listeners: [open] }))) instanceof OpenProxyError,
  );
  const sp = await startSeaprox({ listeners: [open], allowOpen: true });
  assert(sp.servers.length === 1);
  await sp.stop(0);
});
