/** Helpers for the tunnel tests: an in-process tunnel server front, clients, curl. */

import type { Logger } from "../lib/log.ts";
import { closeQuietly, type Server, writeAll } from "../lib/net/mod.ts";
import {
  createTunnelApp,
  type HttpFrontOptions,
  serveTunnel,
  type TunnelAppOptions,
  TunnelClient,
  type TunnelClientOptions,
  TunnelServer,
  type TunnelServerOptions,
} from "../lib/tunnel/mod.ts";
import { createHash } from "node:crypto";
import {
  blockStream,
  listenLocal,
  portBelowEphemeral,
  readAll,
  readWithin,
  run,
  sendBlocks,
  type ServiceProcess,
  sha256,
  startService,
  within,
} from "./_util.ts";
import { UdpSocket } from "../lib/udp/mod.ts";
import { testLogger } from "./_watchdog.ts";

/** A logger for tests: recorded for the watchdog, printed with WARREN_TEST_LOG=debug|info. */
export const testLog: (name: string) => Logger = testLogger;

/** A running in-process tunnel server (standalone fast-path front). */
export interface TestTunnel {
  server: TunnelServer;
  front: Server;
  port: number;
  url: string;
  close(): Promise<void>;
}

/** Start a TunnelServer with the HTTP/1 front on 127.0.0.1:port (0 = any). */
export function startTunnel(
  opts: TunnelServerOptions = {},
  port = 0,
  front: HttpFrontOptions = {},
): TestTunnel {
  const server = new TunnelServer({
    heartbeatIntervalMs: 500,
    heartbeatTimeoutMs: 5_000,
    log: testLog("tunnel-server"),
    ...opts,
  });
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  const srv = serveTunnel(listener, server, { log: testLog("front"), ...front });
  const p = srv.addr.port;
  return {
    server,
    front: srv,
    port: p,
    url: `http://127.0.0.1:${p}`,
    close: async () => {
      await server.close();
      await srv.stop(200);
    },
  };
}

/** A running TunnelServer behind the embeddable front (createTunnelApp in Deno.serve). */
export interface TestHonoTunnel {
  server: TunnelServer;
  port: number;
  url: string;
  close(): Promise<void>;
}

/** Serve a TunnelServer through `createTunnelApp` on 127.0.0.1:`port` (0 = any). */
export function startHonoTunnel(
  opts: { server?: TunnelServerOptions; app?: TunnelAppOptions; port?: number } = {},
): TestHonoTunnel {
  const server = new TunnelServer({
    heartbeatIntervalMs: 500,
    heartbeatTimeoutMs: 5_000,
    log: testLog("hono-tunnel"),
    ...opts.server,
  });
  const http = Deno.serve(
    { hostname: "127.0.0.1", port: opts.port ?? 0, onListen() {} },
    createTunnelApp(server, opts.app).fetch,
  );
  return {
    server,
    port: http.addr.port,
    url: `http://127.0.0.1:${http.addr.port}`,
    close: async () => {
      await server.close();
      await http.shutdown();
    },
  };
}

