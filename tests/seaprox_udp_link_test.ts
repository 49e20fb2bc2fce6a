/**
 * UDP carried over the seaprox link (one link stream per association, datagrams framed on
 * it, leaving at the far node): PySocks asks dnsmasq 50 queries through node A's SOCKS5
 * listener, answered in order and counted at both nodes; `dig` through a `udp://` forward on
 * A; the far node's ACL drops a denied destination; a flood of new destinations and of new
 * forward peers stays within the flow bounds (streams on the link and destinations at the far
 * node); a chain that cannot carry UDP (an HTTP CONNECT hop, a far node with UDP off) answers
 * 0x07 with a log line naming the hop; garbage from a near node ends only its own association;
 * the UDP result parses on any split, and a truncated one is a NetError.
 */

import { assert, assertEquals } from "./_assert.ts";
import { Logger } from "../lib/log.ts";
import { Acl, BufferedReader, closeQuietly, dial, NetError } from "../lib/net/mod.ts";
import {
  directDialer,
  encodeLinkUdpRequest,
  LinkClient,
  parseForwardUrl,
  parseListenUrl,
  type ProxyConnectionRecord,
  readLinkUdpResult,
  type Seaprox,
  type SeaproxConfig,
  serveLink,
  type ServeLinkOptions,
  startSeaprox,
  StreamUdpChannel,
  UdpUnsupportedError,
} from "../lib/proxy/mod.ts";
import { decodeSocks5Udp, encodeSocks5Udp } from "../lib/socks5/mod.ts";
import {
  directUdpOpener,
  encodeDatagramFrame,
  FlowTable,
  startUdpForward,
  UdpDrops,
  UdpSocket,
} from "../lib/udp/mod.ts";
import { dig, exampleTestAddress, startDnsmasq } from "./_dns.ts";
import { run, until as untilHolds, within } from "./_util.ts";

const pysocksScript = new URL("./py/pysocks_dns.py", import.meta.url).pathname;
const token = "udp-link-test-token";

/** Node B (link listener, its datagrams leaving directly) and node A's link client. */
function linkPair(far: Partial<ServeLinkOptions> = {}) {
  const lines: string[] = [];
  const log = new Logger("debug", {}, (l) => void lines.push(l));
  const b = serveLink(Deno.listen({ hostname: "127.0.0.1", port: 0 }), {
    token,
    dialer: directDialer({ prefer: "ipv4" }),
    udp: directUdpOpener({ prefer: "ipv4" }),
    log,
    ...far,
  });
  const link = new LinkClient({ addr: { host: "127.0.0.1", port: b.addr.port }, token });
  return {
    b,
    link,
    lines,
    close: async () => {
      await link.close();
      await b.stop();
    },
  };
}

/** seaprox A: one SOCKS5 listener; closed connections and log lines collected. */
async function nodeA(cfg: Partial<SeaproxConfig>) {
  const closed: ProxyConnectionRecord[] = [];
  const lines: string[] = [];
  const sp: Seaprox = await startSeaprox({
    listeners: [parseListenUrl("socks5://127.0.0.1:0")],
    log: new Logger("debug", {}, (l) => void lines.push(l)),
    hooks: { onClose: (r) => void closed.push(r) },
    ...cfg,
  });
  return { sp, port: sp.servers[0].addr.port, closed, lines };
}

/** A raw SOCKS5 UDP ASSOCIATE: the control connection, the reply code and the relay. */
async function associate(port: number, fromPort: number) {
  const control = await dial("127.0.0.1", port);
  const r = new BufferedReader(control, 64);
  await control.write(Uint8Array.of(5, 1, 0));
  assertEquals([...await r.readExact(2)], [5, 0]);
  await control.write(Uint8Array.of(5, 3, 0, 1, 0, 0, 0, 0, fromPort >> 8, fromPort & 0xff));
  const head = await r.readExact(4);
  const rest = await r.readExact(head[1] === 0 ? (head[3] === 1 ? 6 : 18) : 0);
  const relayPort = head[1] === 0 ? (rest[rest.length - 2] << 8) | rest[rest.length - 1] : 0;
  return { control, reply: head[1], relay: { host: "127.0.0.1", port: relayPort } };
}

