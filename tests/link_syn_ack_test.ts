/**
 * The far node of a link acknowledges a new stream on the frame that carries its result, not
 * in a frame of its own. Why it matters: a TLS link's far side (Deno.listenTls) cannot turn
 * Nagle off, so an ACK frame at accept followed by the result frame after the dial were two
 * small writes, the second held until the near node's delayed ACK — about 44 ms per proxied
 * connection (bench/quic.ts). Checked on a plaintext link, where the far node's frames can be
 * read off the wire: the first frame it sends on stream 1 is a data frame with ACK and the
 * one-byte result.
 */

import { assertEquals } from "./_assert.ts";
import { directDialer, LinkClient, serveLink } from "../lib/proxy/mod.ts";
import { closeQuietly } from "../lib/net/mod.ts";

/** A listener whose accepted connections record every byte they write. */
function recordingListener(inner: Deno.TcpListener, written: Uint8Array[]): Deno.TcpListener {
  const wrap = (c: Deno.TcpConn): Deno.TcpConn => {
    const write = c.write.bind(c);
    c.write = (p: Uint8Array) => {
      written.push(p.slice());
      return write(p);
    };
    return c;
  };
  return new Proxy(inner, {
    get(target, prop) {
      if (prop === "accept") return async () => wrap(await target.accept());
      if (prop === Symbol.asyncIterator) {
        return async function* () {
          for await (const c of target) yield wrap(c);
        };
      }
      const v = Reflect.get(target, prop);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

/** yamux frames (type, flags, stream, length) in a byte sequence. */
function frames(bytes: Uint8Array) {
  const out: { type: number; flags: number; stream: number; length: number }[] = [];
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let at = 0; at + 12 <= bytes.length;) {
    const f = { type: v.getUint8(at + 1), flags: v.getUint16(at + 2), stream: v.getUint32(at + 4) };
    const length = v.getUint32(at + 8);
    out.push({ ...f, length });
    at += 12 + (f.type === 0 ? length : 0);
  }
  return out;
}

Deno.test("link: the far node's ACK of a new stream rides on its result frame", async () => {
  const token = "syn-ack-test-token";
  const written: Uint8Array[] = [];
  const b = serveLink(
    recordingListener(Deno.listen({ hostname: "127.0.0.1", port: 0 }), written),
    { token, dialer: directDialer({ prefer: "ipv4" }) },
  );
  const origin = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const link = new LinkClient({
    addr: { host: "127.0.0.1", port: b.addr.port },
    token,
    waitMs: 30_000, // the link coming up is waited for, not timed
  });
  try {
    const reached = origin.accept();
    const s = await link.dial(
      { host: "127.0.0.1", port: origin.addr.port },
      AbortSignal.timeout(60_000),
    );
    closeQuietly(await reached);
    s.close();
    // After the one-byte hello reply, everything B wrote is yamux frames.
    const all = new Uint8Array(written.reduce((n, w) => n + w.length, 0));
    written.reduce((at, w) => (all.set(w, at), at + w.length), 0);
    const first = frames(all.subarray(1)).find((f) => f.stream === 1);
    // Data frame (type 0) with ACK (flag 2) carrying the 1-byte result, not a window update.
    assertEquals(first, { type: 0, flags: 2, stream: 1, length: 1 });
  } finally {
    await link.close();
    await b.stop();
    origin.close();
  }
});