/** A running client; `stop()` aborts it and waits for its loop to end. */
export interface TestClient {
  client: TunnelClient;
  connected(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Start a TunnelClient; `connected()` resolves at its next successful handshake, and rejects
 * (naming the client's state) once its run loop has ended without one: a client that gave
 * up (refused, replaced, stopped) is never waited for.
 */
export function startClient(
  opts: Omit<TunnelClientOptions, "signal" | "log"> & { log?: Logger },
): TestClient {
  const ac = new AbortController();
  let waiters: { resolve(): void; reject(err: Error): void }[] = [];
  let ended = false;
  const client = new TunnelClient({
    backoff: { initialMs: 50, maxMs: 500 },
    heartbeatIntervalMs: 500,
    heartbeatTimeoutMs: 5_000,
    log: testLog("tunnel-client"),
    ...opts,
    signal: ac.signal,
    onConnected: (r) => {
      opts.onConnected?.(r);
      const w = waiters;
      waiters = [];
      for (const f of w) f.resolve();
    },
  });
  const notConnected = () =>
    new Error(
      `tunnel client ended (${client.state}${client.refusal ? `: ${client.refusal}` : ""})`,
    );
  const done = client.run().finally(() => {
    ended = true;
    for (const f of waiters.splice(0)) f.reject(notConnected());
  });
  return {
    client,
    connected: () =>
      client.state === "connected"
        ? Promise.resolve()
        : ended
        ? Promise.reject(notConnected())
        : within(
          new Promise((resolve, reject) => waiters.push({ resolve, reject })),
          () => `tunnel client ${opts.identifier} to connect to ${opts.server} (${client.state})`,
        ),
    stop: async () => {
      ac.abort();
      await within(done, `tunnel client ${opts.identifier} to stop`);
    },
  };
}

/** curl through the tunnel: `--connect-to` sends `Host: vhost` to the tunnel's port. */
export async function curl(
  tunnelPort: number,
  vhost: string,
  path: string,
  extra: string[] = [],
): Promise<{ code: number; status: number; body: string; stderr: string }> {
  const r = await run("curl", [
    "-sS",
    "--max-time",
    "60",
    "-o",
    "-",
    "-w",
    "\n%{http_code}",
    "-H",
    `Host: ${vhost}`,
    ...extra,
    `http://127.0.0.1:${tunnelPort}${path}`,
  ]);
  const i = r.stdout.lastIndexOf("\n");
  return {
    code: r.code,
    status: Number(r.stdout.slice(i + 1)),
    body: r.stdout.slice(0, i),
    stderr: r.stderr,
  };
}

/**
 * A local app for tunnel tests: everything startOrigin() has, plus `GET /headers` (echoes
 * the request headers as JSON), `GET /ws` (WebSocket echo), `GET /hang` (never answers),
 * `POST /echo` (streams the body back), `GET /chunked` (a chunked response).
 */
export function startApp(name = "app"): { port: number; close(): Promise<void> } {
  const hangs: (() => void)[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const url = new URL(req.url);
    if (url.pathname === "/headers") {
      return Response.json({ name, headers: Object.fromEntries(req.headers) });
    }
    if (url.pathname === "/ws") {
      const { socket, response } = Deno.upgradeWebSocket(req);
      socket.onmessage = (e) => socket.send(e.data);
      return response;
    }
    if (url.pathname === "/hang") {
      await new Promise<void>((r) => hangs.push(r));
      return new Response("late");
    }
    if (url.pathname === "/echo" && req.method === "POST") {
      return new Response(req.body);
    }
    if (url.pathname === "/chunked") {
      const parts = ["one,", "two,", "three"];
      const body = new ReadableStream<Uint8Array>({
        pull(c) {
          const p = parts.shift();
          if (p === undefined) c.close();
          else c.enqueue(new TextEncoder().encode(p));
        },
      });
      return new Response(body);
    }
    if (url.pathname === "/name") {
      return new Response(`${name} ${url.searchParams.get("id") ?? ""}`);
    }
    return originHandler(req);
  });
  return {
    port: server.addr.port,
    close: async () => {
      for (const h of hangs) h();
      await server.shutdown();
    },
  };
}

/** /bytes/N, /sha256 and /hello as in startOrigin(). */
function originHandler(req: Request): Promise<Response> {
  const url = new URL(req.url);
  const m = /^\/bytes\/(\d+)$/.exec(url.pathname);
  if (m) {
    const total = Number(m[1]);
    const it = blockStream(total, Number(url.searchParams.get("seed") ?? 0));
    const body = new ReadableStream<Uint8Array>({
      pull(c) {
        const r = it.next();
        if (r.done) c.close();
        else c.enqueue(r.value.slice());
      },
    });
    return Promise.resolve(new Response(body, { headers: { "content-length": String(total) } }));
  }
  if (url.pathname === "/sha256" && req.method === "POST") {
    return (async () => {
      const h = createHash("sha256");
      let n = 0;
      for await (const chunk of req.body ?? new ReadableStream()) {
        h.update(chunk);
        n += chunk.length;
      }
      return Response.json({ sha256: h.digest("hex"), bytes: n });
    })();
  }
  if (url.pathname === "/hello") {
    return Promise.resolve(new Response(`hello ${url.searchParams.get("id") ?? ""}`));
  }
  return Promise.resolve(new Response("not found", { status: 404 }));
}

/**
 * A one-shot HTTP/1.1 GET over raw TCP with an explicit Host (fetch cannot set Host) and
 * `headers` (whole lines, no CRLF).
 */
export async function rawGet(
  port: number,
  host: string,
  path: string,
  headers: string[] = [],
): Promise<{ status: number; head: string; body: string }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  // A test must fail, not hang, if the tunnel never answers.
  const timer = setTimeout(() => {
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }, 30_000);
  try {
    await conn.write(
      new TextEncoder().encode(
        `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${
          headers.map((h) => `${h}\r\n`).join("")
        }Connection: close\r\n\r\n`,
      ),
    );
    const parts: Uint8Array[] = [];
    const buf = new Uint8Array(65536);
    while (true) {
      const n = await conn.read(buf);
      if (n === null) break;
      parts.push(buf.slice(0, n));
    }
    const text = new TextDecoder().decode(
      parts.reduce((a, b) => {
        const o = new Uint8Array(a.length + b.length);
        o.set(a);
        o.set(b, a.length);
        return o;
      }, new Uint8Array(0)),
    );
    const i = text.indexOf("\r\n\r\n");
    const head = text.slice(0, i);
    return { status: Number(head.split(" ")[1]), head, body: text.slice(i + 4) };
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // Already closed by the peer.
    }
  }
}

