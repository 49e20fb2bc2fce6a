/**
 * Connection floods against seaprox's shared connection table: idle connections on one
 * listener must not lock the other listeners out. A full table sheds its longest-idle
 * connection for a newcomer (instead of refusing everyone until the idle timeout), and one
 * source (IPv4 address) holds at most its share of the table while another source still
 * gets in.
 */

import { type AddressInfo, connect as nodeConnect, type Socket } from "node:net";
import { assert, assertEquals } from "./_assert.ts";
import { closeQuietly, dial, withPrefix } from "../lib/net/mod.ts";
import { parseListenUrl, type ProxyConnectionRecord, startSeaprox } from "../lib/proxy/mod.ts";
import { socks5Connect } from "../lib/socks5/mod.ts";
import { askAfterEof, echoAfterEofServer, waitUntil } from "./_seaprox.ts";
import { within } from "./_util.ts";

/** Whether the proxy closed `c` (EOF or reset) rather than keeping it open (for 60 s). */
async function closedByPeer(c: Deno.TcpConn): Promise<boolean> {
  const read = c.read(new Uint8Array(1)).then((n) => n, () => null); // a reset is a close
  const r = await within(read, "the proxy to close a connection").catch(() => "still open");
  return r === null;
}

Deno.test("seaprox flood: idle connections on one listener are shed for a newcomer on another", async () => {
  const echo = echoAfterEofServer();
  const records: ProxyConnectionRecord[] = [];
  const sp = await startSeaprox({
    listeners: [parseListenUrl("socks5://127.0.0.1:0"), parseListenUrl("socks5://127.0.0.1:0")],
    prefer: "ipv4",
    maxConns: 4,
    maxConnsPerSource: 4,
    shedIdleMs: 0, // every connection that moved nothing counts as idle
    hooks: { onClose: (r) => records.push(r) },
  });
  const [floodPort, otherPort] = sp.servers.map((s) => s.addr.port);
  const idle: Deno.TcpConn[] = [];
  try {
    // The flood: the whole table, idle, on the first listener.
    for (let i = 0; i < 4; i++) idle.push(await dial("127.0.0.1", floodPort));
    await waitUntil(() => sp.table.size === 4);
    // A client of the other listener is served; the oldest idle connection made room.
    const c = await dial("127.0.0.1", otherPort);
    const { leftover } = await socks5Connect(c, { host: "127.0.0.1", port: echo.port });
    assertEquals(await askAfterEof(withPrefix(c, leftover), "ping"), "got 4: ping");
    closeQuietly(c);
    assert(await closedByPeer(idle[0]), "the oldest idle connection was shed");
    await waitUntil(() => records.some((r) => r.end === "shed"));
    assertEquals(sp.table.shed, 1);
  } finally {
    for (const c of idle) closeQuietly(c);
    await sp.stop();
    await echo.close();
  }
});

Deno.test("seaprox flood: one source holds at most its share, another source still gets in", async () => {
  const echo = echoAfterEofServer();
  const sp = await startSeaprox({
    listeners: [parseListenUrl("socks5://127.0.0.1:0")],
    prefer: "ipv4",
    maxConns: 8,
    maxConnsPerSource: 2,
    shedIdleMs: 3_600_000, // nothing is idle long enough to be shed here
  });
  const port = sp.servers[0].addr.port;
  const mine: Deno.TcpConn[] = [];
  try {
    for (let i = 0; i < 2; i++) mine.push(await dial("127.0.0.1", port));
    await waitUntil(() => sp.table.size === 2);
    const third = await dial("127.0.0.1", port);
    assert(await closedByPeer(third), "a third connection from the same source was kept");
    closeQuietly(third);
    // Another source (127.0.0.2, still loopback) is served meanwhile.
    const other: Socket = await new Promise((resolve, reject) => {
      const s = nodeConnect(
        { host: "127.0.0.1", port, localAddress: "127.0.0.2" },
        () => resolve(s),
      );
      s.once("error", reject);
    });
    try {
      assertEquals((other.address() as AddressInfo).address, "127.0.0.2");
      const reply = await within(
        new Promise<Uint8Array>((resolve) => {
          other.once("data", (d) => resolve(new Uint8Array(d)));
          other.write(Uint8Array.of(5, 1, 0));
        }),
        "the other source's SOCKS5 method reply",
      );
      assertEquals([...reply], [5, 0], "the other source got its SOCKS5 method reply");
    } finally {
      other.destroy();
    }
  } finally {
    for (const c of mine) closeQuietly(c);
    await sp.stop();
    await echo.close();
  }
});
