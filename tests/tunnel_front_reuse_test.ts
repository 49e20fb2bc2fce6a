/**
 * The standalone front keeps a tunnel stream its public connection is done with (at a
 * response boundary, the app's connection still open) and hands it to the next public
 * connection for the same client, host and local port (lib/tunnel/front_pool.ts, issue 20):
 * the app sees one connection where it saw one per public connection. What must hold: every
 * request reaches the app once and in order (a safe one is sent again, once, only when the
 * reused stream turned out closed with nothing answered), each response reaches its own
 * public client exactly, a public `Connection: close` ends the public connection (with
 * `Connection: close` in its response) but not the app's, and a stream that carried an
 * upgrade, a response framed by its close or the app's own `close` is never reused.
 */

import { assert, assertEquals } from "./_assert.ts";
import { rawExchange } from "./_http.ts";
import { startClient, startTunnel, withAppTunnel } from "./_tunnel.ts";
import { run, until, within } from "./_util.ts";
import { BufferedReader, closeQuietly, serve, type Server, writeAll } from "../lib/net/mod.ts";
import {
  copyBody,
  getHeader,
  headerTokens,
  readRequestHead,
  readResponseHead,
  requestBodyFraming,
  type RequestHead,
  type ResponseHead,
} from "../lib/http/mod.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A request as the app saw it: on which of its connections, with its body. */
interface Seen {
  conn: number;
  head: RequestHead;
  body: string;
}

/** How the app answers a request (`n`: its index on its connection), at once or later. */
type Answer = (seen: Seen, n: number) => Reply | Promise<Reply>;

/** Bytes to write in order (each its own write), and whether the connection stays open. */
interface Reply {
  parts: string[];
  keep: boolean;
}

/** Whether the app keeps its connection after answering `head` (RFC 9112 §9.3). */
const keeps = (head: RequestHead) =>
  head.version === "HTTP/1.1" && !headerTokens(head.headers, "connection").includes("close");

/** `METHOD target body` Content-Length framed; the connection kept as the request allows. */
const echo = (s: Seen, _n?: number): Reply => {
  const body = `${s.head.method} ${s.head.target} ${s.body}`;
  return {
    parts: [`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`],
    keep: keeps(s.head),
  };
};

/** A raw HTTP/1.1 app that numbers its connections and records each request with its body. */
function startOrigin(answer: Answer = echo): Server & {
  seen: Seen[];
  conns: () => number;
  closed: () => number;
} {
  const seen: Seen[] = [];
  let conns = 0, closed = 0;
  const server = serve(Deno.listen({ hostname: "127.0.0.1", port: 0 }), async (conn, ctx) => {
    ctx.handshakeDone();
    const no = ++conns;
    const r = new BufferedReader(conn);
    try {
      for (let n = 0;; n++) {
        const head = await readRequestHead(r);
        if (!head) return;
        const chunks: Uint8Array[] = [];
        await copyBody(r, conn, requestBodyFraming(head), (p) => {
          chunks.push(p.slice());
          return Promise.resolve();
        });
        const s: Seen = { conn: no, head, body: dec.decode(concat(chunks)) };
        seen.push(s);
        const { parts, keep } = await answer(s, n);
        for (const p of parts) await writeAll(conn, enc.encode(p));
        if (!keep) return;
      }
    } catch {
      // The tunnel client closed or reset it.
    } finally {
      closed++;
    }
  }, { handshakeTimeoutMs: 0 });
  return Object.assign(server, { seen, conns: () => conns, closed: () => closed });
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** One public connection: `request` written (in `splits` pieces), responses read until EOF. */
async function exchange(
  port: number,
  request: string,
  opts: { responses?: number; halfClose?: boolean; methods?: string[] } = {},
): Promise<{ head: ResponseHead; body: string }[]> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const r = new BufferedReader(conn);
  try {
    await writeAll(conn, enc.encode(request));
    if (opts.halfClose) await conn.closeWrite();
    const out: { head: ResponseHead; body: string }[] = [];
    for (let i = 0; i < (opts.responses ?? 1); i++) {
      const method = opts.methods?.[i] ?? "GET";
      out.push(await within(rawExchange(conn, r, new Uint8Array(), method), `response ${i}`));
    }
    // The front ends the connection after the last response (close asked, or EOF).
    assertEquals(await within(r.fill(), "the front's close"), false, "bytes after the last");
    return out;
  } finally {
    closeQuietly(conn);
  }
}