/**
 * A TCP service on 127.0.0.1 that serves each accepted connection with `handle`, then closes
 * it. A handler's error is a connection the test cut (its assertions on what came show any
 * other). close() stops accepting, closes the connections still open and waits for every handler.
 */
export function serveConns(
  handle: (c: Deno.Conn) => Promise<void>,
): { port: number; close(): Promise<void> } {
  const l = listenLocal();
  const conns = new Set<Deno.Conn>();
  const handlers = new Set<Promise<void>>();
  const loop = (async () => {
    for await (const c of l) {
      conns.add(c);
      const h = handle(c).catch(() => {}).finally(() => {
        conns.delete(c);
        closeQuietly(c);
      });
      handlers.add(h);
      h.finally(() => handlers.delete(h));
    }
  })();
  return {
    port: l.addr.port,
    close: async () => {
      l.close();
      for (const c of conns) closeQuietly(c);
      await loop.catch(() => {});
      await Promise.all(handlers);
    },
  };
}

/** A local TCP service: hashes everything it reads and, at EOF, answers the hex SHA-256. */
export function startHasher(): { port: number; close(): Promise<void> } {
  return serveConns(async (c) => {
    const hash = createHash("sha256");
    const buf = new Uint8Array(256 * 1024);
    while (true) {
      const n = await c.read(buf);
      if (n === null) break;
      hash.update(buf.subarray(0, n));
    }
    await c.write(new TextEncoder().encode(hash.digest("hex")));
  });
}

/** A UDP port free now on 127.0.0.1, below the ephemeral range (see portBelowEphemeral). */
export async function freeUdpPort(): Promise<number> {
  for (let tries = 1;; tries++) {
    try {
      const s = await UdpSocket.bind("127.0.0.1", portBelowEphemeral());
      const port = s.addr.port;
      await s.close();
      return port;
    } catch (err) {
      if (tries >= 100) throw err; // else taken by another socket: try another port
    }
  }
}

/**
 * A TCP service that reads a request ("total seed") up to the peer's FIN, then sends `total`
 * bytes of the block stream and closes: a download that starts after a half-close.
 */
export function startSender(): { port: number; close(): Promise<void> } {
  const l = listenLocal();
  const served = new Set<Promise<void>>();
  const loop = (async () => {
    for await (const c of l) {
      const p = (async () => {
        try {
          const [total, seed] = new TextDecoder().decode(await readAll(c)).split(" ").map(Number);
          await sendBlocks(c, total, seed);
        } finally {
          c.close();
        }
      })().catch(() => {
        // The peer went away: the test's hash comparison shows it.
      });
      served.add(p);
      p.finally(() => served.delete(p));
    }
  })();
  return {
    port: l.addr.port,
    close: async () => {
      l.close();
      await loop;
      await Promise.all(served);
    },
  };
}

/**
 * Ask `hostname:port` for `total` bytes: the request, FIN, then everything until the service
 * closes; the SHA-256 of what came.
 */
export async function download(
  port: number,
  total: number,
  seed: number,
  hostname = "127.0.0.1",
): Promise<string> {
  const conn = await Deno.connect({ hostname, port });
  try {
    await writeAll(conn, new TextEncoder().encode(`${total} ${seed}`));
    await conn.closeWrite();
    return sha256(await readAll(conn));
  } finally {
    conn.close();
  }
}

