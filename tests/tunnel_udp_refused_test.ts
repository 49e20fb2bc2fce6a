/**
 * A UDP port its tunnel client refuses (lib/tunnel/refusals.ts): after the first refusal, new
 * peers' datagrams are dropped and counted ("refused") without a new tunnel stream each, for
 * a few seconds; the memory is bounded and expires.
 */

import { assert, assertEquals } from "./_assert.ts";
import { Refusals, udpRefusalTtlMs } from "../lib/tunnel/mod.ts";
import { UdpSocket } from "../lib/udp/mod.ts";
import { startClient, startTunnel } from "./_tunnel.ts";

Deno.test("refusals: remembered until they expire, bounded (the oldest forgotten first)", () => {
  let now = 0;
  const r = new Refusals<string>(1_000, 2, () => now);
  r.add("a");
  now = 999;
  assert(r.has("a"));
  now = 1_000;
  assert(!r.has("a"));
  assertEquals(r.size, 0);
  r.add("a");
  r.add("b");
  r.add("a"); // again: its memory starts over, and it is the newest now
  r.add("c"); // at the bound: "b", the oldest, is forgotten
  assertEquals([r.has("a"), r.has("b"), r.has("c"), r.size], [true, false, true, 2]);
});

Deno.test("tunnel --udp: datagrams to a port the client refuses cost one tunnel stream, then are dropped as refused", async () => {
  const probe = await UdpSocket.bind("127.0.0.1", 0);
  const port = probe.addr.port;
  await probe.close();
  const t = startTunnel({ udpPorts: { min: port, max: port } });
  const id = "identifier-udp-refused-01";
  // Local port 9 is nothing this client exposes: it answers each flow "no-such-port".
  await t.server.addUdpTunnel({ publicPort: port, identifier: id, localPort: 9 });
  const c = startClient({ server: t.url, identifier: id, local: { host: "127.0.0.1", port: 1 } });
  const peers = await Promise.all([0, 1, 2, 3].map(() => UdpSocket.bind("127.0.0.1", 0)));
  try {
    await c.connected();
    const dropped = () => {
      const d = t.server.udpTunnels()[0].stats.drops;
      return { refused: d.refused ?? 0, failed: d["send-failed"] ?? 0 };
    };
    const n = 40;
    const startedMs = performance.now();
    for (let i = 0; i < n; i++) {
      // Each from one of 4 peers (a new flow each time: the last one was refused), and only
      // once the server has dealt with the one before.
      await peers[i % 4].send(new TextEncoder().encode(`d${i}`), { host: "127.0.0.1", port });
      const deadline = Date.now() + 30_000;
      while (dropped().refused + dropped().failed < i + 1) {
        if (Date.now() > deadline) throw new Error(`datagram ${i} not accounted for`);
        await new Promise((r) => setTimeout(r, 5));
      }
    }
    const elapsedMs = performance.now() - startedMs;
    const streams = t.server.clients()[0].streams;
    // One stream, then one more per expiry of the refusal at most (the old code: one each).
    assert(streams >= 1 && streams <= 1 + Math.floor(elapsedMs / udpRefusalTtlMs), `${streams}`);
    assertEquals(dropped(), { refused: n - streams, failed: streams });
  } finally {
    for (const p of peers) await p.close();
    await c.stop();
    await t.close();
  }
});

Deno.test("tunnel --udp in a group: the member that refuses the port is passed over, the other serves every new peer", async () => {
  const echo = await UdpSocket.bind("127.0.0.1", 0);
  echo.onMessage = (d, from) => void echo.send(d, from);
  const probe = await UdpSocket.bind("127.0.0.1", 0);
  const port = probe.addr.port;
  await probe.close();
  const t = startTunnel({ udpPorts: { min: port, max: port }, duplicate: "balance" });
  const id = "identifier-udp-refused-02";
  await t.server.addUdpTunnel({ publicPort: port, identifier: id, localPort: echo.addr.port });
  const local = { host: "127.0.0.1", port: 1 };
  // A exposes nothing on that port (it refuses each flow); B allows it.
  const a = startClient({ server: t.url, identifier: id, local });
  await a.connected();
  const b = startClient({ server: t.url, identifier: id, local, allowPorts: [echo.addr.port] });
  const peers: UdpSocket[] = [];
  try {
    await b.connected();
    const n = 20;
    const startedMs = performance.now();
    for (let i = 0; i < n; i++) {
      const peer = await UdpSocket.bind("127.0.0.1", 0);
      peers.push(peer);
      let answered = false;
      peer.onMessage = () => answered = true;
      // A refused flow is lost (counted at the server): the peer sends again, as DNS would.
      // Every 200 ms or so, for up to 60 s: a bound for a hang, not for a slow box.
      const end = Date.now() + 60_000;
      while (!answered && Date.now() < end) {
        await peer.send(Uint8Array.of(i), { host: "127.0.0.1", port });
        for (let j = 0; j < 40 && !answered; j++) await new Promise((r) => setTimeout(r, 5));
      }
      assert(answered, `peer ${i} got no answer`);
    }
    const elapsedMs = performance.now() - startedMs;
    const [ca, cb] = t.server.clients();
    // A was asked once, then once more per expiry of its refusal at most; B took every peer.
    assert(
      ca.streams >= 1 && ca.streams <= 1 + Math.floor(elapsedMs / udpRefusalTtlMs),
      `${ca.streams}`,
    );
    assertEquals(cb.streams, n);
  } finally {
    for (const p of peers) await p.close();
    await b.stop();
    await a.stop();
    await t.close();
    await echo.close();
  }
});
