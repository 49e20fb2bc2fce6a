/**
 * A mutual-TLS listener (node:tls under lib/net listenTls) applies TCP backpressure to a
 * sender its reader does not keep up with, instead of buffering up to 64 MiB and cutting the
 * connection, and the peer's FIN still arrives after the pause (a paused node:tls socket loses
 * it under Deno 2.9.6, so the TCP handle under it is paused instead).
 */

import { assert, assertEquals } from "./_assert.ts";
import { makePki } from "./_tls.ts";
import { blockStream, blockStreamSha256, drainHash, readWithin, within } from "./_util.ts";
import { closeQuietly, withPrefix, writeAll } from "../lib/net/mod.ts";
import {
  connectTls,
  listenTls,
  loadTlsClientConfig,
  loadTlsServerConfig,
} from "../lib/transport/mod.ts";

Deno.test("tls: a slow reader on a mutual-TLS listener pauses the sender; 128 MiB and the FIN arrive", async () => {
  const pki = await makePki();
  const listener = await listenTls(
    { hostname: "127.0.0.1", port: 0 },
    loadTlsServerConfig({ certFile: pki.serverCert, keyFile: pki.serverKey, caFile: pki.ca }),
  );
  const total = 128 * 1024 * 1024;
  let client: Deno.Conn | undefined;
  let server: Deno.Conn | undefined;
  try {
    const accepted = listener.accept();
    client = await connectTls(
      "localhost",
      listener.addr.port,
      loadTlsClientConfig({ caFile: pki.ca, certFile: pki.clientCert, keyFile: pki.clientKey }),
    );
    server = await accepted;
    const c = client;
    let sent = 0;
    const sending = (async () => {
      for (const chunk of blockStream(total, 11)) {
        await writeAll(c, chunk);
        sent += chunk.length;
      }
      await c.closeWrite();
    })();
    // Read a little, then nothing for a while: the sender must stall near the socket buffers
    // (before the fix it ran ahead until 64 MiB were buffered, and then the connection was cut).
    const first = new Uint8Array(64 * 1024);
    const n = await readWithin(server, first, "the first bytes at the server");
    assert(n !== null);
    await new Promise((r) => setTimeout(r, 500));
    assert(sent < 48 * 1024 * 1024, `the sender ran ${sent} bytes ahead of a reader that stopped`);
    // Then everything arrives, in order, followed by EOF (the FIN survives the pause).
    // 128 MiB through TLS: bounded far above a loaded box's time, failing named, never hanging.
    const got = await within(
      drainHash(withPrefix(server, first.slice(0, n))),
      "the 128 MiB and the FIN at the reader",
      240_000,
    );
    await within(sending, "the sender's end", 240_000);
    assertEquals(got, { bytes: total, sha256: blockStreamSha256(total, 11) });
  } finally {
    if (client) closeQuietly(client);
    if (server) closeQuietly(server);
    listener.close();
    await pki.remove();
  }
});