const get = (path: string, extra = "") => `GET ${path} HTTP/1.1\r\nHost: app.test\r\n${extra}\r\n`;
const closeGet = (path: string) => get(path, "Connection: close\r\n");

Deno.test("tunnel reuse: curl with Connection: close, one app connection for every public one; close stays on the public side", async () => {
  const app = startOrigin();
  try {
    await withAppTunnel(app.addr.port, async (port) => {
      for (let i = 0; i < 5; i++) {
        const out = await run("curl", [
          "-sS",
          "-i",
          "-H",
          "Host: app.test",
          "-H",
          "Connection: close",
          `http://127.0.0.1:${port}/n${i}`,
        ]);
        assertEquals(out.code, 0, out.stderr);
        const [head, body] = out.stdout.split("\r\n\r\n");
        assertEquals(body, `GET /n${i} `);
        assert(/\r\nConnection: close(\r\n|$)/i.test(head), head);
      }
      // curl without the header (it closes after its one request: the public side's EOF).
      const plain = await run("curl", [
        "-sS",
        "-H",
        "Host: app.test",
        `http://127.0.0.1:${port}/p`,
      ]);
      assertEquals(plain.stdout, "GET /p ", plain.stderr);
    });
    assertEquals(app.seen.map((s) => s.head.target), ["/n0", "/n1", "/n2", "/n3", "/n4", "/p"]);
    assertEquals(app.conns(), 1, "one app connection");
    for (const s of app.seen) {
      assertEquals(headerTokens(s.head.headers, "connection"), [], "close reached the app");
      assertEquals(getHeader(s.head.headers, "x-forwarded-for"), "127.0.0.1");
    }
  } finally {
    await app.stop(0);
  }
});

Deno.test("tunnel reuse: pipelined requests ending in Connection: close, split responses, HEAD and chunked: each answer exact, in order", async () => {
  // Responses written in pieces (head cut, body cut, chunked), a HEAD whose Content-Length
  // frames no body: the front finds each response's end to stop the stream at a boundary.
  const app = startOrigin((s) => {
    const b = `${s.head.method} ${s.head.target}`;
    if (s.head.method === "HEAD") {
      return { parts: ["HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n"], keep: keeps(s.head) };
    }
    if (s.head.target === "/chunked") {
      return {
        parts: [
          "HTTP/1.1 200 OK\r\nTransfer-",
          "Encoding: chunked\r\n\r\n4\r\nab",
          "cd\r\n0\r\n\r\n",
        ],
        keep: true,
      };
    }
    return {
      parts: [
        `HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Le`,
        `ngth: ${b.length}\r\n\r\n`,
      ]
        .concat([b.slice(0, 3), b.slice(3)]),
      keep: keeps(s.head),
    };
  });
  try {
    await withAppTunnel(app.addr.port, async (port) => {
      const first = await exchange(
        port,
        get("/a") + "HEAD /h HTTP/1.1\r\nHost: app.test\r\n\r\n" + get("/chunked") +
          closeGet("/z"),
        { responses: 4, methods: ["GET", "HEAD", "GET", "GET"] },
      );
      // (bodies as they were framed: the chunked one with its chunk lines)
      assertEquals(first.map((x) => x.body), ["GET /a", "", "4\r\nabcd\r\n0\r\n\r\n", "GET /z"]);
      assertEquals(getHeader(first[1].head.headers, "content-length"), "999");
      assertEquals(headerTokens(first[3].head.headers, "connection"), ["close"]);
      for (const x of first.slice(0, 3)) {
        assertEquals(headerTokens(x.head.headers, "connection").includes("close"), false);
      }
      // The next public connection gets the same app connection.
      const second = await exchange(
        port,
        "HEAD /h2 HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        {
          methods: ["HEAD"],
        },
      );
      assertEquals(second[0].body, "");
      const third = await exchange(port, closeGet("/last"));
      assertEquals(third[0].body, "GET /last");
    });
    assertEquals(app.seen.map((s) => [s.conn, s.head.target]), [
      [1, "/a"],
      [1, "/h"],
      [1, "/chunked"],
      [1, "/z"],
      [1, "/h2"],
      [1, "/last"],
    ]);
  } finally {
    await app.stop(0);
  }
});

