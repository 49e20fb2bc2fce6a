/**
 * seaprox access control as a process: a denied CONNECT gets SOCKS5 reply 0x02 / HTTP 403
 * (by IP literal, and by a name that resolves to a denied address), an allowed one relays;
 * an unauthenticated SOCKS5/HTTP listener on a non-loopback address is refused at start
 * (exit 2, one line) unless --allow-open.
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { concat, enc } from "./_socks5.ts";
import { askAfterEof, echoAfterEofServer, portFor, readHttpHead } from "./_seaprox.ts";
import { readWithin, run, startService } from "./_util.ts";
import { closeQuietly, writeAll } from "../lib/net/mod.ts";

/** SOCKS5 CONNECT (no auth) to host:port; returns the reply code and the open conn. */
async function socksConnect(
  proxyPort: number,
  host: string,
  port: number,
): Promise<{ rep: number; conn: Deno.TcpConn }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxyPort });
  const name = enc.encode(host);
  await writeAll(conn, concat([5, 1, 0], [5, 1, 0, 3, name.length], name, [port >> 8, port & 255]));
  const buf = new Uint8Array(2);
  let got = 0;
  while (got < 2) got += (await readWithin(conn, buf.subarray(got), "the method reply", got)) ?? 2;
  assertEquals(buf[1], 0, "method: no auth");
  const head = new Uint8Array(4);
  got = 0;
  while (got < 4) {
    const n = await readWithin(conn, head.subarray(got), "the SOCKS reply head", got);
    if (n === null) throw new Error("EOF in SOCKS reply");
    got += n;
  }
  // Skip the bound address (IPv4 or IPv6 + port).
  const rest = new Uint8Array(head[3] === 4 ? 18 : 6);
  got = 0;
  while (got < rest.length) {
    const n = await readWithin(conn, rest.subarray(got), "the SOCKS reply's bound address", got);
    if (n === null) break;
    got += n;
  }
  return { rep: head[1], conn };
}

Deno.test("acl seaprox: denied CONNECTs get 0x02 / 403, allowed ones relay", async () => {
  const echo = echoAfterEofServer();
  const port = echo.port;
  // Only this port on loopback, but never 127.0.0.2 (a name resolving there is refused too).
  const svc = await startService("seaprox.ts", [
    "--listen=socks5://127.0.0.1:0",
    "--listen=http://127.0.0.1:0",
    "--prefer-ipv4",
    `--allow=127.0.0.0/8:${port}`,
    "--deny=127.0.0.2",
    "--deny=*.blocked.test",
  ], { readyCount: 2 });
  try {
    await svc.waitFor(/msg="destination access control"/);
    const socks = portFor(svc, "socks5");
    const ok = await socksConnect(socks, "127.0.0.1", port);
    assertEquals(ok.rep, 0);
    assertEquals(await askAfterEof(ok.conn, "ping"), "got 4: ping");
    closeQuietly(ok.conn);
    const cases: [string, number][] = [
      ["127.0.0.1", port + 1], // port not allowed
      ["127.0.0.2", port], // denied literal
      ["localhost", port + 1], // name resolving to an allowed net, wrong port
      ["x.blocked.test", port], // denied by name before any lookup
    ];
    for (const [host, p] of cases) {
      const r = await socksConnect(socks, host, p);
      assertEquals(r.rep, 2, `SOCKS reply for ${host}:${p}`);
      closeQuietly(r.conn);
    }
    const http = portFor(svc, "http");
    for (const [host, p, want] of [["127.0.0.1", port, 200], ["127.0.0.2", port, 403]] as const) {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: http });
      await writeAll(c, enc.encode(`CONNECT ${host}:${p} HTTP/1.1\r\nHost: ${host}:${p}\r\n\r\n`));
      const head = await readHttpHead(c);
      assertMatch(head, new RegExp(`^HTTP/1\\.1 ${want} `), head);
      closeQuietly(c);
    }
  } finally {
    await svc.stop();
    await echo.close();
  }
});

Deno.test("acl seaprox: an open proxy on a non-loopback address needs --allow-open", async () => {
  const script = new URL("../services/seaprox.ts", import.meta.url).pathname;
  // A DNS name that merely starts like a loopback address is not one.
  for (const url of ["socks5://0.0.0.0:0", "http://[::]:0", "socks5://127.0.0.1.lan:0"]) {
    const r = await run(Deno.execPath(), ["run", "-A", script, "--listen", url]);
    assertEquals(r.code, 2, r.stderr);
    const lines = r.stderr.trim().split("\n");
    assertEquals(lines.length, 1, r.stderr);
    assertMatch(lines[0], /^error: .*refusing an open (socks5|http) proxy.*--allow-open/);
  }
  // With credentials, or with --allow-open, it starts.
  for (
    const args of [["--listen=socks5://u:p@0.0.0.0:0"], [
      "--listen=socks5://0.0.0.0:0",
      "--allow-open",
    ]]
  ) {
    const svc = await startService("seaprox.ts", args);
    try {
      assert(svc.addrs.has("socks5"));
    } finally {
      await svc.stop();
    }
  }
});
