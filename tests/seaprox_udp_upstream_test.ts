/**
 * UDP through a SOCKS5 `--forward` upstream: the datagrams take the upstream's own UDP
 * ASSOCIATE, never a way around the chain. PySocks asks dnsmasq through seaprox whose hop is
 * dante (a real SOCKS5 server with UDP ASSOCIATE), answered in order, and dig through a
 * `udp://` forward whose peers take the same hop; the same through a
 * link then dante (datagrams carried to the far node, which talks to dante's relay); a
 * microsocks hop (no UDP ASSOCIATE) is refused with 0x07 and a line naming the hop.
 */

import { assert, assertEquals } from "./_assert.ts";
import { Logger } from "../lib/log.ts";
import { BufferedReader, closeQuietly, dial } from "../lib/net/mod.ts";
import {
  directDialer,
  parseForwardUrl,
  parseListenUrl,
  type ProxyConnectionRecord,
  type SeaproxConfig,
  serveLink,
  startChain,
  startSeaprox,
} from "../lib/proxy/mod.ts";
import { directUdpOpener, startUdpForward } from "../lib/udp/mod.ts";
import { dig, exampleTestAddress, startDnsmasq } from "./_dns.ts";
import { startDante, startMicrosocks } from "./_upstreams.ts";
import { run, until } from "./_util.ts";

const pysocksScript = new URL("./py/pysocks_dns.py", import.meta.url).pathname;

/** seaprox A with one SOCKS5 listener; closed connections and log lines collected. */
async function nodeA(cfg: Partial<SeaproxConfig>) {
  const closed: ProxyConnectionRecord[] = [];
  const lines: string[] = [];
  const sp = await startSeaprox({
    listeners: [parseListenUrl("socks5://127.0.0.1:0")],
    log: new Logger("debug", {}, (l) => void lines.push(l)),
    hooks: { onClose: (r) => void closed.push(r) },
    ...cfg,
  });
  return { sp, port: sp.servers[0].addr.port, closed, lines };
}

/** PySocks: `n` DNS queries through `port` to dnsmasq; every answer, in order. */
async function pysocks(port: number, dnsPort: number, n: number): Promise<void> {
  const r = await run("/usr/bin/python3", [pysocksScript, `${port}`, `${dnsPort}`, `${n}`]);
  assertEquals(r.code, 0, r.stderr);
  const got = JSON.parse(r.stdout) as { ids: number[]; addrs: string[]; retries: number };
  console.log(`PySocks: ${got.ids.length}/${n} answered, ${got.retries} retried`);
  assertEquals(got.ids, Array.from({ length: n }, (_, i) => i + 1));
  assert(got.addrs.every((x) => x === exampleTestAddress), got.addrs.join());
}

Deno.test("udp through a SOCKS5 upstream: PySocks and dig -> seaprox --forward dante -> dnsmasq", async () => {
  const dns = await startDnsmasq();
  const dante = await startDante();
  const hops = [parseForwardUrl(`socks5://127.0.0.1:${dante.port}`)];
  const a = await nodeA({ forward: hops });
  const chain = startChain(hops, { base: directDialer() });
  const fwd = await startUdpForward({
    listen: { host: "127.0.0.1", port: 0 },
    to: { host: "127.0.0.1", port: dns.port },
    open: chain.udp,
  });
  try {
    assert(a.lines.some((l) => l.includes("udpAssociate=on")), a.lines.join("\n"));
    await pysocks(a.port, dns.port, 30);
    await until("the association's end", () => a.closed.length === 1);
    assertEquals([a.closed[0].scheme, a.closed[0].end], ["socks5-udp", "done"]);
    assert(a.closed[0].bytesUp > 0 && a.closed[0].bytesDown > a.closed[0].bytesUp);
    // A udp:// forward through the same hop: each dig is a peer with its own UDP ASSOCIATE.
    assertEquals(await dig(fwd.addr.port, "forward.example.test"), exampleTestAddress);
    assert(fwd.stats.datagramsUp >= 1 && fwd.stats.datagramsDown >= 1, JSON.stringify(fwd.stats));
  } finally {
    fwd.stop();
    await a.sp.stop();
    await dante.stop();
    await dns.stop();
  }
});

Deno.test("udp through link then dante: the far node talks to dante's relay", async () => {
  const dns = await startDnsmasq();
  const dante = await startDante();
  const token = "udp-upstream-link-token";
  const b = serveLink(Deno.listen({ hostname: "127.0.0.1", port: 0 }), {
    token,
    dialer: directDialer({ prefer: "ipv4" }),
    udp: directUdpOpener({ prefer: "ipv4" }),
  });
  const chain = startChain(
    [`link://127.0.0.1:${b.addr.port}`, `socks5://127.0.0.1:${dante.port}`].map(parseForwardUrl),
    { base: directDialer(), link: { token } },
  );
  const a = await nodeA({ dialer: chain.dial, udp: { open: chain.udp } });
  try {
    assertEquals(chain.udpRefusal, undefined);
    await pysocks(a.port, dns.port, 20);
    await until("the association's end", () => a.closed.length === 1);
    assertEquals([a.closed[0].scheme, a.closed[0].end], ["socks5-udp", "done"]);
  } finally {
    await a.sp.stop();
    await chain.close();
    await b.stop();
    await dante.stop();
    await dns.stop();
  }
});

Deno.test("udp through microsocks (no UDP ASSOCIATE): 0x07, the hop named", async () => {
  const ms = await startMicrosocks();
  const hop = `socks5://127.0.0.1:${ms.port}`;
  const a = await nodeA({ forward: [parseForwardUrl(hop)] });
  const control = await dial("127.0.0.1", a.port);
  try {
    const r = new BufferedReader(control, 64);
    await control.write(Uint8Array.of(5, 1, 0));
    assertEquals([...await r.readExact(2)], [5, 0]);
    await control.write(Uint8Array.of(5, 3, 0, 1, 0, 0, 0, 0, 0, 0));
    assertEquals((await r.readExact(2))[1], 7);
    await until("the association's end", () => a.closed.length === 1);
    assertEquals(a.closed[0].failure, "udp-unsupported");
    const line = a.lines.find((l) => l.includes("failure=udp-unsupported")) ?? "";
    assert(line.includes(`hop 1/1 ${hop} refused UDP ASSOCIATE`), line);
  } finally {
    closeQuietly(control);
    await a.sp.stop();
    await ms.stop();
  }
});
