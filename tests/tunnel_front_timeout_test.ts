/**
 * The standalone front answers a request at most once. When the app does not answer in time,
 * the front's 504 is the request's only answer and the public connection ends after it: a
 * second status line on a kept-alive connection (it once sent a 502 after its own 504) would
 * be read by the client as the answer to its next request. The 502 paths (the app's
 * connection reset, the tunnel client gone) answer once as well.
 */

import { assert, assertEquals } from "./_assert.ts";
import { startRawOrigin } from "./_http.ts";
import { startClient, startTunnel } from "./_tunnel.ts";
import { until, within } from "./_util.ts";
import {
  BufferedReader,
  closeQuietly,
  deadlines,
  type Duplex,
  resetDenoSocket,
  writeAll,
} from "../lib/net/mod.ts";
import { getHeader, readResponseHead, type ResponseHead } from "../lib/http/mod.ts";
import { handlePublicConn, type HttpFrontOptions } from "../lib/tunnel/mod.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** How long the tunnel server waits for the first response byte in these tests. */
const responseTimeoutMs = 300;

/** The raw app of these tests, with how many of its `/hang` connections have ended. */
type TestApp = ReturnType<typeof startRawOrigin> & { ended(): number };

/**
 * A raw app: `/hang` is read and never answered (its connection is then read to its end,
 * counted in `ended`), `/reset` is answered with a TCP reset, anything else with `hello`.
 */
function startApp(): TestApp {
  let ended = 0;
  const server = startRawOrigin(async (head, r, conn) => {
    if (head.target === "/hang") {
      // Never answers: waits for the tunnel client to close the connection.
      while (await r.fill().catch(() => false)) r.takeBuffered();
      ended++;
      return false;
    }
    if (head.target === "/reset") {
      if (!resetDenoSocket(conn)) closeQuietly(conn);
      return false;
    }
    await writeAll(conn, enc.encode("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"));
    return true;
  });
  return Object.assign(server, { ended: () => ended });
}

/** One response head and its Content-Length body from `r`. */
async function readResponse(r: BufferedReader): Promise<{ head: ResponseHead; body: string }> {
  const head = await within(readResponseHead(r), "a response head");
  const length = Number(getHeader(head.headers, "content-length") ?? "0");
  let body = "";
  while (body.length < length) {
    if (r.buffered === 0 && !(await within(r.fill(), "a response body"))) break;
    // Only this response's bytes: what follows them is the next one's (or a stray answer).
    const n = Math.min(r.buffered, length - body.length);
    body += dec.decode(r.peek().subarray(0, n));
    r.skip(n);
  }
  return { head, body };
}

/** What `r` still yields until the front closes the connection (a reset counts as the end). */
async function rest(r: BufferedReader): Promise<string> {
  let text = dec.decode(r.takeBuffered());
  while (await within(r.fill().catch(() => false), "the front's close")) {
    text += dec.decode(r.takeBuffered());
  }
  return text;
}

/**
 * Run `fn` with a front (options `front`) whose host `app.test` is served by a connected
 * tunnel client of a fresh app; everything is stopped after. `timeoutMs`: the server's
 * response timeout.
 */
async function withFront(
  front: HttpFrontOptions,
  fn: (
    port: number,
    app: TestApp,
    stopClient: () => Promise<void>,
    t: ReturnType<typeof startTunnel>,
  ) => Promise<void>,
  timeoutMs = responseTimeoutMs,
): Promise<void> {
  const app = startApp();
  const t = startTunnel({ responseTimeoutMs: timeoutMs }, 0, front);
  const id = "identifier-front-timeout-01";
  const c = startClient({
    server: t.url,
    identifier: id,
    local: { host: "127.0.0.1", port: app.addr.port },
  });
  let stopped = false;
  const stopClient = async () => {
    if (stopped) return;
    stopped = true;
    await c.stop();
  };
  try {
    await within(t.server.addHost("app.test", id), "addHost");
    await c.connected();
    await fn(t.port, app, stopClient, t);
  } finally {
    await stopClient();
    await within(t.close(), "tunnel close");
    await within(app.stop(200), "app stop");
  }
}

const hang = "GET /hang HTTP/1.1\r\nHost: app.test\r\n\r\n";
const second = "GET /hello HTTP/1.1\r\nHost: app.test\r\n\r\n";

/** The public connections these tests use: kept-alive unless the request says otherwise. */
async function connect(port: number): Promise<{ conn: Deno.TcpConn; r: BufferedReader }> {
  const conn = await within(Deno.connect({ hostname: "127.0.0.1", port }), "connect");
  return { conn, r: new BufferedReader(conn) };
}