Deno.test("tunnel reuse: a request body and a half-closed public side: the body exact, the answer whole, then the stream serves the next connection", async () => {
  const app = startOrigin();
  try {
    await withAppTunnel(app.addr.port, async (port) => {
      const body = "x".repeat(70_000);
      const post = await exchange(
        port,
        `POST /up HTTP/1.1\r\nHost: app.test\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
        { halfClose: true },
      );
      assertEquals(post[0].body, `POST /up ${body}`);
      const chunked = await exchange(
        port,
        "POST /c HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" +
          "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
      );
      assertEquals(chunked[0].body, "POST /c 3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
      const next = await exchange(port, get("/after"), { halfClose: true });
      assertEquals(next[0].body, "GET /after ");
    });
    // A POST never rides a reused stream (it is not safe to send twice): it got a fresh one.
    assertEquals(app.seen.map((s) => [s.conn, s.head.target]), [[1, "/up"], [2, "/c"], [
      2,
      "/after",
    ]]);
  } finally {
    await app.stop(0);
  }
});

Deno.test("tunnel reuse: the app closes a reused connection under a GET without answering: sent again once on a fresh stream; a POST is never sent on a reused one", async () => {
  // The app answers the first request of each connection, and closes (no answer) on the
  // second: what an app's keep-alive timeout firing as the request arrives looks like.
  const app = startOrigin((s, n) => n === 0 ? echo(s, n) : { parts: [], keep: false });
  try {
    await withAppTunnel(app.addr.port, async (port) => {
      assertEquals((await exchange(port, closeGet("/1")))[0].body, "GET /1 ");
      assertEquals((await exchange(port, closeGet("/2")))[0].body, "GET /2 ");
      const post = await exchange(
        port,
        "POST /p HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1\r\nConnection: close\r\n\r\nq",
      );
      assertEquals(post[0].body, "POST /p q");
    });
    assertEquals(app.seen.map((s) => [s.conn, s.head.target]), [
      [1, "/1"],
      [1, "/2"], // closed without an answer
      [2, "/2"], // the one retry, on a fresh stream
      [3, "/p"], // fresh, although conn 2 waited in the pool
    ]);
  } finally {
    await app.stop(0);
  }
});

Deno.test("tunnel reuse: never after the app's close, an HTTP/1.0 exchange or an upgrade; an idle stream is closed after idleStreamMs", async () => {
  const app = startOrigin((s, n) => {
    const t = s.head.target;
    if (t === "/app-close") {
      return {
        parts: ["HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"],
        keep: false,
      };
    }
    if (t === "/by-close") return { parts: ["HTTP/1.1 200 OK\r\n\r\nuntil-eof"], keep: false };
    if (t === "/up") {
      return {
        parts: ["HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\n"],
        keep: false,
      };
    }
    return echo(s, n);
  });
  try {
    await withAppTunnel(app.addr.port, async (port) => {
      assertEquals((await exchange(port, closeGet("/app-close")))[0].body, "ok");
      assertEquals((await exchange(port, closeGet("/by-close")))[0].body, "until-eof");
      const old = await exchange(port, "GET /old HTTP/1.0\r\nHost: app.test\r\n\r\n");
      assertEquals(old[0].body, "GET /old ");
      // An upgrade the app accepts: bytes both ways, never a pooled stream.
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      const r = new BufferedReader(conn);
      await writeAll(
        conn,
        enc.encode(get("/up", "Connection: upgrade\r\nUpgrade: foo\r\n")),
      );
      const h = await within(readResponseHead(r), "101");
      assertEquals(h.status, 101);
      await conn.closeWrite();
      assertEquals(await within(r.fill(), "upgraded end"), false);
      closeQuietly(conn);
      // Kept: one that ends in the pool, then it is closed when idle (idleStreamMs 50).
      assertEquals((await exchange(port, closeGet("/kept")))[0].body, "GET /kept ");
      const before = app.closed();
      await until("the idle stream's app connection closed", () => app.closed() > before);
      assertEquals((await exchange(port, closeGet("/fresh")))[0].body, "GET /fresh ");
    }, { idleStreamMs: 50 });
    assertEquals(app.seen.map((s) => [s.conn, s.head.target]), [
      [1, "/app-close"],
      [2, "/by-close"],
      [3, "/old"],
      [4, "/up"],
      [5, "/kept"],
      [6, "/fresh"],
    ]);
  } finally {
    await app.stop(0);
  }
});

Deno.test("tunnel reuse: bytes the app sends unasked (a 408 as it closes an idle connection) never reach a later public connection", async () => {
  // After each answer the app writes a 408 of its own, unasked, in a write of its own.
  const app = startOrigin((s, n) => {
    const a = echo(s, n);
    return {
      parts: [...a.parts, "HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n"],
      keep: true,
    };
  });
  try {
    await withAppTunnel(app.addr.port, async (port) => {
      // Closed by its client: the stream may have gone to the pool, or its 408 may come
      // first (dropped with the stream).
      const [first] = await exchange(port, closeGet("/1"));
      assertEquals([first.head.status, first.body], [200, "GET /1 "]);
      // A kept-alive public connection gets the 408 on its own connection (the app sent it
      // there); after that the stream is never reused.
      for (const path of ["/2", "/3"]) {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port });
        const r = new BufferedReader(conn);
        try {
          const res = await within(rawExchange(conn, r, get(path)), "the answer");
          assertEquals([res.head.status, res.body], [200, `GET ${path} `]);
          const stray = await within(rawExchange(conn, r, new Uint8Array()), "the 408");
          assertEquals(stray.head.status, 408);
          await conn.closeWrite();
          assertEquals(await within(r.fill(), "the front's close"), false);
        } finally {
          closeQuietly(conn);
        }
      }
      assertEquals((await exchange(port, closeGet("/4")))[0].body, "GET /4 ");
    });
    // No stream that carried a 408 served a later public connection.
    assertEquals(app.seen.map((s) => [s.conn, s.head.target]), [
      [1, "/1"],
      [2, "/2"],
      [3, "/3"],
      [4, "/4"],
    ]);
  } finally {
    await app.stop(0);
  }
});

Deno.test("tunnel reuse: a long kept-alive run goes opaque (no pooling) and stays exact", async () => {
  const app = startOrigin();
  try {
    await withAppTunnel(app.addr.port, async (port) => {
      // 24 requests on one public connection: past the parsed responses' bound (16) the copy
      // is opaque and the stream is closed with its connection, not kept.
      const paths = Array.from({ length: 24 }, (_, i) => `/k${i}`);
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      const r = new BufferedReader(conn);
      try {
        for (const p of paths) {
          const res = await within(rawExchange(conn, r, get(p)), p);
          assertEquals(res.body, `GET ${p} `);
        }
        const last = await within(rawExchange(conn, r, closeGet("/end")), "/end");
        assertEquals(last.body, "GET /end ");
        assertEquals(await within(r.fill(), "the front's close"), false);
      } finally {
        closeQuietly(conn);
      }
      assertEquals((await exchange(port, closeGet("/next")))[0].body, "GET /next ");
    });
    assertEquals(app.seen.map((s) => s.conn), [...Array(25).fill(1), 2]);
    // The last request of the opaque run went with its close: the app closed its connection.
    assertEquals(headerTokens(app.seen[24].head.headers, "connection"), ["close"]);
  } finally {
    await app.stop(0);
  }
});

Deno.test("tunnel reuse: least-streams balancing counts a member's idle pooled streams as no load", async () => {
  // Member A holds one request (a stream in use); member B carried one and keeps its stream
  // in the pool. Every later request belongs to B: its idle stream is not load (counted as
  // load, B tied with A and the turn sent the next request to A).
  let release = () => {};
  const held = new Promise<void>((r) => release = r);
  const appA = startOrigin(async (s, n) => {
    if (s.head.target === "/hold") await held;
    return echo(s, n);
  });
  const appB = startOrigin();
  const t = startTunnel({ duplicate: "balance", balance: "least-streams" });
  const id = "identifier-group-" + crypto.randomUUID();
  const clients: ReturnType<typeof startClient>[] = [];
  let holder: Deno.Conn | undefined;
  try {
    await t.server.addHost("app.test", id);
    for (const app of [appA, appB]) {
      const c = startClient({
        server: t.url,
        identifier: id,
        local: { host: "127.0.0.1", port: app.addr.port },
      });
      clients.push(c);
      await c.connected(); // A first: the oldest member, first in turn
    }
    holder = await Deno.connect({ hostname: "127.0.0.1", port: t.port });
    await writeAll(holder, enc.encode(get("/hold")));
    await until("A to get the held request", () => appA.seen.length === 1);
    for (const path of ["/r1", "/r2", "/r3", "/r4"]) {
      assertEquals((await exchange(t.port, closeGet(path)))[0].body, `GET ${path} `);
    }
    assertEquals(appB.seen.map((s) => [s.conn, s.head.target]), [
      [1, "/r1"],
      [1, "/r2"],
      [1, "/r3"],
      [1, "/r4"],
    ]);
    assertEquals(appA.seen.map((s) => s.head.target), ["/hold"]);
    const [a, b] = t.server.clients().sort((x, y) => x.id - y.id);
    assertEquals([a.openStreams, a.idleStreams], [1, 0]);
    assertEquals([b.openStreams, b.idleStreams], [1, 1], "B's stream waits in the pool");
    release();
    const r = new BufferedReader(holder);
    const res = await within(rawExchange(holder, r, new Uint8Array()), "the held answer");
    assertEquals(res.body, "GET /hold ");
  } finally {
    release();
    if (holder) closeQuietly(holder);
    for (const c of clients) await c.stop();
    await t.close();
    await appA.stop(0);
    await appB.stop(0);
  }
});

Deno.test("tunnel reuse: a 408 as a reused stream's first answer (the app timed its idle connection out as the request came) sends the request again on a fresh stream; a fresh stream's 408 reaches the client", async () => {
  const timedOut = {
    parts: ["HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"],
    keep: false,
  };
  // Each app connection answers its first request (but /always408) and times out on the next.
  const app = startOrigin((s, n) => n === 0 && s.head.target !== "/always408" ? echo(s) : timedOut);
  try {
    await withAppTunnel(app.addr.port, async (port) => {
      assertEquals((await exchange(port, closeGet("/1")))[0].body, "GET /1 ");
      const [second] = await exchange(port, closeGet("/2"));
      assertEquals([second.head.status, second.body], [200, "GET /2 "]);
      const [third] = await exchange(port, closeGet("/always408"));
      assertEquals(third.head.status, 408);
    });
    assertEquals(app.seen.map((s) => [s.conn, s.head.target]), [
      [1, "/1"],
      [1, "/2"], // the 408 the client never sees
      [2, "/2"], // the one retry, on a fresh stream
      [2, "/always408"], // reused: 408, sent again
      [3, "/always408"], // fresh: its 408 is the answer
    ]);
  } finally {
    await app.stop(0);
  }
});
