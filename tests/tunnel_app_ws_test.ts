/**
 * WebSocket pass-through of the embeddable front (createTunnelApp mounted in Deno.serve):
 * a WebSocket app behind a tunnel client, reached with Deno's WebSocket client, curl and
 * headless chromium.
 */
import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { blockStream, blockStreamSha256, within } from "./_util.ts";
import { startClient, startHonoTunnel } from "./_tunnel.ts";
import { withBrowser } from "./_status.ts";
import type { TunnelAppOptions } from "../lib/tunnel/mod.ts";
import { webSocketAccept, WsConn } from "../lib/transport/mod.ts";
import { BufferedReader, closeQuietly, writeAll } from "../lib/net/mod.ts";
import { readRequestHead, readResponseHead } from "../lib/http/mod.ts";
import { createHash } from "node:crypto";

interface CloseSeen {
  code: number;
  reason: string;
}

/**
 * The local WebSocket app. `/echo` echoes every message as it came (text as text, binary as
 * binary); the text `close:<code>:<reason>` makes it close. `/hello` sends the request it
 * saw (target, headers, chosen protocol) as its first message; it picks "chat.v2" when
 * offered. `/forbidden` refuses with 403. Close events it receives are kept in `closes`.
 */
function startWsApp() {
  const closes: CloseSeen[] = [];
  let closeWaiters: (() => void)[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const url = new URL(req.url);
    if (url.pathname === "/forbidden") {
      return new Response("no entry\n", { status: 403, headers: { "x-why": "test" } });
    }
    const offered = (req.headers.get("sec-websocket-protocol") ?? "").split(",").map((s) =>
      s.trim()
    );
    const protocol = offered.includes("chat.v2") ? "chat.v2" : undefined;
    // The request is gone after the upgrade: take what /hello reports now.
    const seen = JSON.stringify({
      target: url.pathname + url.search,
      headers: Object.fromEntries(req.headers),
      protocol: protocol ?? "",
    });
    const { socket, response } = Deno.upgradeWebSocket(req, protocol ? { protocol } : {});
    response.headers.append("set-cookie", "app=1");
    socket.binaryType = "arraybuffer";
    socket.onclose = (e) => {
      closes.push({ code: e.code, reason: e.reason });
      const w = closeWaiters;
      closeWaiters = [];
      for (const f of w) f();
    };
    if (url.pathname === "/hello") {
      socket.onopen = () => socket.send(seen);
    }
    socket.onmessage = (e) => {
      const m = /^close:(\d+):(.*)$/.exec(typeof e.data === "string" ? e.data : "");
      if (m) socket.close(Number(m[1]), m[2]);
      else socket.send(e.data);
    };
    return response;
  });
  return {
    port: server.addr.port,
    closes,
    /** Resolves once the app has seen `n` closes (fails after `within`'s bound). */
    closed: (n: number) =>
      closes.length >= n ? Promise.resolve() : within(
        new Promise<void>((r) => {
          const check = () => closes.length >= n ? r() : closeWaiters.push(check);
          closeWaiters.push(check);
        }),
        () => `the app to see ${n} WebSocket closes (seen ${closes.length})`,
      ),
    close: () => server.shutdown(),
  };
}

/**
 * A WebSocket client whose messages can be awaited one by one; every wait (open, message,
 * close) fails after `within`'s bound, naming the URL.
 */
class TestSocket {
  readonly ws: WebSocket;
  #url: string;
  #queue: (string | ArrayBuffer)[] = [];
  #waiters: (() => void)[] = [];
  #opened: Promise<void>;
  #closed: Promise<CloseEvent>;