/** Poll `cond` (bounded by _util's until: a hang fails, never a slow box). */
function until(cond: () => boolean): Promise<void> {
  return untilHolds("the link's end to be counted", cond);
}

Deno.test("udp over link://: PySocks -> A -> link -> B -> dnsmasq, 50 answers in order, counted at both", async () => {
  const dns = await startDnsmasq();
  const pair = linkPair();
  const a = await nodeA({ dialer: pair.link.dial, udp: { open: pair.link.openUdp } });
  try {
    const n = 50;
    const r = await run("/usr/bin/python3", [pysocksScript, `${a.port}`, `${dns.port}`, `${n}`]);
    assertEquals(r.code, 0, r.stderr);
    const got = JSON.parse(r.stdout) as { ids: number[]; addrs: string[]; retries: number };
    console.log(`PySocks over the link: ${got.ids.length}/${n} answered, ${got.retries} retried`);
    assertEquals(got.ids, Array.from({ length: n }, (_, i) => i + 1));
    assert(got.addrs.every((x) => x === exampleTestAddress), got.addrs.join());
    await until(() => a.closed.length === 1);
    assertEquals([a.closed[0].scheme, a.closed[0].end], ["socks5-udp", "done"]);
    // The far node's association ends with the stream; its line counts every datagram.
    await until(() => pair.lines.some((l) => l.includes("udp association closed")));
    const line = pair.lines.find((l) => l.includes("udp association closed"))!;
    const count = (k: string) => Number(new RegExp(` ${k}=(\\d+)`).exec(line)?.[1]);
    assertEquals(count("up"), n + got.retries, line);
    assertEquals(count("down"), n + got.retries, line);
    // A normal end: A ended the stream with its FIN, not a reset; nothing at warn or error
    // on either node.
    assert(/ end="near side: far end closed the stream"/.test(line), line);
    for (const l of [...pair.lines, ...a.lines]) assert(!/level=(warn|error)|reset/.test(l), l);
  } finally {
    await a.sp.stop();
    await pair.close();
    await dns.stop();
  }
});

Deno.test("udp over link://: dig through a udp:// forward on A whose peers ride the link", async () => {
  const dns = await startDnsmasq();
  const pair = linkPair();
  const fwd = await startUdpForward({
    listen: { host: "127.0.0.1", port: 0 },
    to: { host: "127.0.0.1", port: dns.port },
    open: pair.link.openUdp,
  });
  try {
    assertEquals(await dig(fwd.addr.port, "one.example.test"), exampleTestAddress);
    assertEquals(await dig(fwd.addr.port, "two.example.test"), exampleTestAddress);
    assert(fwd.stats.datagramsUp >= 2 && fwd.stats.datagramsDown >= 2, JSON.stringify(fwd.stats));
    // Each dig is a new peer: its own association (stream) on the link.
    assertEquals(fwd.flows.opened, 2);
  } finally {
    fwd.stop();
    await pair.close();
    await dns.stop();
  }
});

