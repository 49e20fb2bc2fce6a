/**
 * The demo's origin: the app every demo path leads to. `/hello` (a line of text),
 * `/bytes/N` (N deterministic bytes whose SHA-256 the checker knows), `/ws` (a WebSocket
 * that echoes each message). Loopback, port 0.
 * @module
 */

import { createHash } from "node:crypto";

/** The large transfer every path carries, checked by SHA-256. */
export const demoPayloadBytes = 4 * 1024 * 1024;
/** The origin refuses larger `/bytes/N` requests (a demo, not a load generator). */
const maxPayloadBytes = 64 * 1024 * 1024;
/** What `/hello` answers. */
export const helloText = "hello from the origin\n";

const payloads = new Map<number, Uint8Array<ArrayBuffer>>();

/** `n` pseudo-random bytes (xorshift32, fixed seed): the same on both ends, no I/O. */
export function demoPayload(n: number): Uint8Array<ArrayBuffer> {
  const cached = payloads.get(n);
  if (cached) return cached;
  const out = new Uint8Array(n);
  const words = new Uint32Array(out.buffer, 0, Math.floor(n / 4));
  let x = 0x9e3779b9;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13, x ^= x >>> 17, x ^= x << 5;
    words[i] = x >>> 0;
  }
  for (let i = words.length * 4; i < n; i++) out[i] = i & 0xff;
  payloads.set(n, out);
  return out;
}

/** Hex SHA-256 of `bytes`. */
export function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** A running origin. */
export interface DemoOrigin {
  readonly port: number;
  /** `127.0.0.1:port`. */
  readonly addr: string;
  close(): Promise<void>;
}

/** Start the origin on 127.0.0.1, port 0. */
export function startDemoOrigin(): DemoOrigin {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const url = new URL(req.url);
    if (url.pathname === "/hello") return new Response(helloText);
    const m = /^\/bytes\/(\d+)$/.exec(url.pathname);
    if (m && Number(m[1]) <= maxPayloadBytes) {
      return new Response(demoPayload(Number(m[1])), {
        headers: { "content-type": "application/octet-stream" },
      });
    }
    if (url.pathname === "/ws" && req.headers.get("upgrade")?.toLowerCase() === "websocket") {
      const { socket, response } = Deno.upgradeWebSocket(req);
      socket.binaryType = "arraybuffer";
      socket.addEventListener("message", (e) => socket.send(e.data));
      return response;
    }
    return new Response("try /hello, /bytes/N or /ws\n", { status: 404 });
  });
  return {
    port: server.addr.port,
    addr: `127.0.0.1:${server.addr.port}`,
    close: () => server.shutdown(),
  };
}
