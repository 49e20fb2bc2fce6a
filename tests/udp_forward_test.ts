/**
 * lib/udp: the flow table's bounds (flows, idle expiry, queued bytes) with drops counted, and
 * the static UDP forward — datagrams in order through it to an echo, `dig` through it to a
 * real dnsmasq, and a flood of new flows held to the flow bound with the rest counted.
 */

import { assert, assertEquals } from "./_assert.ts";
import { FlowTable, startUdpForward, UdpDrops, UdpSocket } from "../lib/udp/mod.ts";
import { dig, dnsAnswer, dnsQuery, exampleTestAddress, startDnsmasq } from "./_dns.ts";

const local = { host: "127.0.0.1", port: 0 };

Deno.test("udp flows: bounded in number (oldest evicted), expired when idle, bytes capped", () => {
  const closed: string[] = [];
  const drops = new UdpDrops();
  const t = new FlowTable<{ close(): void }>(
    { idleTimeoutMs: 1000, maxFlows: 3, maxQueuedBytes: 100 },
    drops,
  );
  try {
    const open = (k: string) => t.getOrOpen(k, () => ({ close: () => closed.push(k) }));
    for (const k of ["a", "b", "c"]) open(k);
    t.touch("a"); // a talked last: b is now the least recently active
    for (const k of ["d", "e"]) open(k);
    assertEquals([t.size, t.opened, t.evicted, closed.join()], [3, 5, 2, "b,c"]);
    assert(t.get("a") && t.get("e") && !t.get("b"));
    assert(t.canOpen("x", 2) && !t.canOpen("x", 3));
    assertEquals(drops.count("flow-limit"), 1);
    // Nothing is idle yet; a second later (by the clock given) every flow is.
    assertEquals(t.sweep(performance.now() + 10), 0);
    assertEquals(t.sweep(performance.now() + 1001), 3);
    assertEquals([t.size, t.expired], [0, 3]);
    assert(t.reserve(60) && !t.reserve(41) && t.reserve(40));
    assertEquals([t.queuedBytes, drops.count("queue-full")], [100, 1]);
    t.release(100);
    assertEquals(t.queuedBytes, 0);
    open("f");
  } finally {
    t.close();
  }
  assertEquals(closed.length, 6);
});

/** A UDP echo on loopback. */
async function echo(): Promise<UdpSocket> {
  const s = await UdpSocket.bind("127.0.0.1", 0);
  s.onMessage = (d, from) => void s.send(d, from).catch(() => {});
  return s;
}

Deno.test("udp forward: numbered datagrams come back through it in order, none lost", async () => {
  const e = await echo();
  const fwd = await startUdpForward({ listen: local, to: e.addr });
  const client = await UdpSocket.bind("127.0.0.1", 0);
  try {
    const got: number[] = [];
    let wake = () => {};
    client.onMessage = (d) => {
      got.push(new DataView(d.buffer, d.byteOffset).getUint32(0));
      wake();
    };
    // Lock-step (one in flight) so a loss on a busy box cannot happen in a socket buffer.
    const n = 300;
    for (let i = 0; i < n; i++) {
      const arrived = new Promise<void>((r) => wake = r);
      const d = new Uint8Array(512);
      new DataView(d.buffer).setUint32(0, i);
      await client.send(d, fwd.addr);
      await arrived;
    }
    assertEquals(got, Array.from({ length: n }, (_, i) => i));
    assertEquals([fwd.stats.datagramsUp, fwd.stats.datagramsDown], [n, n]);
    assertEquals([fwd.flows.size, fwd.drops.total], [1, 0]);
  } finally {
    client.close();
    fwd.stop();
    e.close();
  }
});

Deno.test("udp forward: dig and raw queries through it to dnsmasq", async () => {
  const dns = await startDnsmasq();
  const fwd = await startUdpForward({ listen: local, to: { host: "localhost", port: dns.port } });
  try {
    assertEquals(await dig(fwd.addr.port, "www.example.test"), exampleTestAddress);
    const client = await UdpSocket.bind("127.0.0.1", 0);
    try {
      const ids: number[] = [];
      let wake = () => {};
      client.onMessage = (d) => {
        const a = dnsAnswer(d);
        if (a.a === exampleTestAddress) ids.push(a.id);
        wake();
      };
      for (let id = 1; id <= 50; id++) {
        const arrived = new Promise<void>((r) => wake = r);
        await client.send(dnsQuery(id, `host${id}.example.test`), fwd.addr);
        await arrived;
      }
      assertEquals(ids, Array.from({ length: 50 }, (_, i) => i + 1));
    } finally {
      client.close();
    }
    assertEquals(fwd.drops.total, 0);
  } finally {
    fwd.stop();
    await dns.stop();
  }
});

Deno.test("udp forward: a flood of new flows is held to the bound; a talking peer still gets through", async () => {
  const e = await echo();
  const maxFlows = 32;
  const fwd = await startUdpForward({ listen: local, to: e.addr, maxFlows });
  const peers = await Promise.all(
    Array.from({ length: 120 }, () => UdpSocket.bind("127.0.0.1", 0)),
  );
  const client = await UdpSocket.bind("127.0.0.1", 0);
  try {
    // In waves of 16 (under the bound of sockets still binding): every peer opens a flow and
    // the oldest are evicted.
    for (let i = 0; i < peers.length; i += 16) {
      for (const p of peers.slice(i, i + 16)) await p.send(Uint8Array.of(1, 2, 3), fwd.addr);
      const sent = Math.min(peers.length, i + 16);
      while (fwd.stats.datagramsUp + fwd.drops.total < sent) {
        await new Promise((r) => setTimeout(r, 10));
      }
    }
    assertEquals(fwd.flows.size, maxFlows);
    assertEquals(fwd.flows.peak, maxFlows);
    assertEquals([fwd.flows.opened, fwd.flows.evicted], [peers.length, peers.length - maxFlows]);
    // A burst of new peers while sockets bind is refused beyond the bound, never held.
    const burst = await Promise.all(
      Array.from({ length: 64 }, () => UdpSocket.bind("127.0.0.1", 0)),
    );
    peers.push(...burst);
    for (const p of burst) await p.send(Uint8Array.of(4), fwd.addr);
    while (fwd.flows.opened + fwd.drops.count("flow-limit") < peers.length) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assertEquals(fwd.flows.size, maxFlows);
    console.log(
      `${peers.length} new peers, bound ${maxFlows}: ${fwd.flows.opened} flows opened, ` +
        `${fwd.flows.evicted} evicted, ${fwd.drops.count("flow-limit")} refused while binding`,
    );
    // A peer arriving after the flood gets its answers: the flood churns, it does not lock out.
    let answered = 0, wake = () => {};
    client.onMessage = () => (answered++, wake());
    for (let i = 0; i < 5; i++) {
      const arrived = new Promise<void>((r) => wake = r);
      await client.send(Uint8Array.of(i), fwd.addr);
      await arrived;
    }
    assertEquals(answered, 5);
    assertEquals(fwd.flows.size, maxFlows);
  } finally {
    client.close();
    for (const p of peers) p.close();
    fwd.stop();
    e.close();
  }
});