  constructor(url: string, protocols: string[] = [], headers: Record<string, string> = {}) {
    this.#url = url;
    // Deno's WebSocket takes request headers in its options object.
    const opts = { protocols, headers } as unknown as string[];
    this.ws = new WebSocket(url, opts);
    this.ws.binaryType = "arraybuffer";
    this.#opened = new Promise((resolve, reject) => {
      this.ws.onopen = () => resolve();
      this.ws.onerror = (e) => reject(new Error(`websocket error: ${(e as ErrorEvent).message}`));
    });
    this.#closed = new Promise((resolve) => {
      this.ws.addEventListener("close", (e) => {
        resolve(e);
        this.#wake();
      });
    });
    this.ws.onmessage = (e) => {
      this.#queue.push(e.data);
      this.#wake();
    };
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }

  /** Resolves once the handshake is done. */
  opened(): Promise<void> {
    return within(this.#opened, `WebSocket ${this.#url} to open`);
  }

  /** The close event, once the socket is closed. */
  closed(): Promise<CloseEvent> {
    return within(this.#closed, `WebSocket ${this.#url} to close`);
  }

  /** The next message (throws if the socket closes first). */
  next(): Promise<string | ArrayBuffer> {
    return within(
      (async () => {
        while (this.#queue.length === 0) {
          if (this.ws.readyState === WebSocket.CLOSED) throw new Error("socket closed");
          await new Promise<void>((r) => this.#waiters.push(r));
        }
        return this.#queue.shift()!;
      })(),
      `a message on WebSocket ${this.#url}`,
    );
  }
}

/**
 * A raw HTTP/1.1 request over TCP: status, head, and the body (up to its Content-Length or
 * the close; a 30 s guard closes a connection that hangs, and the assertions then fail).
 */
async function rawRequest(
  port: number,
  path: string,
  headers: Record<string, string>,
): Promise<{ status: number; head: string; body: string }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const timer = setTimeout(() => conn.close(), 30_000);
  try {
    const lines = Object.entries({ host: `127.0.0.1:${port}`, ...headers })
      .map(([k, v]) => `${k}: ${v}\r\n`).join("");
    await conn.write(new TextEncoder().encode(`GET ${path} HTTP/1.1\r\n${lines}\r\n`));
    let text = "";
    const buf = new Uint8Array(65536);
    const dec = new TextDecoder();
    try {
      while (true) {
        const n = await conn.read(buf);
        if (n === null) break;
        text += dec.decode(buf.subarray(0, n), { stream: true });
        const i = text.indexOf("\r\n\r\n");
        const m = /content-length: *(\d+)/i.exec(text);
        if (i >= 0 && m && text.length - i - 4 >= Number(m[1])) break;
      }
    } catch {
      // Closed by the guard: what came is the answer the assertions judge.
    }
    const i = text.indexOf("\r\n\r\n");
    const head = i >= 0 ? text.slice(0, i) : text;
    return { status: Number(head.split(" ")[1]), head, body: i >= 0 ? text.slice(i + 4) : "" };
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }
}

const wsKey = "dGhlIHNhbXBsZSBub25jZQ==";
const wsHeaders = {
  connection: "Upgrade",
  upgrade: "websocket",
  "sec-websocket-version": "13",
  "sec-websocket-key": wsKey,
};

/** App, tunnel front and a connected client; torn down by `stop()`. */
async function setup(id: string, localPort?: number, opts: TunnelAppOptions = {}) {
  const app = startWsApp();
  const t = startHonoTunnel({ app: opts });
  await t.server.addHost("127.0.0.1", id);
  const c = startClient({
    server: t.url,
    identifier: id,
    local: { host: "127.0.0.1", port: localPort ?? app.port },
  });
  await c.connected();
  return {
    app,
    t,
    wsUrl: `ws://127.0.0.1:${t.port}`,
    stop: async () => {
      await c.stop();
      await t.close();
      await app.close();
    },
  };
}

/**
 * curl's response head for `args` (a WebSocket upgrade it then holds open): read until the head
 * ends, then curl is stopped. Bounded, not timed: a slow box only makes it wait longer.
 */
async function curlHead(args: string[]): Promise<string> {
  const child = new Deno.Command("curl", {
    args: ["-sS", "--include", "--no-buffer", ...args],
    stdout: "piped",
    stderr: "null",
    stdin: "null",
  }).spawn();
  let text = "";
  try {
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    await within(
      (async () => {
        while (!text.includes("\r\n\r\n")) {
          const { value, done } = await reader.read();
          if (done) break;
          text += value;
        }
      })(),
      () => `curl's response head (so far: ${JSON.stringify(text)})`,
    );
    await reader.cancel();
  } finally {
    try {
      child.kill("SIGTERM");
    } catch {
      // Exited already (the head came with an end).
    }
    await child.status;
  }
  return text.slice(0, text.indexOf("\r\n\r\n") + 4);
}

Deno.test("tunnel app websocket: handshake headers, subprotocol, text and binary echo, 16 MiB by SHA-256", async () => {
  const s = await setup("identifier-app-ws-echo-01");
  try {
    const ws = new TestSocket(`${s.wsUrl}/hello?q=1&r=two`, ["chat.v1", "chat.v2"], {
      cookie: "session=abc",
      authorization: "Bearer tok",
      origin: "http://origin.test",
    });
    await ws.opened();
    assertEquals(ws.ws.protocol, "chat.v2");
    const seen = JSON.parse(await ws.next() as string) as {
      target: string;
      headers: Record<string, string>;
      protocol: string;
    };
    assertEquals(seen.target, "/hello?q=1&r=two");
    assertEquals(seen.protocol, "chat.v2");
    const h = seen.headers;
    assertEquals(h["cookie"], "session=abc");
    assertEquals(h["authorization"], "Bearer tok");
    assertEquals(h["origin"], "http://origin.test");
    assertEquals(h["sec-websocket-protocol"], "chat.v1, chat.v2");
    assertEquals(h["x-forwarded-for"], "127.0.0.1");
    assertEquals(h["x-forwarded-proto"], "http");
    assertEquals(h["host"], `127.0.0.1:${s.t.port}`);
    assertEquals(h["x-forwarded-host"], `127.0.0.1:${s.t.port}`);
    assert(h["sec-websocket-extensions"] === undefined, "no extension offered to the app");

    // Text stays text (UTF-8 intact), binary stays binary.
    ws.ws.send("héllo wörld ✓");
    assertEquals(await ws.next(), "héllo wörld ✓");
    ws.ws.send(new Uint8Array([0, 1, 2, 255]));
    const bin = await ws.next();
    assert(bin instanceof ArrayBuffer, "binary echo must be binary");
    assertEquals([...new Uint8Array(bin)], [0, 1, 2, 255]);
    ws.ws.send("");
    assertEquals(await ws.next(), "");

    // 16 MiB as 256 binary messages of 64 KiB, compared by SHA-256; then one 3 MiB
    // message (fragmented towards the app: frames carry at most 1 MiB).
    const total = 16 * 1024 * 1024;
    const piece = 64 * 1024;
    let sent = 0;
    for (const block of blockStream(total, 7)) {
      for (let o = 0; o < block.length; o += piece) {
        ws.ws.send(block.slice(o, o + piece));
        sent++;
      }
    }
    const hash = createHash("sha256");
    let got = 0;
    for (let i = 0; i < sent; i++) {
      const m = await ws.next();
      assert(m instanceof ArrayBuffer, "binary message expected");
      assertEquals(m.byteLength, piece);
      hash.update(new Uint8Array(m));
      got += m.byteLength;
    }
    assertEquals(got, total);
    assertEquals(hash.digest("hex"), blockStreamSha256(total, 7));
    const big = new Uint8Array(3 * 1024 * 1024 + 5);
    for (const [i, b] of [...blockStream(big.length, 3)].entries()) big.set(b, i * (1 << 20));
    ws.ws.send(big);
    const bigBack = await ws.next();
    assert(bigBack instanceof ArrayBuffer, "binary message expected");
    assertEquals(bigBack.byteLength, big.length);
    assertEquals(
      createHash("sha256").update(new Uint8Array(bigBack)).digest("hex"),
      createHash("sha256").update(big).digest("hex"),
    );

    // The client closes with its own code: the app sees the same code and reason.
    ws.ws.close(4002, "bye from client");
    const ev = await ws.closed();
    assertEquals(ev.code, 4002);
    await s.app.closed(1);
    assertEquals(s.app.closes[0], { code: 4002, reason: "bye from client" });
  } finally {
    await s.stop();
  }
});

Deno.test("tunnel app websocket: the app's close code reaches the client; a client close without code", async () => {
  const s = await setup("identifier-app-ws-close-02");
  try {
    const a = new TestSocket(`${s.wsUrl}/echo`);
    await a.opened();
    a.ws.send("close:4001:bye from app");
    const ev = await a.closed();
    assertEquals([ev.code, ev.reason], [4001, "bye from app"]);
    await s.app.closed(1);
    assertEquals(s.app.closes[0].code, 4001); // the app's own close, answered

    const b = new TestSocket(`${s.wsUrl}/echo`);
    await b.opened();
    b.ws.send("close:1001:going away");
    const ev2 = await b.closed();
    assertEquals([ev2.code, ev2.reason], [1001, "going away"]);

    const c = new TestSocket(`${s.wsUrl}/echo`);
    await c.opened();
    c.ws.close();
    await c.closed();
    await s.app.closed(3);
    assertEquals(s.app.closes[2].code, 1005); // no status in the client's Close: none sent on
  } finally {
    await s.stop();
  }
});

Deno.test("tunnel app websocket: refusal passes through, app down is 502, other Upgrades 501, bad handshake 400, curl sees a valid 101", async () => {
  const s = await setup("identifier-app-ws-refuse-03");
  try {
    const refused = await rawRequest(s.t.port, "/forbidden", wsHeaders);
    assertEquals(refused.status, 403);
    assertMatch(refused.head, /x-why: test/i);
    assertEquals(refused.body, "no entry\n");

    const h2c = await rawRequest(s.t.port, "/echo", {
      connection: "Upgrade, HTTP2-Settings",
      upgrade: "h2c",
      "http2-settings": "AAMAAABkAARAAAAAAAIAAAAA",
    });
    assertEquals(h2c.status, 501);
    assertMatch(h2c.body, /h2c.*only WebSocket/);

    const noKey = await rawRequest(s.t.port, "/echo", {
      connection: "Upgrade",
      upgrade: "websocket",
      "sec-websocket-version": "13",
    });
    assertEquals(noKey.status, 400);

    // curl as an outside peer of the handshake: a 101 with the Accept for its key, the
    // app's subprotocol choice and its Set-Cookie.
    const head = await curlHead([
      "-H",
      "Connection: Upgrade",
      "-H",
      "Upgrade: websocket",
      "-H",
      "Sec-WebSocket-Version: 13",
      "-H",
      `Sec-WebSocket-Key: ${wsKey}`,
      "-H",
      "Sec-WebSocket-Protocol: chat.v2",
      `http://127.0.0.1:${s.t.port}/echo`,
    ]);
    assertMatch(head, /^HTTP\/1\.1 101/);
    const accept = (await webSocketAccept(wsKey)).replace(/[+/=]/g, (c) => `\\${c}`);
    assertMatch(head, new RegExp(`sec-websocket-accept: ${accept}\r`, "i"));
    assertMatch(head, /sec-websocket-protocol: chat\.v2/i);
    assertMatch(head, /set-cookie: app=1/i);
  } finally {
    await s.stop();
  }
  // A client whose local app is not listening: 502 with the page naming the host.
  const dead = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const deadPort = dead.addr.port;
  dead.close();
  const d = await setup("identifier-app-ws-down-04", deadPort);
  try {
    const down = await rawRequest(d.t.port, "/echo", wsHeaders);
    assertEquals(down.status, 502);
    assertMatch(down.body, /127\.0\.0\.1/);
  } finally {
    await d.stop();
  }
});

Deno.test({
  name: "tunnel app websocket: headless chromium through the tunnel (subprotocol, echo, close)",
  fn: async () => {
    const s = await setup("identifier-app-ws-chrome-05");
    try {
      const session = withBrowser(async (browser) => {
        const page = await browser.newPage();
        return await page.evaluate(async (url: string) => {
          const ws = new WebSocket(url, ["chat.v1", "chat.v2"]);
          ws.binaryType = "arraybuffer";
          const msgs: (string | number[])[] = [];
          const done = new Promise<{ code: number; reason: string }>((resolve, reject) => {
            ws.onerror = () => reject(new Error("websocket error"));
            ws.onmessage = (e) => {
              msgs.push(typeof e.data === "string" ? e.data : [...new Uint8Array(e.data)]);
              if (msgs.length === 2) ws.send("close:4003:done");
            };
            ws.onclose = (e) => resolve({ code: e.code, reason: e.reason });
          });
          await new Promise((r) => ws.onopen = r);
          const protocol = ws.protocol;
          ws.send("from chromium");
          ws.send(new Uint8Array([9, 8, 7]));
          const closed = await done;
          return { protocol, msgs, closed };
        }, `${s.wsUrl}/echo`);
      });
      // Generous: chromium's start alone takes seconds on a loaded box.
      const result = await within(session, "chromium's WebSocket session to close", 120_000);
      assertEquals(result.protocol, "chat.v2");
      assertEquals(result.msgs, ["from chromium", [9, 8, 7]]);
      assertEquals(result.closed, { code: 4003, reason: "done" });
    } finally {
      await s.stop();
    }
  },
});

/**
 * A raw-TCP WebSocket app that accepts the handshake and then never reads: the public
 * client's messages can only pile up in front of it.
 */
function startDeafApp() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const done = (async () => {
    for await (const conn of listener) {
      conns.push(conn);
      const head = await readRequestHead(new BufferedReader(conn)).catch(() => null);
      const key = head?.headers.find(([k]) => k.toLowerCase() === "sec-websocket-key")?.[1];
      if (!key) {
        closeQuietly(conn);
        continue;
      }
      await writeAll(
        conn,
        new TextEncoder().encode(
          "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
            `Sec-WebSocket-Accept: ${await webSocketAccept(key)}\r\n\r\n`,
        ),
      ).catch(() => {});
    }
  })();
  return {
    port: listener.addr.port,
    conns,
    close: async () => {
      listener.close();
      for (const c of conns) closeQuietly(c);
      await done;
    },
  };
}

