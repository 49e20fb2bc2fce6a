/**
 * The standalone front copies a request body onto its tunnel stream with each large piece's
 * mux frame header in the room in front of it (issue 20: the upload direction): header and
 * payload leave in one write of the client's session transport, as relay() sends a download.
 * Before, each large piece went out as a 12-byte header write and a payload write: twice the
 * transport writes, and a tiny segment per frame. A chunked and a Content-Length upload of
 * several MiB on one kept-alive public connection arrive byte-exact (SHA-256 at the app), and
 * the session's transport (the control connection, counted) sees no header-only write.
 */

import { assert, assertEquals } from "./_assert.ts";
import { serveConns, startClient, testLog } from "./_tunnel.ts";
import { blockStream, blockStreamSha256, listenLocal, within } from "./_util.ts";
import { BufferedReader, closeQuietly, type Duplex, writeAll } from "../lib/net/mod.ts";
import {
  copyBody,
  getHeader,
  readRequestHead,
  readResponseHead,
  requestBodyFraming,
} from "../lib/http/mod.ts";
import { handlePublicConn, TunnelServer } from "../lib/tunnel/mod.ts";
import { createHash } from "node:crypto";

const MiB = 1 << 20;
/** A mux frame header's size: a write of exactly this many bytes is a header sent alone. */
const headerBytes = 12;

/** A public-side connection that records the size of every write asked of it. */
class CountingConn implements Duplex {
  readonly writes: number[] = [];
  constructor(readonly inner: Deno.TcpConn) {}
  read(p: Uint8Array): Promise<number | null> {
    return this.inner.read(p);
  }
  write(p: Uint8Array): Promise<number> {
    this.writes.push(p.length);
    return this.inner.write(p);
  }
  closeWrite(): Promise<void> {
    return this.inner.closeWrite();
  }
  close(): void {
    this.inner.close();
  }
}

/**
 * The app: for each request, hashes its body as lib/http decodes it and answers the hex
 * SHA-256 (kept-alive connections, any number of requests).
 */
function startHashingApp(): { port: number; close(): Promise<void> } {
  return serveConns(async (c) => {
    const r = new BufferedReader(c);
    while (true) {
      const head = await readRequestHead(r).catch(() => null);
      if (head === null) return;
      const hash = createHash("sha256");
      await copyBody(r, c, requestBodyFraming(head), (p) => {
        hash.update(p);
        return Promise.resolve();
      });
      // A chunked body is hashed as it travels: framing and all (copyBody keeps it).
      const hex = new TextEncoder().encode(hash.digest("hex"));
      await writeAll(
        c,
        new TextEncoder().encode(`HTTP/1.1 200 OK\r\nContent-Length: ${hex.length}\r\n\r\n`),
      );
      await writeAll(c, hex);
    }
  });
}

/** SHA-256 of the chunked wire form {@linkcode chunkedBody} writes for `total` bytes. */
function chunkedSha256(total: number, seed: number): string {
  const h = createHash("sha256");
  for (const piece of chunkedBody(total, seed)) h.update(piece);
  return h.digest("hex");
}

/** The body of `blockStream(total, seed)` in chunked framing, one chunk per block. */
function* chunkedBody(total: number, seed: number): Generator<Uint8Array> {
  const enc = new TextEncoder();
  for (const block of blockStream(total, seed)) {
    yield enc.encode(`${block.length.toString(16)}\r\n`);
    yield block;
    yield enc.encode("\r\n");
  }
  yield enc.encode("0\r\n\r\n");
}

/** The next response's body on `r` (Content-Length framed), as text. */
async function responseText(r: BufferedReader): Promise<string> {
  const head = await within(readResponseHead(r), "a response head");
  assertEquals(head.status, 200);
  const n = Number(getHeader(head.headers, "content-length"));
  return new TextDecoder().decode(await within(r.readExact(n), "a response body"));
}

Deno.test("tunnel front: a request body's large pieces go onto the session transport with their frame header, no header-only write", async () => {
  const app = startHashingApp();
  const server = new TunnelServer({
    // No pings while the bodies move: a ping's answer is a 12-byte write too.
    heartbeatIntervalMs: 600_000,
    heartbeatTimeoutMs: 600_000,
    log: testLog("tunnel-server"),
  });
  const id = "identifier-frames-" + crypto.randomUUID();
  await server.addHost("app.test", id);
  const listener = listenLocal();
  const port = listener.addr.port;
  const counted: CountingConn[] = [];
  const handled: Promise<void>[] = [];
  const accepting = (async () => {
    for await (const c of listener) {
      const conn = new CountingConn(c);
      counted.push(conn);
      const addr = c.remoteAddr as Deno.NetAddr;
      const peer = { ip: addr.hostname, remote: `${addr.hostname}:${addr.port}` };
      handled.push(handlePublicConn(server, conn, peer, { publicPort: port }));
    }
  })();
  const client = startClient({
    server: `http://127.0.0.1:${port}`,
    identifier: id,
    local: { host: "127.0.0.1", port: app.port },
    heartbeatIntervalMs: 600_000,
    heartbeatTimeoutMs: 600_000,
  });
  let user: Deno.TcpConn | undefined;
  try {
    await client.connected();
    assertEquals(counted.length, 1, "the client's control connection");
    const control = counted[0];
    const before = control.writes.length;
    user = await Deno.connect({ hostname: "127.0.0.1", port });
    const r = new BufferedReader(user);
    const enc = new TextEncoder();
    // A chunked upload: the app hashes the wire form as copyBody relays it (framing kept).
    const chunkedTotal = 6 * MiB + 4321;
    const sending = (async () => {
      await writeAll(
        user!,
        enc.encode("POST /up HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"),
      );
      for (const piece of chunkedBody(chunkedTotal, 1)) await writeAll(user!, piece);
    })();
    const chunkedHash = await within(responseText(r), "the chunked upload's answer");
    await sending;
    assertEquals(chunkedHash, chunkedSha256(chunkedTotal, 1), "the chunked body, byte-exact");
    // A Content-Length upload on the same connection.
    const lengthTotal = 5 * MiB + 77;
    const sendingLength = (async () => {
      await writeAll(
        user!,
        enc.encode(`POST /up HTTP/1.1\r\nHost: app.test\r\nContent-Length: ${lengthTotal}\r\n\r\n`),
      );
      for (const block of blockStream(lengthTotal, 2)) await writeAll(user!, block);
    })();
    const lengthHash = await within(responseText(r), "the Content-Length upload's answer");
    await sendingLength;
    assertEquals(lengthHash, blockStreamSha256(lengthTotal, 2), "the length body, byte-exact");
    const writes = control.writes.slice(before);
    const moved = writes.reduce((a, b) => a + b, 0);
    assert(moved >= chunkedTotal + lengthTotal, `the bodies went over the control connection`);
    const headerOnly = writes.filter((n) => n === headerBytes).length;
    // Before: one per large piece's frame (11 MiB in frames of at most 256 KiB: 44 or more).
    assert(
      headerOnly <= 2,
      `${headerOnly} header-only writes among ${writes.length} (sizes ${writes.slice(0, 40)})`,
    );
  } finally {
    if (user) closeQuietly(user);
    await client.stop();
    await server.close();
    listener.close();
    await accepting.catch(() => {});
    for (const c of counted) closeQuietly(c);
    await Promise.all(handled);
    await app.close();
  }
});