Deno.test("udp over link://: the far node's ACL and flow bound hold under a flood of new destinations", async () => {
  const echo = await UdpSocket.bind("127.0.0.2", 0);
  echo.onMessage = (d, from) => void echo.send(d, from).catch(() => {});
  // B denies 127.0.0.3 and holds at most 64 destinations per association.
  const pair = linkPair({
    udp: directUdpOpener({ acl: new Acl({ deny: ["127.0.0.3"] }) }),
  });
  const far = pair.b;
  const a = await nodeA({ dialer: pair.link.dial, udp: { open: pair.link.openUdp } });
  const client = await UdpSocket.bind("127.0.0.1", 0);
  const assoc = await associate(a.port, client.addr.port);
  try {
    assertEquals(assoc.reply, 0);
    const answers: string[] = [];
    client.onMessage = (d) => {
      const g = decodeSocks5Udp(d);
      answers.push(`${g.dest.host}:${g.dest.port} ${new TextDecoder().decode(g.data)}`);
    };
    const enc = new TextEncoder();
    await client.send(
      encodeSocks5Udp({ host: "127.0.0.3", port: 9 }, enc.encode("x")),
      assoc.relay,
    );
    await client.send(encodeSocks5Udp(echo.addr, enc.encode("allowed")), assoc.relay);
    await until(() => answers.length === 1);
    assertEquals(answers, [`127.0.0.2:${echo.addr.port} allowed`]);
    // A flood: 3000 datagrams to 3000 new destinations (ports nobody listens on), in waves
    // of 100, each followed by a mark the echo answers: datagrams are carried in order, so
    // the answer says the wave went through (and no socket buffer overflows on the way).
    const mark = async (text: string) => {
      const want = answers.length + 1;
      for (let i = 0; i < 50 && answers.length < want; i++) {
        await client.send(encodeSocks5Udp(echo.addr, enc.encode(text)), assoc.relay);
        for (let j = 0; j < 20 && answers.length < want; j++) {
          await new Promise((r) => setTimeout(r, 10));
        }
      }
      assertEquals(answers.at(-1), `127.0.0.2:${echo.addr.port} ${text}`);
    };
    for (let wave = 0; wave < 30; wave++) {
      for (let i = 0; i < 100; i++) {
        const dest = { host: "127.0.0.2", port: 20_000 + wave * 100 + i };
        await client.send(encodeSocks5Udp(dest, enc.encode("flood")), assoc.relay);
      }
      await mark(`wave ${wave}`);
    }
    closeQuietly(assoc.control);
    await until(() => pair.lines.some((l) => l.includes("udp association closed")));
    const line = pair.lines.find((l) => l.includes("udp association closed"))!;
    console.log(`far node after 3000 new destinations: ${line}`);
    const count = (k: string) => Number(new RegExp(` ${k}=(\\d+)`).exec(line)?.[1]);
    // Every flood datagram went out, to destinations held within the default bound of an
    // association (lib/udp defaultMaxUdpFlows), the oldest evicted for newcomers.
    assert(count("up") >= 3000 + 31, line);
    assert(count("peak") <= 1024, line);
    assert(count("evicted") >= 3000 - 1024, line);
    assert(line.includes(String.raw`\"not-allowed\":1`), line);
    assertEquals(far.stats.active, 1); // one link session for all of it
  } finally {
    closeQuietly(assoc.control);
    client.close();
    echo.close();
    await a.sp.stop();
    await pair.close();
  }
});

Deno.test("udp over link://: 2000 new forward peers keep the link's streams within max-flows", async () => {
  const echo = await UdpSocket.bind("127.0.0.1", 0);
  echo.onMessage = (d, from) => void echo.send(d, from).catch(() => {});
  const pair = linkPair();
  const maxFlows = 64;
  const fwd = await startUdpForward({
    listen: { host: "127.0.0.1", port: 0 },
    to: echo.addr,
    maxFlows,
    open: pair.link.openUdp,
  });
  try {
    await until(() => pair.link.connected);
    let peakStreams = 0;
    for (let wave = 0; wave < 20; wave++) {
      const peers = await Promise.all(
        Array.from({ length: 100 }, () => UdpSocket.bind("127.0.0.1", 0)),
      );
      for (const p of peers) await p.send(Uint8Array.of(1), fwd.addr);
      peakStreams = Math.max(peakStreams, pair.link.session?.stats.streamsOpen ?? 0);
      for (const p of peers) p.close();
    }
    // A new peer is served once the flood's flows have opened (its first datagrams may
    // meet the bound of flows still opening: sent again until answered).
    const last = await UdpSocket.bind("127.0.0.1", 0);
    let answer = 0;
    last.onMessage = (d) => answer = d[0];
    for (let i = 0; i < 100 && answer === 0; i++) {
      await last.send(Uint8Array.of(42), fwd.addr);
      for (let j = 0; j < 20 && answer === 0; j++) await new Promise((r) => setTimeout(r, 10));
    }
    last.close();
    assertEquals(answer, 42);
    console.log(
      `2000 new peers, max-flows ${maxFlows}: flows peak ${fwd.flows.peak}, evicted ` +
        `${fwd.flows.evicted}, link streams peak ${peakStreams}, queued ${fwd.flows.queuedBytes} B`,
    );
    assert(fwd.flows.peak <= maxFlows, `${fwd.flows.peak}`);
    // Held flows plus those still opening (bounded by the same number); an evicted flow's
    // stream is reset at once.
    assert(peakStreams <= 2 * maxFlows, `${peakStreams} streams`);
    assert(fwd.flows.evicted > 0);
  } finally {
    fwd.stop();
    echo.close();
    await pair.close();
  }
});