for (
  const [name, front, request] of [
    ["a poolable stream", {}, hang],
    ["an opaque copy", { idleStreams: 0 }, hang],
    ["the access log's copy", { accessLog: true }, hang],
    [
      "an Upgrade request",
      {},
      "GET /hang HTTP/1.1\r\nHost: app.test\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\n",
    ],
  ] as [string, HttpFrontOptions, string][]
) {
  Deno.test(`tunnel front: the 504 is the only answer and ends the connection (${name})`, async () => {
    await withFront(front, async (port, app) => {
      const { conn, r } = await connect(port);
      try {
        await writeAll(conn, enc.encode(request));
        const first = await readResponse(r);
        assertEquals(first.head.status, 504);
        assertEquals(getHeader(first.head.headers, "connection"), "close");
        // The client tries its next request: it gets nothing but the close (never a stray
        // 502, which it would take for this request's answer).
        await writeAll(conn, enc.encode(second)).catch(() => {
          // Closed already: that is the end it should see.
        });
        assertEquals(await rest(r), "");
        // The app's connection is closed (its late answer can go nowhere).
        await until("the app's connection to end", () => app.ended() === 1);
      } finally {
        closeQuietly(conn);
      }
    });
  });
}

Deno.test("tunnel front: a reset app connection is answered with one 502", async () => {
  await withFront({}, async (port) => {
    const { conn, r } = await connect(port);
    try {
      await writeAll(conn, enc.encode("GET /reset HTTP/1.1\r\nHost: app.test\r\n\r\n"));
      const first = await readResponse(r);
      assertEquals(first.head.status, 502);
      assertEquals(await rest(r), "");
    } finally {
      closeQuietly(conn);
    }
  }, 60_000); // a response timeout no run reaches: the reset is what gets answered
});

Deno.test("tunnel front: a request whose tunnel client goes away is answered with one 502", async () => {
  await withFront({}, async (port, app, stopClient) => {
    const { conn, r } = await connect(port);
    try {
      await writeAll(conn, enc.encode(hang));
      await until("the request to reach the app", () => app.heads.length === 1);
      await stopClient();
      const first = await readResponse(r);
      assertEquals(first.head.status, 502);
      assert(/app\.test/.test(first.body));
      assertEquals(await rest(r), "");
    } finally {
      closeQuietly(conn);
    }
  }, 60_000); // a response timeout no run reaches: the client's end is what gets answered
});

/** A public connection of {@linkcode heldConn}. */
interface HeldConn {
  conn: Duplex;
  /** The status line of the error answer being held (`HTTP/1.1 502`). */
  holding: Promise<string>;
  release(): void;
  /** All that was written. */
  text(): string;
}

/**
 * A public connection in memory: it sends `request`, then waits for its close; what the front
 * writes is kept, and its first error answer (a write starting with `HTTP/1.1 5`) waits until
 * `release()`: `holding` says which.
 */
function heldConn(request: string): HeldConn {
  const written: Uint8Array[] = [];
  let sent = false;
  let closed = false;
  let ended: (n: null) => void = () => {};
  const end = new Promise<null>((r) => ended = r);
  let held: (status: string) => void = () => {};
  const holding = new Promise<string>((r) => held = r);
  let holdingOne = false;
  let release: () => void = () => {};
  const gate = new Promise<void>((r) => release = r);
  const conn: Duplex = {
    read: (p) => {
      if (sent) return end;
      sent = true;
      const b = enc.encode(request);
      p.set(b);
      return Promise.resolve(b.length);
    },
    write: async (p) => {
      if (closed) throw new Deno.errors.BrokenPipe("closed");
      written.push(p.slice());
      const text = dec.decode(p);
      if (text.startsWith("HTTP/1.1 5") && !holdingOne) {
        holdingOne = true;
        held(text.slice(0, 12));
        await gate;
      }
      return p.length;
    },
    closeWrite: () => Promise.resolve(),
    close: () => {
      closed = true;
      ended(null);
    },
  };
  return { conn, holding, release, text: () => written.map((b) => dec.decode(b)).join("") };
}

Deno.test("tunnel front: a 502 still waiting for its client is not followed by the 504", async () => {
  await withFront({}, async (_port, _app, _stopClient, t) => {
    // The app resets its connection: the stream breaks before any response byte (a 502).
    const pub = heldConn("GET /reset HTTP/1.1\r\nHost: app.test\r\n\r\n");
    const served = handlePublicConn(t.server, pub.conn, { ip: "127.0.0.1", remote: "127.0.0.1:1" });
    try {
      // Usually the 502 (the reset takes ms); on a box too slow to bring it within the
      // response timeout the 504 comes first, and must then be the only answer as well.
      if ((await within(pub.holding, "an error answer to be written")) === "HTTP/1.1 502") {
        // Past the 504 watch's due time on the same wheel (it fires in due order): the
        // watch, had it stayed, has fired by the time this does.
        await within(
          new Promise<void>((resolve) =>
            deadlines.add({
              due: deadlines.clockMs() + responseTimeoutMs + 2 * deadlines.tickMs,
              fire: () => resolve(),
            })
          ),
          "a deadline after the watch's",
        );
      }
    } finally {
      pub.release();
    }
    await within(served, "the public connection to end");
    // One answer: the 502 (or, see above, the 504).
    assertEquals(pub.text().match(/HTTP\/1\.1 \d{3}/g)?.length, 1);
  });
});
