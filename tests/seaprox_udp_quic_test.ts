/**
 * UDP over the QUIC link as processes (run with --unstable-net): node A (`--via quic://`)
 * carries SOCKS5 UDP ASSOCIATE and a `udp://` forward to node B as QUIC datagrams. PySocks
 * asks dnsmasq 50 queries (answered in order), `dig` goes through the forward, and a
 * datagram larger than a QUIC datagram can hold on the path rides the association's stream
 * instead — delivered, and counted on both ends (`onStream`), small ones as `quicDatagrams`;
 * a flood of 2000 new forward peers keeps the far node's sockets within the flow bound.
 */

import { assert, assertEquals } from "./_assert.ts";
import { BufferedReader, closeQuietly, dial } from "../lib/net/mod.ts";
import { decodeSocks5Udp, encodeSocks5Udp } from "../lib/socks5/mod.ts";
import { UdpSocket } from "../lib/udp/mod.ts";
import { dig, dnsQuery, exampleTestAddress, startDnsmasq } from "./_dns.ts";
import { portFor } from "./_seaprox.ts";
import { makePki } from "./_tls.ts";
import { run, type ServiceProcess, startService, until } from "./_util.ts";

const quic = { denoArgs: ["--unstable-net"] };

/** Open file descriptors of process `pid`. */
function openFds(pid: number): number {
  return [...Deno.readDirSync(`/proc/${pid}/fd`)].length;
}
const pysocksScript = new URL("./py/pysocks_dns.py", import.meta.url).pathname;

/** A raw SOCKS5 UDP ASSOCIATE: the control connection and the relay's address. */
async function associate(port: number, fromPort: number) {
  const control = await dial("127.0.0.1", port);
  const r = new BufferedReader(control, 64);
  await control.write(Uint8Array.of(5, 1, 0));
  assertEquals([...await r.readExact(2)], [5, 0]);
  await control.write(Uint8Array.of(5, 3, 0, 1, 0, 0, 0, 0, fromPort >> 8, fromPort & 0xff));
  const head = await r.readExact(4);
  assertEquals(head[1], 0);
  const rest = await r.readExact(head[3] === 1 ? 6 : 18);
  const relayPort = (rest[rest.length - 2] << 8) | rest[rest.length - 1];
  return { control, relay: { host: "127.0.0.1", port: relayPort } };
}