Deno.test("tunnel app websocket: a slow side is not buffered without bound (both directions)", async () => {
  // App → public client that never reads: the app can hand over only what the socket
  // buffers, the mux window and the bridge's high-water mark hold, not the 256 MiB it offers.
  const app = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    const block = new Uint8Array(1 << 20);
    socket.onopen = async () => {
      for (let i = 0; i < 256 && socket.readyState === WebSocket.OPEN; i++) {
        socket.send(block);
        flooded += block.length;
        while (socket.bufferedAmount > 0 && socket.readyState === WebSocket.OPEN) {
          await new Promise((r) => setTimeout(r, 5));
        }
      }
    };
    return response;
  });
  let flooded = 0;
  const deaf = startDeafApp();
  const t = startHonoTunnel({ app: { webSocket: { maxQueuedBytes: 4 * 1024 * 1024 } } });
  await t.server.addHost("127.0.0.1", "identifier-app-ws-slow-06");
  const c = startClient({
    server: t.url,
    identifier: "identifier-app-ws-slow-06",
    local: { host: "127.0.0.1", port: app.addr.port },
    allowPorts: [deaf.port],
  });
  const raw = await Deno.connect({ hostname: "127.0.0.1", port: t.port });
  try {
    await c.connected();
    await writeAll(
      raw,
      new TextEncoder().encode(
        `GET /flood HTTP/1.1\r\nHost: 127.0.0.1:${t.port}\r\nConnection: Upgrade\r\n` +
          `Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${wsKey}\r\n\r\n`,
      ),
    );
    // The public client reads nothing more; give the app time to push what it can.
    let last = -1;
    for (let i = 0; i < 40 && flooded !== last; i++) {
      last = flooded;
      await new Promise((r) => setTimeout(r, 250));
    }
    assert(flooded < 96 * 1024 * 1024, `app handed over ${flooded} bytes to a client not reading`);

    // Public client → app that never reads: the bridge's queue is bounded (4 MiB here), the
    // public client is closed with 1013. A raw connection, so the Host header (which selects
    // the deaf app's port) is exactly ours: Deno's WebSocket client sent its own Host too, and
    // which one counted varied between runs (the request then went to the flooding app).
    const pub = await Deno.connect({ hostname: "127.0.0.1", port: t.port });
    try {
      await writeAll(
        pub,
        new TextEncoder().encode(
          `GET / HTTP/1.1\r\nHost: 127.0.0.1:${deaf.port}\r\nConnection: Upgrade\r\n` +
            `Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${wsKey}\r\n\r\n`,
        ),
      );
      const reader = new BufferedReader(pub);
      const head = await within(readResponseHead(reader), "the answer to the deaf app's upgrade");
      assertEquals(head.status, 101);
      const ws = new WsConn(pub, { role: "client", prefix: reader.takeBuffered() });
      let closeCode: number | undefined;
      let ended = false;
      const watch = (async () => {
        try {
          for (let m = await ws.readMessage(1 << 20); m; m = await ws.readMessage(1 << 20)) {
            if (m.type === "close") {
              closeCode = m.code;
              break;
            }
          }
        } catch {
          // Reset while we still send: also an end.
        }
        ended = true;
        closeQuietly(pub); // a write blocked on a peer that stopped reading fails now
      })();
      // Kernel buffers on the way absorb tens of MiB before the bridge's queue fills
      // (loopback TCP autotunes up to tcp_rmem's 32 MiB, plus the mux window): send until
      // closed, up to 1 GiB.
      const block = new Uint8Array(1 << 20);
      const maxBlocks = 1024;
      const sending = (async () => {
        let sent = 0;
        for (; sent < maxBlocks && !ended; sent++) {
          try {
            await ws.write(block);
          } catch {
            break;
          }
        }
        return sent;
      })();
      const sent = await within(sending, "the bridge to stop a public client's sending", 120_000);
      assert(sent < maxBlocks, "the public client could send 1 GiB to an app not reading");
      await within(watch, "the bridge to close the public WebSocket");
      assertEquals(deaf.conns.length, 1, "the request reached the deaf app");
      // 1013 from the bridge; a close while this client still sends can arrive as a reset.
      assert(closeCode === 1013 || closeCode === undefined, `close ${closeCode}`);
    } finally {
      closeQuietly(pub);
    }
  } finally {
    closeQuietly(raw);
    await c.stop();
    await t.close();
    await deaf.close();
    await app.shutdown();
  }
});

