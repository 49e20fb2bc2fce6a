import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { Logger } from "../lib/log.ts";
import { dial } from "../lib/net/mod.ts";
import {
  type AddressProxyType,
  ConnectionTable,
  describeEndpoint,
  directDialer,
  httpProxy,
  ProxyConnection,
  type ProxyConnectionRecord,
  ProxySide,
  serveProxy,
  staticProxy,
} from "../lib/proxy/mod.ts";
import { listenLocal, readAll, within } from "./_util.ts";
import { encodeProxyHeader } from "../lib/proxyproto/mod.ts";
import { askAfterEof, echoAfterEofServer, rawServer, readHttpHead, waitUntil } from "./_seaprox.ts";

function capture(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  return { log: new Logger("debug", { svc: "test" }, (l) => lines.push(l)), lines };
}

Deno.test("proxy model: sides move forward only, descriptions like the seed's", () => {
  const s = new ProxySide("dest");
  assertEquals(s.state, "idle");
  s.transition("connecting");
  s.transition("connected");
  assertThrows(() => s.transition("connecting"));
  s.transition("closed");
  s.transition("closed");
  assertEquals(describeEndpoint({ host: "1.2.3.4", port: 3234 }), "ipv4[1.2.3.4:3234]");
  assertEquals(describeEndpoint({ host: "::1", port: 80 }), "ipv6[[::1]:80]");
  assertEquals(describeEndpoint({ host: "example.org", port: 80 }), "name[example.org:80]");
  assertEquals(
    describeEndpoint({ transport: "tcp", hostname: "127.0.0.1", port: 5 }),
    "ipv4[127.0.0.1:5]",
  );
});

Deno.test("proxy model: a connection's description names the peer, the asked and the reached end", () => {
  const peer: Deno.NetAddr = { transport: "tcp", hostname: "127.0.0.1", port: 4242 };
  const reached: Deno.NetAddr = { transport: "tcp", hostname: "127.0.0.1", port: 80 };
  const named = new ProxyConnection(1, "socks5", peer);
  assertEquals(named.description, "socks5[ipv4[127.0.0.1:4242]->-]");
  named.connecting({ host: "localhost", port: 80 });
  assertEquals(named.dest.description, "name[localhost:80]");
  named.connected(reached);
  assertEquals(
    named.description,
    "socks5[ipv4[127.0.0.1:4242]->name[localhost:80]=ipv4[127.0.0.1:80]]",
  );
  // A second destination (HTTP keep-alive) is a new side, described afresh.
  named.connecting({ host: "127.0.0.1", port: 80 });
  named.connected(reached);
  assertEquals(named.dest.description, "ipv4[127.0.0.1:80]");
  const textual = new ProxyConnection(2, "http", "203.0.113.7:4242");
  assertEquals(textual.source.description, "203.0.113.7:4242");
  const side = new ProxySide("dest", () => "made");
  assertEquals(side.description, "made");
  side.describeEndpointLater({ host: "::1", port: 8 });
  assertEquals(side.description, "ipv6[[::1]:8]");
});

Deno.test("proxy static: half-close relayed, one log line with bytes and end reason", async () => {
  const origin = echoAfterEofServer();
  const { log, lines } = capture();
  const records: ProxyConnectionRecord[] = [];
  const p = serveProxy(listenLocal(), staticProxy({ host: "127.0.0.1", port: origin.port }), {
    dialer: directDialer({ prefer: "ipv4" }),
    log,
    hooks: { onClose: (r) => records.push(r) },
  });
  try {
    const c = await dial("127.0.0.1", p.addr.port);
    assertEquals(await askAfterEof(c, "ping"), "got 4: ping");
    c.close();
    await waitUntil(() => records.length === 1);
    const r = records[0];
    assertEquals(r.end, "done");
    assertEquals(r.bytesUp, 4);
    assertEquals(r.bytesDown, 11);
    assert(/^static\[ipv4\[127\.0\.0\.1:\d+\]->ipv4\[127\.0\.0\.1:\d+\]\]$/.test(r.description));
    const closed = lines.filter((l) => l.includes(`msg="connection closed"`));
    assertEquals(closed.length, 1);
    assert(/end=done .*up=4 down=11 ms=\d+/.test(closed[0]), closed[0]);
  } finally {
    await p.stop();
    await origin.close();
  }
});

Deno.test("proxy static: refused destination closes the client, failure=refused logged", async () => {
  const l = listenLocal();
  const deadPort = l.addr.port;
  l.close();
  const { log, lines } = capture();
  const records: ProxyConnectionRecord[] = [];
  const p = serveProxy(listenLocal(), staticProxy({ host: "127.0.0.1", port: deadPort }), {
    dialer: directDialer(),
    log,
    hooks: { onClose: (r) => records.push(r) },
  });
  try {
    const c = await dial("127.0.0.1", p.addr.port);
    assertEquals((await readAll(c)).length, 0);
    c.close();
    await waitUntil(() => records.length === 1);
    assertEquals(records[0].end, "dial-failed");
    assertEquals(records[0].failure, "refused");
    assert(lines.some((x) => /end=dial-failed failure=refused/.test(x)));
  } finally {
    await p.stop();
  }
});

