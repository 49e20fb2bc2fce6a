/**
 * services/seaprox.ts as a process: help, usage errors, busy port, signals, and the
 * --max-conns / --idle-timeout / --handshake-timeout flags reaching the proxy.
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { closeQuietly, dial } from "../lib/net/mod.ts";
import { listenLocal, readAll, readWithin, run, startService, within } from "./_util.ts";
import {
  askAfterEof,
  echoAfterEofServer,
  portFor,
  rawServer,
  startSeaproxService,
  waitUntil,
} from "./_seaprox.ts";

const script = new URL("../services/seaprox.ts", import.meta.url).pathname;

function seaprox(args: string[]) {
  return run(Deno.execPath(), ["run", "-A", script, ...args]);
}

Deno.test("seaprox service: --help exits 0 and lists the listener URL forms", async () => {
  const r = await seaprox(["--help"]);
  assertEquals(r.code, 0);
  assertMatch(r.stdout, /--listen <url>/);
  assertMatch(r.stdout, /socks5:\/\/\[user:pass@\]host:port/);
  assertMatch(r.stdout, /--forward/);
});

Deno.test("seaprox service: usage errors exit 2 with one line", async () => {
  for (
    const [args, re] of [
      [["--bogus"], /bogus/],
      [[], /--listen/],
      [["--listen", "ftp://127.0.0.1:0"], /unknown listener scheme "ftp"/],
      [["--listen", "static://127.0.0.1:0"], /needs \?to=host:port/],
      [["--listen", "socks5://127.0.0.1:99999"], /port out of range/],
      [["--listen", "socks5://127.0.0.1:0", "--forward", "ftp://h:1"], /upstream scheme/],
      [["--listen", "socks5://127.0.0.1:0", "--max-conns", "x"], /--max-conns/],
      [["--listen", "socks5://127.0.0.1:0", "--prefer-ipv4", "--prefer-ipv6"], /exclusive/],
    ] as const
  ) {
    const r = await seaprox([...args]);
    assertEquals(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assertEquals(r.stderr.trim().split("\n").length, 1, r.stderr);
    assertMatch(r.stderr, re);
  }
});

Deno.test("seaprox service: busy port exits 1 with one line", async () => {
  const busy = listenLocal();
  try {
    const r = await seaprox(["--listen", `socks5://127.0.0.1:${busy.addr.port}`]);
    assertEquals(r.code, 1, r.stderr);
    const lines = r.stderr.trim().split("\n");
    assertEquals(lines.length, 1, r.stderr);
    assertMatch(lines[0], /already in use/);
  } finally {
    busy.close();
  }
});

Deno.test("seaprox service: SIGTERM and SIGINT stop it with exit 0", async () => {
  for (const sig of ["SIGTERM", "SIGINT"] as const) {
    const sp = await startSeaproxService(["socks5://127.0.0.1:0", "http://127.0.0.1:0"]);
    assertEquals(await sp.stop(sig), 0);
    assert(sp.lines.some((l) => /msg="stopped"/.test(l)), sp.lines.join("\n"));
  }
});

Deno.test("seaprox service: --max-conns closes the connection over the limit", async () => {
  const hold = rawServer((c) => c.read(new Uint8Array(1)).then(() => {}));
  const sp = await startSeaproxService(
    [`static://127.0.0.1:0?to=127.0.0.1:${hold.port}`, "socks5://127.0.0.1:0"],
    ["--max-conns", "2"],
  );
  const held: Deno.TcpConn[] = [];
  try {
    held.push(await dial("127.0.0.1", portFor(sp, "static")));
    held.push(await dial("127.0.0.1", portFor(sp, "static")));
    await waitUntil(() => hold.accepted === 2);
    // The limit is global: the third connection, on another listener, is refused.
    const extra = await dial("127.0.0.1", portFor(sp, "socks5"));
    assertEquals(await readWithin(extra, new Uint8Array(1), "the over-limit close"), null);
    extra.close();
    await sp.waitFor(/end=limit/);
  } finally {
    for (const c of held) closeQuietly(c);
    assertEquals(await sp.stop(), 0);
    await hold.close();
  }
});

Deno.test("seaprox service: --idle-timeout and --handshake-timeout close silent peers", async () => {
  const hold = rawServer((c) => c.read(new Uint8Array(1)).then(() => {}));
  const sp = await startSeaproxService(
    [
      `static://127.0.0.1:0?to=127.0.0.1:${hold.port}`,
      "socks5://127.0.0.1:0",
      "http://127.0.0.1:0",
    ],
    ["--idle-timeout", "300", "--handshake-timeout", "300"],
  );
  try {
    const c = await dial("127.0.0.1", portFor(sp, "static"));
    assertEquals(await readWithin(c, new Uint8Array(1), "the idle close"), null);
    c.close();
    await sp.waitFor(/end=idle/);
    const s = await dial("127.0.0.1", portFor(sp, "socks5"));
    assertEquals(await readWithin(s, new Uint8Array(1), "the SOCKS handshake-timeout close"), null);
    s.close();
    await sp.waitFor(/end=handshake-timeout/);
    const h = await dial("127.0.0.1", portFor(sp, "http"));
    await h.write(new TextEncoder().encode("GET http://x/ HTTP/1.1\r\n")); // and then nothing
    assertEquals(await readWithin(h, new Uint8Array(1), "the HTTP handshake-timeout close"), null);
    h.close();
    await sp.waitFor(/listener=http .*end=handshake-timeout/);
  } finally {
    assertEquals(await sp.stop(), 0);
    await hold.close();
  }
});

Deno.test("seaprox service: --metrics exports connections, bytes and errors by reason", async () => {
  const hold = rawServer(async (c) => {
    await c.write(new TextEncoder().encode("hi"));
    await readAll(c); // until the client leaves
  });
  const sp = await startSeaproxService(
    [`static://127.0.0.1:0?to=127.0.0.1:${hold.port}`, "socks5://127.0.0.1:0"],
    ["--metrics", "127.0.0.1:0"],
  );
  try {
    const line = await sp.waitFor(/msg="metrics listening"/);
    const metricsAddr = /addr=(\S+)/.exec(line)![1];
    const c = await dial("127.0.0.1", portFor(sp, "static"));
    const buf = new Uint8Array(8);
    assertEquals(await askAfterEof(c, ""), "hi");
    c.close();
    const bad = await dial("127.0.0.1", portFor(sp, "socks5"));
    await bad.write(new Uint8Array([3, 1, 0, 80])); // neither SOCKS4 nor SOCKS5: garbage
    while ((await readWithin(bad, buf, "seaprox closing a garbage handshake")) !== null) {
      // until seaprox closes
    }
    bad.close();
    await sp.waitFor(/end=handshake-failed/);
    await sp.waitFor(/end=done/);
    // The log line comes just before the metrics hook runs: poll until the scrape agrees.
    let text = "";
    for (let i = 0; i < 100; i++) {
      text = await (await fetch(`http://${metricsAddr}/metrics`)).text();
      if (/seaprox_connections_active 0/.test(text)) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assertMatch(text, /seaprox_connections_total\{listener="static"\} 1/);
    assertMatch(text, /seaprox_connections_active 0/);
    assertMatch(text, /seaprox_bytes_out_total 2/);
    assertMatch(text, /seaprox_errors_total\{reason="handshake-failed:bad-version"\} 1/);
    // /status lists live connections with their sides' states and byte counts.
    const held = await dial("127.0.0.1", portFor(sp, "static"));
    try {
      // relayed: "hi" arrived
      assertEquals((await readWithin(held, buf, "the relayed greeting")) !== null, true);
      const status = await (await fetch(`http://${metricsAddr}/status`)).json();
      assertEquals(status.listeners.length, 2);
      const live = status.connections.find((c: { scheme: string }) => c.scheme === "static");
      assertEquals(live.dest, "connected");
      assertEquals(live.bytesDown, 2);
      assertMatch(live.description, /^static\[ipv4\[127\.0\.0\.1:\d+\]->ipv4\[/);
    } finally {
      held.close();
    }
  } finally {
    assertEquals(await sp.stop(), 0);
    await hold.close();
  }
});

Deno.test("seaprox service: listeners (with credentials) from SEAPROX_LISTEN", async () => {
  const sp = await startService("seaprox.ts", ["--prefer-ipv4"], {
    readyCount: 2,
    env: { SEAPROX_LISTEN: "socks5://u:secret@127.0.0.1:0 http://127.0.0.1:0" },
  });
  try {
    assert(sp.addrs.has("socks5") && sp.addrs.has("http"));
    assert(!sp.lines.some((l) => l.includes("secret")), "the password must never be logged");
  } finally {
    assertEquals(await sp.stop(), 0);
  }
});

Deno.test("seaprox service: SIGTERM stops accepting but lets a live relay finish", async () => {
  const echo = echoAfterEofServer();
  const sp = await startSeaproxService(
    [`static://127.0.0.1:0?to=127.0.0.1:${echo.port}`],
    ["--drain-timeout", "20000"],
  );
  try {
    const port = portFor(sp, "static");
    const c = await dial("127.0.0.1", port);
    try {
      await waitUntil(() => echo.accepted === 1);
      sp.child.kill("SIGTERM");
      await sp.waitFor(/msg="shutting down"/);
      // The live connection still completes its exchange after the signal.
      assertEquals(await askAfterEof(c, "late"), "got 4: late");
    } finally {
      closeQuietly(c);
    }
    // It exits by itself once the last relay is done (no second signal needed).
    assertEquals((await within(sp.child.status, "seaprox to exit after its last relay")).code, 0);
    const refused = await dial("127.0.0.1", port).then((x) => (x.close(), false), () => true);
    assert(refused, "the listener must be closed after shutdown");
  } finally {
    await sp.stop();
    await echo.close();
  }
});
