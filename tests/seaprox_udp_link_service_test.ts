/**
 * UDP over a seaprox link as processes, under a flood: node A's `udp://` forward
 * (`max-flows=256`) rides `--via link://` to node B; twice 5000 new peers each send one DNS
 * query.
 * A holds at most its bound of flows (each one link stream and one association at B), so
 * B's open sockets stay within the bound too (counted in /proc; RSS before and after
 * reported), and `dig` through A still gets its answer from dnsmasq afterwards.
 */

import { assert, assertEquals } from "./_assert.ts";
import { UdpSocket } from "../lib/udp/mod.ts";
import { dig, dnsQuery, exampleTestAddress, startDnsmasq } from "./_dns.ts";
import { portFor } from "./_seaprox.ts";
import { type ServiceProcess, startService } from "./_util.ts";

/** Open file descriptors and resident KiB of process `pid`. */
function usage(pid: number): { fds: number; rssKiB: number } {
  const fds = [...Deno.readDirSync(`/proc/${pid}/fd`)].length;
  const rss = /VmRSS:\s+(\d+)/.exec(Deno.readTextFileSync(`/proc/${pid}/status`))?.[1];
  return { fds, rssKiB: Number(rss) };
}

Deno.test("udp over link:// as processes: 2 x 5000 new forward peers held to max-flows at both nodes", async () => {
  const dns = await startDnsmasq();
  const dir = await Deno.makeTempDir({ prefix: "warren-udp-link-" });
  const nodes: ServiceProcess[] = [];
  const maxFlows = 256;
  try {
    await Deno.writeTextFile(`${dir}/token`, "udp-link-flood-token\n");
    const token = `--link-token-file=${dir}/token`;
    const b = await startService("seaprox.ts", ["--listen=link://127.0.0.1:0", token]);
    nodes.push(b);
    const a = await startService("seaprox.ts", [
      `--listen=udp://127.0.0.1:0?to=127.0.0.1:${dns.port}&max-flows=${maxFlows}`,
      `--via=link://127.0.0.1:${portFor(b, "link")}`,
      token,
    ]);
    nodes.push(a);
    await a.waitFor(/msg="link up"/);
    const port = portFor(a, "udp");
    assertEquals(await dig(port, "before.example.test"), exampleTestAddress);
    const before = { a: usage(a.child.pid), b: usage(b.child.pid) };
    const query = dnsQuery(7, "flood.example.test");
    const flood = async () => {
      for (let wave = 0; wave < 25; wave++) {
        const peers = await Promise.all(
          Array.from({ length: 200 }, () => UdpSocket.bind("127.0.0.1", 0)),
        );
        for (const p of peers) await p.send(query, { host: "127.0.0.1", port });
        await Promise.all(peers.map((p) => p.close()));
      }
      // A peer after the flood is answered (dig retries: its first try may meet the bound of
      // flows still opening).
      assertEquals(await dig(port, "after.example.test"), exampleTestAddress);
      return { a: usage(a.child.pid), b: usage(b.child.pid) };
    };
    // Two floods: the second shows whether memory keeps growing with peers or levels off.
    const first = await flood();
    const after = await flood();
    const kib = (k: "a" | "b") =>
      `RSS ${before[k].rssKiB} -> ${first[k].rssKiB} -> ${after[k].rssKiB} KiB`;
    console.log(
      `udp:// via link, 2 x 5000 new peers, max-flows ${maxFlows}: node A fds ${before.a.fds} -> ` +
        `${first.a.fds} -> ${after.a.fds}, ${kib("a")}; node B fds ${before.b.fds} -> ` +
        `${first.b.fds} -> ${after.b.fds}, ${kib("b")}`,
    );
    // A's flows are link streams, not sockets: its descriptors do not grow with peers.
    assert(after.a.fds - before.a.fds <= 16, `A: ${before.a.fds} -> ${after.a.fds} fds`);
    // B: one outbound socket per association, at most the flows A holds and opens.
    assert(after.b.fds - before.b.fds <= 2 * maxFlows, `B: ${before.b.fds} -> ${after.b.fds}`);
  } finally {
    for (const n of nodes.reverse()) await n.stop();
    await Deno.remove(dir, { recursive: true });
    await dns.stop();
  }
});