Deno.test("proxy limits: a shared table caps connections across listeners", async () => {
  const hold = rawServer((c) => c.read(new Uint8Array(1)).then(() => {}));
  const table = new ConnectionTable(2);
  const records: ProxyConnectionRecord[] = [];
  const opts = {
    dialer: directDialer(),
    table,
    hooks: { onClose: (r: ProxyConnectionRecord) => records.push(r) },
  };
  const to = { host: "127.0.0.1", port: hold.port };
  const a = serveProxy(listenLocal(), staticProxy(to), opts);
  const b = serveProxy(listenLocal(), staticProxy(to), opts);
  try {
    const held = [await dial("127.0.0.1", a.addr.port), await dial("127.0.0.1", b.addr.port)];
    await waitUntil(() => table.size === 2 && hold.accepted === 2);
    const extra = await dial("127.0.0.1", b.addr.port);
    assertEquals(
      await within(extra.read(new Uint8Array(1)), "the over-limit connection's close"),
      null,
    );
    extra.close();
    await waitUntil(() => records.length === 1);
    assertEquals(records[0].end, "limit");
    for (const c of held) c.close();
    await waitUntil(() => table.size === 0);
  } finally {
    await a.stop();
    await b.stop();
    await hold.close();
  }
});

Deno.test("proxy limits: idle timeout closes a silent relayed connection", async () => {
  const hold = rawServer((c) => c.read(new Uint8Array(1)).then(() => {}));
  const records: ProxyConnectionRecord[] = [];
  const p = serveProxy(listenLocal(), staticProxy({ host: "127.0.0.1", port: hold.port }), {
    dialer: directDialer(),
    idleTimeoutMs: 150,
    hooks: { onClose: (r) => records.push(r) },
  });
  try {
    const c = await dial("127.0.0.1", p.addr.port);
    assertEquals(await within(c.read(new Uint8Array(1)), "the idle connection's close"), null);
    c.close();
    await waitUntil(() => records.length === 1);
    assertEquals(records[0].end, "idle");
  } finally {
    await p.stop();
    await hold.close();
  }
});

Deno.test("proxy limits: handshake timeout closes a silent client", async () => {
  const waitForever: AddressProxyType = {
    kind: "address",
    scheme: "test",
    handshake: async (conn) => {
      await conn.read(new Uint8Array(16));
      throw new Error("unreachable in this test");
    },
  };
  const records: ProxyConnectionRecord[] = [];
  const p = serveProxy(listenLocal(), waitForever, {
    dialer: directDialer(),
    handshakeTimeoutMs: 150,
    hooks: { onClose: (r) => records.push(r) },
  });
  try {
    const c = await dial("127.0.0.1", p.addr.port);
    assertEquals(await within(c.read(new Uint8Array(1)), "the silent client's close"), null);
    c.close();
    await waitUntil(() => records.length === 1);
    assertEquals(records[0].end, "handshake-timeout");
  } finally {
    await p.stop();
  }
});

Deno.test("proxy limits: a static listener that expects a PROXY header still times it out", async () => {
  // A static type reads nothing and runs without a handshake timer, unless a PROXY header must
  // come first: a client that never sends it is cut at the handshake timeout.
  const origin = echoAfterEofServer();
  const records: ProxyConnectionRecord[] = [];
  const p = serveProxy(listenLocal(), staticProxy({ host: "127.0.0.1", port: origin.port }), {
    dialer: directDialer({ prefer: "ipv4" }),
    acceptProxyProtocol: () => true,
    handshakeTimeoutMs: 150,
    hooks: { onClose: (r) => records.push(r) },
  });
  try {
    const c = await dial("127.0.0.1", p.addr.port);
    // Without the timer the proxy would wait for the header forever: the bound fails the test
    // (naming it) instead of hanging the suite.
    const got = await within(c.read(new Uint8Array(1)), "the silent client to be cut")
      .finally(() => c.close());
    assertEquals(got, null, "the silent client is cut");
    await waitUntil(() => records.length === 1);
    assertEquals(records[0].end, "handshake-timeout");
    assertEquals(origin.accepted, 0);
  } finally {
    await p.stop();
    await origin.close();
  }
});

Deno.test("proxy http: a PROXY header before CONNECT names the client; an untrusted peer's is refused", async () => {
  // The session path (HTTP) reads the PROXY header as the address path does: its claimed client
  // is the record's source, the CONNECT after it is answered and relayed with half-close.
  const origin = echoAfterEofServer();
  const records: ProxyConnectionRecord[] = [];
  let trusted = true;
  const p = serveProxy(listenLocal(), httpProxy(), {
    dialer: directDialer({ prefer: "ipv4" }),
    acceptProxyProtocol: () => trusted,
    hooks: { onClose: (r) => records.push(r) },
  });
  const enc = new TextEncoder();
  const header = encodeProxyHeader(
    2,
    { host: "203.0.113.7", port: 4242 },
    { host: "127.0.0.1", port: p.addr.port },
  );
  try {
    const c = await dial("127.0.0.1", p.addr.port);
    const dest = `127.0.0.1:${origin.port}`;
    await c.write(
      new Uint8Array([
        ...header,
        ...enc.encode(`CONNECT ${dest} HTTP/1.1\r\nHost: ${dest}\r\n\r\n`),
      ]),
    );
    const head = await readHttpHead(c);
    assert(head.startsWith("HTTP/1.1 200"), head);
    assertEquals(await askAfterEof(c, "ping"), "got 4: ping");
    c.close();
    await waitUntil(() => records.length === 1);
    assertEquals(records[0].end, "done");
    assert(
      records[0].description.startsWith("http[ipv4[203.0.113.7:4242]->"),
      records[0].description,
    );

    trusted = false;
    const u = await dial("127.0.0.1", p.addr.port);
    await u.write(header);
    assertEquals(await within(u.read(new Uint8Array(16)), "the refusal's close"), null);
    u.close();
    await waitUntil(() => records.length === 2);
    assertEquals(records[1].end, "handshake-failed");
    assertEquals(records[1].failure, "untrusted-proxy-header");
    assertEquals(origin.accepted, 1);
  } finally {
    await p.stop();
    await origin.close();
  }
});
