/**
 * The demo web app of the compose stack: the origin every proxy in `compose.yaml` leads to.
 * `GET /hello` answers one line naming the Host header it saw, `GET /bytes/N` streams N
 * deterministic bytes (`demoBytes`, so a client can check a download byte-exact without a
 * second copy), `GET /healthz` answers "ok".
 *
 *     deno run -A deploy/demo-app.ts --listen 0.0.0.0:8000
 * @module
 */

import { onShutdown, startService } from "../services/_kit.ts";
import { joinHostPort } from "../lib/net/addr.ts";

/** Largest `/bytes/N` answered (bytes): a demo, not a disk filler. */
export const maxDemoBytes = 1 << 30;

/** Bytes per chunk `demoBytes` yields (and the app writes). */
export const demoChunkBytes = 64 * 1024;

/**
 * The `N` bytes `GET /bytes/N` returns: a xorshift32 stream, so every 4-byte word differs and
 * a reordered, lost or duplicated chunk changes the SHA-256.
 */
export function* demoBytes(total: number, seed = 0x9e3779b9): Generator<Uint8Array> {
  let x = seed >>> 0 || 1;
  let sent = 0;
  while (sent < total) {
    const n = Math.min(demoChunkBytes, total - sent);
    const words = new Uint32Array(Math.ceil(n / 4));
    for (let i = 0; i < words.length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      words[i] = x >>> 0;
    }
    yield new Uint8Array(words.buffer, 0, n);
    sent += n;
  }
}

/** The app's request handler (exported for tests that run it in-process). */
export function demoHandler(req: Request): Response {
  const url = new URL(req.url);
  if (url.pathname === "/hello") {
    const host = req.headers.get("host") ?? "";
    return new Response(`hello from the warren demo app (host ${host})\n`);
  }
  if (url.pathname === "/healthz") return new Response("ok\n");
  const m = /^\/bytes\/(\d+)$/.exec(url.pathname);
  if (m) {
    const total = Number(m[1]);
    if (!Number.isSafeInteger(total) || total > maxDemoBytes) {
      return new Response(`at most ${maxDemoBytes} bytes\n`, { status: 400 });
    }
    const chunks = demoBytes(total);
    const body = new ReadableStream<Uint8Array>({
      pull(c) {
        const next = chunks.next();
        if (next.done) c.close();
        else c.enqueue(next.value);
      },
    });
    return new Response(body, {
      headers: { "content-type": "application/octet-stream", "content-length": String(total) },
    });
  }
  return new Response("not found\n", { status: 404 });
}

if (import.meta.main) {
  const { flags, log } = await startService(
    {
      name: "demo-app",
      summary: "the compose stack's demo web app: /hello, /bytes/N, /healthz",
      flags: {
        listen: {
          kind: "hostport",
          arg: "host:port",
          default: "127.0.0.1:8000",
          env: "DEMO_LISTEN",
          help: "where to serve HTTP",
        },
      },
      examples: [
        "demo-app --listen 0.0.0.0:8000",
        "curl http://127.0.0.1:8000/bytes/1048576 | sha256sum",
      ],
    } as const,
    () => undefined,
  );
  const addr = flags.listen;
  const server = Deno.serve({
    hostname: addr.host,
    port: addr.port,
    onListen: (a) =>
      log.info("listening", { name: "http", addr: joinHostPort(a.hostname, a.port) }),
  }, demoHandler);
  onShutdown(log, () => server.shutdown());
}
