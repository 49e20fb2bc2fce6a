/** TCP tunnels: a public port on the server relayed to a client's local TCP service. */
import { createHash } from "node:crypto";
import { assertEquals } from "./_assert.ts";
import { blockStreamSha256, listenLocal, sendBlocks } from "./_util.ts";
import { startClient, startTunnel } from "./_tunnel.ts";
import { closeQuietly } from "../lib/net/mod.ts";

/** A local TCP service: hashes everything it reads and, at EOF, answers the hex SHA-256. */
function startHasher(): { port: number; close(): Promise<void> } {
  const l = listenLocal();
  const conns = new Set<Deno.Conn>();
  const loop = (async () => {
    for await (const c of l) {
      conns.add(c);
      (async () => {
        const h = createHash("sha256");
        const buf = new Uint8Array(256 * 1024);
        try {
          while (true) {
            const n = await c.read(buf);
            if (n === null) break;
            h.update(buf.subarray(0, n));
          }
          await c.write(new TextEncoder().encode(h.digest("hex")));
        } finally {
          conns.delete(c);
          closeQuietly(c);
        }
      })();
    }
  })();
  return {
    port: l.addr.port,
    close: async () => {
      l.close();
      for (const c of conns) closeQuietly(c);
      await loop.catch(() => {});
    },
  };
}

function freePort(): number {
  const l = listenLocal();
  const p = l.addr.port;
  l.close();
  return p;
}

Deno.test("tunnel: a TCP tunnel relays 64 MiB with half-close and checksum", async () => {
  const hasher = startHasher();
  const publicPort = freePort();
  const t = startTunnel({ tcpPorts: { min: publicPort, max: publicPort } });
  const id = "identifier-tcp-tunnel-07";
  await t.server.addHost("tcp.test", id);
  const c = startClient({
    server: t.url,
    identifier: id,
    local: { host: "127.0.0.1", port: 1 },
    tcp: [{ publicPort, local: { host: "127.0.0.1", port: hasher.port } }, {
      publicPort: publicPort + 1, // outside the allowed range: refused, the rest works
      local: { host: "127.0.0.1", port: hasher.port },
    }],
  });
  try {
    await c.connected();
    const total = 64 * 1024 * 1024;
    const results = await Promise.all([1, 2].map(async (seed) => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: publicPort });
      try {
        await sendBlocks(conn, total, seed);
        await conn.closeWrite();
        const buf = new Uint8Array(128);
        let got = "";
        while (true) {
          const n = await conn.read(buf);
          if (n === null) break;
          got += new TextDecoder().decode(buf.subarray(0, n));
        }
        return got;
      } finally {
        closeQuietly(conn);
      }
    }));
    assertEquals(results, [blockStreamSha256(total, 1), blockStreamSha256(total, 2)]);
    const clients = t.server.clients();
    assertEquals(clients[0].tcpPorts, [publicPort]);
  } finally {
    await c.stop();
    await t.close();
    await hasher.close();
  }
  // The port is released with the client.
  const again = Deno.listen({ hostname: "127.0.0.1", port: publicPort });
  again.close();
});