/** Send `total` bytes to `hostname:port`, half-close, and return what comes back (the hash). */
export async function hashThrough(
  port: number,
  total: number,
  seed: number,
  hostname = "127.0.0.1",
): Promise<string> {
  const conn = await Deno.connect({ hostname, port });
  try {
    await sendBlocks(conn, total, seed);
    await conn.closeWrite();
    const buf = new Uint8Array(128);
    let got = "";
    while (true) {
      const n = await readWithin(
        conn,
        buf,
        `the hash of ${total} bytes sent to ${port}`,
        got.length,
      );
      if (n === null) break;
      got += new TextDecoder().decode(buf.subarray(0, n));
    }
    return got;
  } finally {
    closeQuietly(conn);
  }
}

/**
 * Send `request` raw to the front, end the sending side, and read until the front closes
 * (a 30 s guard closes a hung connection: the assertions then fail, nothing waits on time).
 */
export async function rawSend(port: number, request: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const guard = setTimeout(() => {
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }, 30_000);
  try {
    await writeAll(conn, new TextEncoder().encode(request));
    await conn.closeWrite();
    let text = "";
    const buf = new Uint8Array(16384);
    while (true) {
      const n = await conn.read(buf).catch(() => null);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
    return text;
  } finally {
    clearTimeout(guard);
    try {
      conn.close();
    } catch {
      // Closed by the guard.
    }
  }
}

/**
 * A tunnel front (with `front` options) with `app.test` served by a connected client of
 * `localPort`; `fn` gets its port.
 */
export async function withAppTunnel(
  localPort: number,
  fn: (port: number) => Promise<void>,
  front: HttpFrontOptions = {},
): Promise<void> {
  const t = startTunnel({}, 0, front);
  const id = "identifier-app-" + crypto.randomUUID();
  await t.server.addHost("app.test", id);
  const c = startClient({
    server: t.url,
    identifier: id,
    local: { host: "127.0.0.1", port: localPort },
  });
  try {
    await c.connected();
    await fn(t.port);
  } finally {
    await c.stop();
    await t.close();
  }
}

/**
 * A tunnel-server process that joins the Redis cluster at `redisUrl` (public and link ports on
 * loopback, a 300 ms heartbeat so leases move quickly), with `args` added.
 */
export function startClusterMember(
  redisUrl: string,
  token: string,
  args: string[],
  opts: { readyCount?: number; env?: Record<string, string> } = {},
): Promise<ServiceProcess> {
  return startService("tunnel-server.ts", [
    "--listen",
    "127.0.0.1:0",
    "--cluster-listen",
    "127.0.0.1:0",
    "--registry",
    redisUrl,
    "--heartbeat",
    "300ms",
    ...args,
  ], { readyCount: opts.readyCount ?? 2, env: { TUNNEL_CLUSTER_TOKEN: token, ...opts.env } });
}

/**
 * The first of `count` consecutive TCP ports free now on both 127.0.0.1 and 127.0.0.2 (two
 * cluster members, one per address, binding the same client ports). Drawn below the kernel's
 * ephemeral range: a port from there (freePort()) can be taken at any moment as the local end
 * of an outgoing connection, the test's own included, and an instance binding it again after
 * a release then failed with EADDRINUSE (tunnel_cluster_client_ports, twice in 20 runs).
 */
export function portOnBoth(count = 1): number {
  let low = 32768;
  try {
    low = Number(Deno.readTextFileSync("/proc/sys/net/ipv4/ip_local_port_range").split(/\s/)[0]);
  } catch {
    // No /proc (not Linux): Linux's default range starts there.
  }
  const from = Math.max(1024, Math.floor(low / 2));
  for (;;) {
    const p = from + Math.floor(Math.random() * (low - from - count));
    try {
      for (const hostname of ["127.0.0.1", "127.0.0.2"]) {
        for (let i = 0; i < count; i++) Deno.listen({ hostname, port: p + i }).close();
      }
      return p;
    } catch {
      // One of them is taken: try others.
    }
  }
}

/** A tunnel-client process serving `localPort` through the server at `server` (host:port). */
export function startClientProcess(
  server: string,
  localPort: number,
  id: string,
  args: string[] = [],
): Promise<ServiceProcess> {
  return startService("tunnel-client.ts", [
    "--server",
    `http://${server}`,
    "--local",
    `127.0.0.1:${localPort}`,
    ...args,
  ], { readyCount: 0, ready: /msg="connected"/, env: { TUNNEL_IDENTIFIER: id } });
}
