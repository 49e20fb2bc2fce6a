/**
 * lib/transport: one dial/listen shape for tcp, tls, ws and wss. Every kind carries 8 MiB up,
 * a half-close, then 8 MiB down, byte-exact (SHA-256); a standard WebSocket client (Deno's)
 * talks to our server side; a request that is not the upgrade is answered 400/404 and the
 * listener keeps serving.
 */

import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { makePki } from "./_tls.ts";
import { readAll } from "./_util.ts";
import { hashThenSend, uploadHalfCloseDownload } from "./_transport.ts";
import { closeQuietly, writeAll } from "../lib/net/mod.ts";
import {
  dialTransport,
  type Endpoint,
  formatEndpoint,
  listenTransport,
  loadTlsClientConfig,
  loadTlsServerConfig,
  parseEndpoint,
  serveTransport,
  type TransportKind,
  UpgradeError,
} from "../lib/transport/mod.ts";

const MiB = 1024 * 1024;
const opts = { sanitizeOps: true, sanitizeResources: true };

Deno.test({ name: "transport: endpoints parse and print", ...opts }, () => {
  assertEquals(parseEndpoint("ws://example.org/tunnel"), {
    kind: "ws",
    host: "example.org",
    port: 80,
    path: "/tunnel",
  });
  assertEquals(parseEndpoint("wss://[::1]:8443"), {
    kind: "wss",
    host: "::1",
    port: 8443,
    path: "/",
  });
  assertEquals(parseEndpoint("127.0.0.1:7000", "tls").kind, "tls");
  assertEquals(formatEndpoint(parseEndpoint("ws://h:1/p")), "ws://h:1/p");
  let threw = false;
  try {
    parseEndpoint("tls://h"); // TLS has no default port here
  } catch {
    threw = true;
  }
  assert(threw, "tls:// without a port is refused");
});

Deno.test(
  { name: "transport: tcp, tls, ws and wss carry 8 MiB each way with half-close", ...opts },
  async () => {
    const pki = await makePki();
    try {
      const serverTls = loadTlsServerConfig({ certFile: pki.serverCert, keyFile: pki.serverKey });
      const clientTls = loadTlsClientConfig({ caFile: pki.ca });
      for (const kind of ["tcp", "tls", "ws", "wss"] as TransportKind[]) {
        const ep: Endpoint = { kind, host: "127.0.0.1", port: 0, path: "/link" };
        const l = await listenTransport(ep, { tls: serverTls });
        const server = serveTransport(l, (conn) => hashThenSend(conn, 8 * MiB));
        try {
          const conn = await dialTransport({ ...ep, port: l.addr.port }, { tls: clientTls });
          try {
            await uploadHalfCloseDownload(conn, 8 * MiB, 8 * MiB);
          } finally {
            closeQuietly(conn);
          }
          assertEquals(server.stats.errors, 0, kind);
        } finally {
          await server.stop(1000);
        }
      }
    } finally {
      await pki.remove();
    }
  },
);

Deno.test(
  { name: "transport: Deno's own WebSocket client talks to our ws server", ...opts },
  async () => {
    const l = await listenTransport({ kind: "ws", host: "127.0.0.1", port: 0, path: "/" });
    // Echo every byte back, then answer the client's Close with ours.
    const server = serveTransport(l, async (conn) => {
      const buf = new Uint8Array(64 * 1024);
      for (let n = await conn.read(buf); n !== null; n = await conn.read(buf)) {
        await writeAll(conn, buf.subarray(0, n));
      }
      await conn.closeWrite();
    });
    try {
      const ws = new WebSocket(`ws://127.0.0.1:${l.addr.port}/`);
      ws.binaryType = "arraybuffer";
      const got: Uint8Array[] = [];
      const closed = new Promise<void>((resolve) => ws.onclose = () => resolve());
      await new Promise<void>((resolve, reject) => {
        ws.onopen = () => resolve();
        ws.onerror = () => reject(new Error("websocket failed"));
      });
      const sent = new Uint8Array(200_000).map((_, i) => (i * 7) & 255);
      let received = 0;
      const all = new Promise<void>((resolve) => {
        ws.onmessage = (e) => {
          got.push(new Uint8Array(e.data as ArrayBuffer));
          received += (e.data as ArrayBuffer).byteLength;
          if (received >= sent.length) resolve();
        };
      });
      ws.send(sent.subarray(0, 100_000));
      ws.send(sent.subarray(100_000));
      await all;
      ws.close(1000);
      await closed;
      const joined = new Uint8Array(received);
      let o = 0;
      for (const g of got) (joined.set(g, o), o += g.length);
      assertEquals(joined, sent);
    } finally {
      await server.stop(1000);
    }
  },
);

Deno.test(
  { name: "transport: not the upgrade → 400, another path → 404, the listener goes on", ...opts },
  async () => {
    const l = await listenTransport({ kind: "ws", host: "127.0.0.1", port: 0, path: "/only" });
    const server = serveTransport(l, (conn) => hashThenSend(conn, 1024));
    try {
      for (
        const [req, status] of [
          ["GET /only HTTP/1.1\r\nHost: x\r\n\r\n", "400"],
          ["GET /other HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n", "404"],
        ]
      ) {
        const c = await Deno.connect({ hostname: "127.0.0.1", port: l.addr.port });
        await writeAll(c, new TextEncoder().encode(req));
        const answer = new TextDecoder().decode(await readAll(c));
        closeQuietly(c);
        assert(answer.startsWith(`HTTP/1.1 ${status} `), answer);
      }
      const err = await assertRejects(
        () => dialTransport({ kind: "ws", host: "127.0.0.1", port: l.addr.port, path: "/x" }),
      );
      assert(err instanceof UpgradeError && err.status === 404, String(err));
      const ok = await dialTransport({
        kind: "ws",
        host: "127.0.0.1",
        port: l.addr.port,
        path: "/only",
      });
      try {
        await uploadHalfCloseDownload(ok, 4096, 1024);
      } finally {
        closeQuietly(ok);
      }
    } finally {
      await server.stop(1000);
    }
  },
);