Deno.test("udp over quic://: PySocks and dig to dnsmasq as QUIC datagrams; a big datagram on the stream, counted", async () => {
  const pki = await makePki();
  const dns = await startDnsmasq();
  const echo = await UdpSocket.bind("127.0.0.1", 0);
  echo.onMessage = (d, from) => void echo.send(d, from).catch(() => {});
  const nodes: ServiceProcess[] = [];
  const maxFlows = 128;
  try {
    await Deno.writeTextFile(`${pki.dir}/token`, "quic-udp-token-1234\n");
    const b = await startService("seaprox.ts", [
      "--listen=quic://127.0.0.1:0",
      `--link-token-file=${pki.dir}/token`,
      `--tls-cert=${pki.serverCert}`,
      `--tls-key=${pki.serverKey}`,
    ], quic);
    nodes.push(b);
    const a = await startService("seaprox.ts", [
      "--listen=socks5://127.0.0.1:0",
      `--listen=udp://127.0.0.1:0?to=127.0.0.1:${dns.port}&max-flows=${maxFlows}`,
      `--via=quic://localhost:${portFor(b, "quic")}`,
      `--link-token-file=${pki.dir}/token`,
      `--tls-ca=${pki.ca}`,
      "--prefer-ipv4",
      "--log-level=debug",
    ], { ...quic, readyCount: 2 });
    nodes.push(a);
    const up = await a.waitFor(/msg="link up".*transport=quic/);
    console.log(up);
    const socks = portFor(a, "socks5");

    const n = 50;
    const r = await run("/usr/bin/python3", [pysocksScript, `${socks}`, `${dns.port}`, `${n}`]);
    assertEquals(r.code, 0, r.stderr);
    const got = JSON.parse(r.stdout) as { ids: number[]; addrs: string[]; retries: number };
    console.log(`PySocks over QUIC: ${got.ids.length}/${n} answered, ${got.retries} retried`);
    assertEquals(got.ids, Array.from({ length: n }, (_, i) => i + 1));
    assert(got.addrs.every((x) => x === exampleTestAddress), got.addrs.join());
    const quicLine = await b.waitFor(/msg="udp association closed"/);
    assert(/quicDatagrams=5\d/.test(quicLine) && / onStream=0/.test(quicLine), quicLine);

    assertEquals(await dig(portFor(a, "udp"), "forward.example.test"), exampleTestAddress);

    // 3000 bytes: more than a QUIC datagram holds on a fresh path (about 1,160), so it
    // rides the association's stream both ways; a small one goes as a datagram.
    const client = await UdpSocket.bind("127.0.0.1", 0);
    const assoc = await associate(socks, client.addr.port);
    const sizes: number[] = [];
    client.onMessage = (d) => void sizes.push(decodeSocks5Udp(d).data.length);
    for (const size of [3000, 100]) {
      const want = sizes.length + 1;
      for (let i = 0; i < 20 && sizes.length < want; i++) {
        await client.send(encodeSocks5Udp(echo.addr, new Uint8Array(size).fill(7)), assoc.relay);
        for (let j = 0; j < 25 && sizes.length < want; j++) {
          await new Promise((res) => setTimeout(res, 10));
        }
      }
    }
    assertEquals(sizes.slice(0, 2), [3000, 100]);
    closeQuietly(assoc.control);
    client.close();
    const far = await b.waitFor(/msg="udp association closed".*onStream=[1-9]/);
    console.log(far);
    const near = await a.waitFor(/socks5-udp\[.*onStream=[1-9]/);
    assert(/quicDatagrams=[1-9]/.test(near), near);

    // A flood of 2000 new forward peers: each is an association (a QUIC stream) while A holds
    // its flow; B's sockets (one per association) stay within the bound.
    const fwd = portFor(a, "udp");
    const before = openFds(b.child.pid);
    const query = dnsQuery(9, "flood.example.test");
    for (let wave = 0; wave < 10; wave++) {
      const peers = await Promise.all(
        Array.from({ length: 200 }, () => UdpSocket.bind("127.0.0.1", 0)),
      );
      for (const p of peers) await p.send(query, { host: "127.0.0.1", port: fwd });
      await Promise.all(peers.map((p) => p.close()));
    }
    // The flood's channel opens (up to max-flows of them, over the link) run on for a moment,
    // and a new peer's datagrams are dropped (flow-limit) until they are done: a probe asks
    // again every 100 ms from one port until answered. (dig's first try, dropped, waited out
    // its 10 s before retrying: the test took 14 s instead of 4 whenever it landed there.)
    const probe = await UdpSocket.bind("127.0.0.1", 0);
    let answered = false;
    probe.onMessage = () => void (answered = true);
    let askedAt = -Infinity;
    try {
      await until("the udp forward to answer a new peer after the flood", async () => {
        if (!answered && performance.now() - askedAt >= 100) {
          askedAt = performance.now();
          await probe.send(query, { host: "127.0.0.1", port: fwd });
        }
        return answered;
      });
    } finally {
      probe.close();
    }
    assertEquals(await dig(fwd, "after.example.test"), exampleTestAddress);
    const after = openFds(b.child.pid);
    console.log(`quic, 2000 new forward peers, max-flows ${maxFlows}: B fds ${before} -> ${after}`);
    assert(after - before <= 2 * maxFlows, `B: ${before} -> ${after} fds`);
  } finally {
    for (const node of nodes.reverse()) await node.stop();
    echo.close();
    await dns.stop();
    await pki.remove();
  }
});
