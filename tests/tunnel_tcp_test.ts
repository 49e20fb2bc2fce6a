/** TCP tunnels: a public port on the server relayed to a client's local TCP service. */
import { assertEquals } from "./_assert.ts";
import { blockStreamSha256, countDlopens, freePort } from "./_util.ts";
import { hashThrough, startClient, startHasher, startTunnel } from "./_tunnel.ts";
import { holdResets } from "../lib/net/mod.ts";

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
    const results = await Promise.all([1, 2].map((seed) => hashThrough(publicPort, total, seed)));
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

Deno.test("tunnel: a client's TCP port opens without loading libc (TCP_NODELAY per connection, not the once-per-listener scan of every fd)", async () => {
  const hasher = startHasher();
  const publicPort = freePort();
  const t = startTunnel({ tcpPorts: { min: publicPort, max: publicPort } });
  const id = "identifier-tcp-tunnel-08";
  await t.server.addHost("tcp.test", id);
  // As a service does (services/_kit.ts): libc held for the process, so the mux sessions'
  // TCP_NOTSENT_LOWAT (lib/mux) opens it once between them, not once each.
  const releaseLibc = holdResets();
  try {
    // While the client connects (its port opens) and the port relays.
    const opens = await countDlopens(async () => {
      const c = startClient({
        server: t.url,
        identifier: id,
        local: { host: "127.0.0.1", port: 1 },
        tcp: [{ publicPort, local: { host: "127.0.0.1", port: hasher.port } }],
      });
      try {
        await c.connected();
        const total = 64 * 1024;
        assertEquals(await hashThrough(publicPort, total, 3), blockStreamSha256(total, 3));
      } finally {
        await c.stop();
      }
    });
    // The held library's one opening (the client's and the server's session); none for the port.
    assertEquals(opens, 1, "Deno.dlopen calls");
  } finally {
    releaseLibc();
    await t.close();
    await hasher.close();
  }
});