/** Read one (small, masked) frame a WebSocket client sent: opcode and unmasked payload. */
async function readClientFrame(r: BufferedReader): Promise<{ opcode: number; data: Uint8Array }> {
  const h = await r.readExact(2);
  assert((h[1] & 0x80) !== 0, "frames from the bridge to the app must be masked");
  const len = h[1] & 0x7f;
  assert(len < 126, "small frame expected");
  const mask = await r.readExact(4);
  const data = (await r.readExact(len)).slice();
  for (let i = 0; i < data.length; i++) data[i] ^= mask[i & 3];
  return { opcode: h[0] & 0x0f, data };
}

Deno.test("tunnel app websocket: app pings are answered, a bad frame from the app closes both sides, a dying client closes the public side with 1001", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const appResult = (async () => {
    const conn = await listener.accept();
    try {
      const r = new BufferedReader(conn);
      const head = (await readRequestHead(r))!;
      const key = head.headers.find(([k]) => k.toLowerCase() === "sec-websocket-key")![1];
      const enc = new TextEncoder();
      await writeAll(
        conn,
        enc.encode(
          "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
            `Sec-WebSocket-Accept: ${await webSocketAccept(key)}\r\n\r\n`,
        ),
      );
      // A ping (answered by the bridge, not passed on), a text message, then text that is
      // not UTF-8.
      await writeAll(conn, new Uint8Array([0x89, 2, 0x68, 0x69, 0x81, 2, 0x6f, 0x6b]));
      const pong = await readClientFrame(r);
      await writeAll(conn, new Uint8Array([0x81, 2, 0xff, 0xfe]));
      const close = await readClientFrame(r);
      return { pong, close };
    } finally {
      closeQuietly(conn);
    }
  })();
  const t = startHonoTunnel();
  await t.server.addHost("127.0.0.1", "identifier-app-ws-bad-07");
  const c = startClient({
    server: t.url,
    identifier: "identifier-app-ws-bad-07",
    local: { host: "127.0.0.1", port: listener.addr.port },
  });
  let stopped = false;
  try {
    await c.connected();
    const ws = new TestSocket(`ws://127.0.0.1:${t.port}/raw`);
    await ws.opened();
    assertEquals(await ws.next(), "ok");
    const ev = await ws.closed();
    assertEquals(ev.code, 1011);
    const { pong, close } = await within(appResult, "the raw app's pong and close frames");
    assertEquals([pong.opcode, new TextDecoder().decode(pong.data)], [0xa, "hi"]);
    assertEquals(close.opcode, 0x8);
    assertEquals((close.data[0] << 8) | close.data[1], 1007);
    listener.close();

    // The tunnel client goes away while a WebSocket is open: the public side gets 1001.
    const app = startWsApp();
    const c2 = startClient({
      server: t.url,
      identifier: "identifier-app-ws-bad-07",
      local: { host: "127.0.0.1", port: app.port },
    });
    try {
      await c.stop();
      stopped = true;
      await c2.connected();
      const ws2 = new TestSocket(`ws://127.0.0.1:${t.port}/echo`);
      await ws2.opened();
      ws2.ws.send("still here");
      assertEquals(await ws2.next(), "still here");
      await c2.stop();
      const ev2 = await ws2.closed();
      assertEquals(ev2.code, 1001);
    } finally {
      await c2.stop();
      await app.close();
    }
  } finally {
    if (!stopped) await c.stop();
    await t.close();
    try {
      listener.close();
    } catch {
      // Closed above.
    }
  }
});