Deno.test("udp through a chain that cannot carry it: 0x07 and a line naming the hop", async () => {
  // An HTTP CONNECT hop (never dialled for UDP).
  const viaHttp = await nodeA({ forward: [parseForwardUrl("http://127.0.0.1:1")] });
  // A far node with UDP off (its own chain has an HTTP hop).
  const pair = linkPair({
    udp: undefined,
    udpRefusal: "hop 1/1 http://10.0.0.1:3128 (HTTP CONNECT) cannot carry UDP",
  });
  const viaLink = await nodeA({ dialer: pair.link.dial, udp: { open: pair.link.openUdp } });
  try {
    assert(
      viaHttp.lines.some((l) => l.includes("udpAssociate=off") && l.includes("HTTP CONNECT")),
      viaHttp.lines.join("\n"),
    );
    for (const node of [viaHttp, viaLink]) {
      const assoc = await associate(node.port, 0);
      assertEquals(assoc.reply, 7);
      closeQuietly(assoc.control);
      await until(() => node.closed.length === 1);
      assertEquals(node.closed[0].failure, "udp-unsupported");
    }
    const msg = (n: typeof viaHttp) =>
      n.lines.find((l) => l.includes("failure=udp-unsupported")) ?? n.lines.join("\n");
    assert(
      msg(viaHttp).includes("hop 1/1 http://127.0.0.1:1 (HTTP CONNECT) cannot carry UDP"),
      msg(viaHttp),
    );
    assert(
      msg(viaLink).includes("far node carries no UDP: hop 1/1 http://10.0.0.1:3128"),
      msg(viaLink),
    );
  } finally {
    await viaHttp.sp.stop();
    await viaLink.sp.stop();
    await pair.close();
  }
});

Deno.test("udp over link://: a near node's garbage ends its own association, not the link", async () => {
  const echo = await UdpSocket.bind("127.0.0.1", 0);
  echo.onMessage = (d, from) => void echo.send(d, from).catch(() => {});
  const pair = linkPair();
  try {
    await until(() => pair.link.connected);
    const session = pair.link.session!;
    // Garbage after an accepted UDP request: a frame whose SOCKS5 header does not parse, and
    // a frame announced longer than the bytes that follow before the end.
    const truncated = Uint8Array.of(0xff, 0xff, ...new Uint8Array(300).fill(0xaa));
    for (const garbage of [Uint8Array.of(0, 3, 1, 2, 3), truncated]) {
      const s = await session.open({ data: encodeLinkUdpRequest(0) });
      const r = new BufferedReader(s, 64);
      assertEquals(await r.readByte(), 0);
      await s.write(garbage);
      await s.closeWrite();
      // B ends the association (its stream closes) with a line saying why.
      while (await r.readExactOrEof(1).catch(() => null) !== null) {
        // Drain until B closes: nothing it sends back matters here.
      }
      s.close();
    }
    await until(() => pair.lines.filter((l) => l.includes("udp association closed")).length === 2);
    // The link still carries a new association, end to end.
    const flows = new FlowTable({ idleTimeoutMs: 0 }, new UdpDrops());
    const ch = await pair.link.openUdp({
      flows,
      tally: { up: () => {} },
      signal: AbortSignal.timeout(5000),
    });
    const answer = new Promise<string>((resolve) =>
      ch.onDatagram = (_f, d) => resolve(new TextDecoder().decode(d))
    );
    ch.send(echo.addr, new TextEncoder().encode("still here"));
    assertEquals(await answer, "still here");
    ch.close();
    flows.close();
  } finally {
    echo.close();
    await pair.close();
  }
});

