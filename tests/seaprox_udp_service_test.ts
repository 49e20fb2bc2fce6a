/**
 * seaprox's `udp://host:port?to=host:port` listener as a process: `dig` through it to a real
 * dnsmasq, and a flood of 5000 new peer flows held to `max-flows` — its open sockets stay
 * within the bound (counted in /proc), RSS before and after reported — after which a peer
 * still gets its answer (dig may retry: UDP on a busy machine may lose one). Also: a udp:// listener through an HTTP CONNECT hop is refused at start, naming it.
 */

import { assert, assertEquals } from "./_assert.ts";
import { UdpSocket } from "../lib/udp/mod.ts";
import { dig, dnsQuery, exampleTestAddress, startDnsmasq } from "./_dns.ts";
import { portOf, run, startService } from "./_util.ts";

/** Open file descriptors and resident KiB of process `pid`. */
function usage(pid: number): { fds: number; rssKiB: number } {
  const fds = [...Deno.readDirSync(`/proc/${pid}/fd`)].length;
  const rss = /VmRSS:\s+(\d+)/.exec(Deno.readTextFileSync(`/proc/${pid}/status`))?.[1];
  return { fds, rssKiB: Number(rss) };
}

Deno.test("seaprox udp:// forward: dig through it, and 5000 new flows held to max-flows", async () => {
  const dns = await startDnsmasq();
  const maxFlows = 256;
  const svc = await startService("seaprox.ts", [
    "--listen",
    `udp://127.0.0.1:0?to=127.0.0.1:${dns.port}&max-flows=${maxFlows}`,
  ]);
  try {
    const port = portOf(svc.addrs.get("udp")!);
    assertEquals(await dig(port, "before.example.test"), exampleTestAddress);
    const before = usage(svc.child.pid);
    // 5000 peers, 200 sockets at a time, one query each (answers are not waited for).
    const query = dnsQuery(7, "flood.example.test");
    for (let wave = 0; wave < 25; wave++) {
      const peers = await Promise.all(
        Array.from({ length: 200 }, () => UdpSocket.bind("127.0.0.1", 0)),
      );
      for (const p of peers) await p.send(query, { host: "127.0.0.1", port });
      for (const p of peers) p.close();
    }
    // The last wave's datagrams are all in once a later peer's query is answered (one queue).
    assertEquals(await dig(port, "after.example.test"), exampleTestAddress);
    const after = usage(svc.child.pid);
    console.log(
      `udp forward, 5000 new flows, max-flows ${maxFlows}: open fds ${before.fds} -> ${after.fds}, ` +
        `RSS ${before.rssKiB} KiB -> ${after.rssKiB} KiB`,
    );
    // One socket per flow held, plus at most max-flows still binding: never one per peer.
    assert(after.fds - before.fds <= 2 * maxFlows, `${before.fds} -> ${after.fds} fds`);
    assert(after.fds - before.fds >= maxFlows / 2, `the flood did open flows: ${after.fds}`);
  } finally {
    await svc.stop();
    await dns.stop();
  }
});

Deno.test("seaprox udp:// forward: refused through an HTTP CONNECT hop, which cannot carry UDP", async () => {
  const r = await run(Deno.execPath(), [
    "run",
    "-A",
    new URL("../services/seaprox.ts", import.meta.url).pathname,
    "--listen",
    "udp://127.0.0.1:0?to=127.0.0.1:53",
    "--forward",
    "http://127.0.0.1:3128",
  ]);
  assertEquals(r.code, 2, r.stderr);
  assert(
    r.stderr.includes("hop 1/1 http://127.0.0.1:3128 (HTTP CONNECT) cannot carry UDP"),
    r.stderr,
  );
});