Deno.test("tunnel app websocket: 100 sockets at once, each gets its own echo; all streams released after", async () => {
  const s = await setup("identifier-app-ws-many-08");
  try {
    const socks = Array.from({ length: 100 }, () => new TestSocket(`${s.wsUrl}/echo`));
    await Promise.all(socks.map((w) => w.opened()));
    socks.forEach((w, i) => w.ws.send(`socket ${i}`));
    const answers = await Promise.all(socks.map((w) => w.next()));
    answers.forEach((a, i) => assertEquals(a, `socket ${i}`));
    socks.forEach((w, i) => w.ws.close(i % 2 ? 1000 : 4000 + i));
    await Promise.all(socks.map((w) => w.closed()));
    await s.app.closed(100);
    assertEquals(
      s.app.closes.map((c) => c.code).sort((a, b) => a - b),
      socks.map((_, i) => i % 2 ? 1000 : 4000 + i).sort((a, b) => a - b),
    );
    const stats = s.t.server.hostStats("127.0.0.1");
    // Released as each close finishes on the server: waited for, bounded generously.
    for (const deadline = Date.now() + 60_000; stats.openStreams > 0 && Date.now() < deadline;) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assertEquals(stats.openStreams, 0, "tunnel streams left open");
  } finally {
    await s.stop();
  }
});