Deno.test("udp over link://: the UDP result is read whole on any split, truncated is a NetError", async () => {
  const reader = (bytes: number[], chunk: number) => {
    let at = 0;
    return new BufferedReader({
      read: (p: Uint8Array) => {
        if (at >= bytes.length) return Promise.resolve(null);
        const n = Math.min(chunk, p.length, bytes.length - at);
        p.set(bytes.slice(at, at + n));
        at += n;
        return Promise.resolve(n);
      },
    });
  };
  const why = [...new TextEncoder().encode("hop 1/1 http://x:1 (HTTP CONNECT) cannot carry UDP")];
  for (const chunk of [1, 3, 1000]) {
    await readLinkUdpResult(reader([0], chunk), "link");
    const e = await readLinkUdpResult(reader([9, why.length, ...why], chunk), "link").catch((x) =>
      x
    );
    assert(e instanceof UdpUnsupportedError && e.message.includes("HTTP CONNECT"), String(e));
    const refused = await readLinkUdpResult(reader([6], chunk), "link").catch((x) => x);
    assert(refused instanceof NetError && refused.reason === "not-allowed", String(refused));
    for (const cut of [[], [9], [9, why.length, ...why.slice(0, 5)]]) {
      const t = await readLinkUdpResult(reader(cut, chunk), "link").catch((x) => x);
      assert(t instanceof NetError && !(t instanceof UdpUnsupportedError), String(t));
    }
  }
});

Deno.test("udp over link://: a closed association's stream ends with FINs both ways, and is cut when the other end sends none", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const flows = new FlowTable<{ close(): void }>({ idleTimeoutMs: 0 }, new UdpDrops());
  /** Our end's channel over a TCP connection; `other` reads what it sends until EOF. */
  const pair = async () => {
    const [mine, other] = await Promise.all([dial("127.0.0.1", l.addr.port), l.accept()]);
    let cuts = 0;
    const ch = new StreamUdpChannel(mine, flows, () => {}, () => {
      cuts++;
      mine.close();
    });
    const eof = (async () => {
      const buf = new Uint8Array(1024);
      try {
        while ((await other.read(buf)) !== null);
        return "fin";
      } catch (err) {
        return `failed: ${err}`;
      }
    })();
    return { ch, other, eof, cuts: () => cuts };
  };
  try {
    // The other end answers our FIN with its own: no cut, its answers in between dropped.
    const a = await pair();
    a.ch.send({ host: "127.0.0.1", port: 53 }, Uint8Array.of(1, 2, 3));
    a.ch.close();
    assertEquals(await within(a.eof, "the other end's FIN"), "fin");
    await a.other.write(
      encodeDatagramFrame(encodeSocks5Udp({ host: "10.0.0.1", port: 53 }, Uint8Array.of(9))),
    );
    a.other.close();
    // The other end never sends its FIN: cut after the linger.
    const b = await pair();
    b.ch.close();
    assertEquals(await within(b.eof, "the other end's FIN"), "fin");
    await until(() => b.cuts() === 1);
    b.other.close();
    // The first one was closed at the end of its drain (both FINs): its linger, older than
    // the second's, never cut it.
    assertEquals(a.cuts(), 0);
  } finally {
    l.close();
    flows.close();
  }
});
