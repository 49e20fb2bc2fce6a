/**
 * SOCKS5 UDP ASSOCIATE through depot (RFC 1928 §7): the client's datagrams reach depot-server's
 * relay and leave from the depot-local it chose. PySocks (a client we did not write) asks
 * dnsmasq 50 DNS queries through depot-server → depot-local, over plain tunnels and over
 * `--mux`, each answer counted and its order reported; a raw client shows the rules — datagrams
 * from another port, fragments and malformed headers are dropped at the server; destinations
 * the local's ACL denies, and answers from destinations the client never sent to, at the local;
 * an answer too big to wrap for the client is counted — each by reason (in /metrics too) — and
 * the association ends with its TCP connection, on the idle timeout, with the exit's control
 * connection, and is refused (0x07) by a local without UDP. 2000 destinations in one association
 * are held to the local's flow bound.
 */

import { assert, assertEquals } from "./_assert.ts";
import { Logger } from "../lib/log.ts";
import { Acl, closeQuietly } from "../lib/net/mod.ts";
import { metricsText } from "../lib/metrics.ts";
import { decodeSocks5Udp, encodeSocks5Udp } from "../lib/socks5/mod.ts";
import { UdpSocket } from "../lib/udp/mod.ts";
import { startDepot } from "./_depot.ts";
import { dig, exampleTestAddress, startDnsmasq } from "./_dns.ts";
import { socks5Associate } from "./_socks5.ts";
import { run, until, within } from "./_util.ts";

const pysocksScript = new URL("./py/pysocks_dns.py", import.meta.url).pathname;
/** PySocks as Debian's python3-socks installs it (tools/setup.ts), for Debian's python3. */
const pysocksModule = "/usr/lib/python3/dist-packages/socks.py";

/** A logger collecting its lines. */
function collector(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  return { log: new Logger("debug", {}, (l) => void lines.push(l)), lines };
}

/** Lines of `lines` that report a dropped datagram of `reason`. */
function drops(lines: string[], reason: string): string[] {
  return lines.filter((l) => l.includes("udp datagram dropped") && l.includes(`failure=${reason}`));
}

/** The value of one sample of the metrics text (0 when absent). */
function sample(text: string, series: string): number {
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

for (const mux of [false, true]) {
  Deno.test(`depot udp: PySocks asks dnsmasq 50 queries through depot-server -> depot-local${mux ? " (mux)" : ""}`, async () => {
    const dns = await startDnsmasq();
    const server = collector(), local = collector();
    const depot = await startDepot({
      server: { log: server.log },
      locals: [{ mux, log: local.log }],
    });
    const before = await metricsText();
    try {
      assertEquals(await dig(dns.port, "direct.example.test"), exampleTestAddress);
      Deno.statSync(pysocksModule); // a missing python3-socks is named, not a Python traceback
      const n = 50;
      const r = await run("/usr/bin/python3", [
        pysocksScript,
        `${depot.socksPort}`,
        `${dns.port}`,
        `${n}`,
      ]);
      assertEquals(r.code, 0, r.stderr);
      const got = JSON.parse(r.stdout) as {
        ids: number[];
        addrs: string[];
        sent: number;
        retries: number;
      };
      const inOrder = got.ids.every((id, i) => i === 0 || id > got.ids[i - 1]);
      console.log(
        `PySocks via depot${mux ? " (mux)" : ""}: ${got.sent} queries sent, ` +
          `${got.ids.length} answered, ${n - got.ids.length} lost, ${got.retries} retried, ` +
          `order ${inOrder ? "kept" : "changed"}`,
      );
      assertEquals(got.ids, Array.from({ length: n }, (_, i) => i + 1));
      assert(got.addrs.every((a) => a === exampleTestAddress), got.addrs.join());
      // The association ends with PySocks' TCP connection, on both sides.
      const closed = (lines: string[]) =>
        lines.filter((l) => l.includes("dest=udp") && l.includes("connection closed"));
      await until(
        "the association's close line on both sides",
        () => closed(server.lines).length === 1 && closed(local.lines).length === 1,
      );
      const sLine = closed(server.lines)[0], lLine = closed(local.lines)[0];
      assert(/ end=done /.test(sLine), sLine);
      assert(
        sLine.includes(`datagramsUp=${got.sent}`) && sLine.includes(`datagramsDown=${n}`),
        sLine,
      );
      assert(
        lLine.includes(`datagramsUp=${got.sent}`) && lLine.includes(`datagramsDown=${n}`),
        lLine,
      );
      // Every datagram is in /metrics, each side counting what it sent on.
      const after = await metricsText();
      const delta = (series: string) => sample(after, series) - sample(before, series);
      assertEquals(
        delta('warren_udp_datagrams_total{relay="depot-server",direction="up"}'),
        got.sent,
      );
      assertEquals(delta('warren_udp_datagrams_total{relay="depot-server",direction="down"}'), n);
      assertEquals(
        delta('warren_udp_datagrams_total{relay="depot-local",direction="up"}'),
        got.sent,
      );
      assertEquals(delta('warren_udp_datagrams_total{relay="depot-local",direction="down"}'), n);
      assert(delta('warren_udp_bytes_total{relay="depot-server",direction="down"}') > 0, after);
      assertEquals(depot.server.status().exits[0].total, 1);
    } finally {
      await depot.close();
      await dns.stop();
    }
  });
}

Deno.test("depot udp: only the client's datagrams, no fragments, the local's ACL on every destination", async () => {
  const echo = await UdpSocket.bind("127.0.0.2", 0);
  let exitSocket: { host: string; port: number } | undefined; // where the local sends from
  echo.onMessage = (d, from) => {
    exitSocket = from;
    void echo.send(d, from).catch(() => {});
  };
  const server = collector(), local = collector();
  const depot = await startDepot({
    server: { log: server.log },
    locals: [{ acl: new Acl({ deny: ["127.0.0.1"] }), log: local.log }],
  });
  const client = await UdpSocket.bind("127.0.0.1", 0);
  const stranger = await UdpSocket.bind("127.0.0.1", 0);
  const a = await socks5Associate(depot.socksPort, client.addr.port);
  try {
    assertEquals(a.reply, 0);
    const answers: string[] = [];
    client.onMessage = (d) => {
      const g = decodeSocks5Udp(d);
      answers.push(`${g.dest.host}:${g.dest.port} ${new TextDecoder().decode(g.data)}`);
    };
    const enc = new TextEncoder();
    const dgram = (host: string, p: number, text: string) =>
      encodeSocks5Udp({ host, port: p }, enc.encode(text));
    const frag = dgram(echo.addr.host, echo.addr.port, "fragment");
    frag[2] = 1;
    await stranger.send(dgram(echo.addr.host, echo.addr.port, "stranger"), a.relay);
    await client.send(frag, a.relay);
    await client.send(Uint8Array.of(0, 0, 0, 9, 1), a.relay);
    await client.send(dgram("127.0.0.1", echo.addr.port, "denied"), a.relay);
    await client.send(dgram("0.0.0.0", echo.addr.port, "unspecified"), a.relay);
    await client.send(dgram("localhost", echo.addr.port, "by-name"), a.relay);
    await client.send(dgram(echo.addr.host, echo.addr.port, "allowed"), a.relay);
    await until("the allowed datagram's echo", () => answers.length === 1);
    assertEquals(answers, [`127.0.0.2:${echo.addr.port} allowed`]);
    // Only destinations the client sent to may answer: another socket writing to the exit's
    // outbound socket is dropped there, and the client gets nothing from it.
    await stranger.send(new TextEncoder().encode("unasked"), exitSocket!);
    await until(
      "the local's wrong-source drop",
      () => drops(local.lines, "wrong-source").length === 1,
    );
    // The client side's rules hold at the server …
    await until(
      "the server's wrong-source drop",
      () => drops(server.lines, "wrong-source").length === 1,
    );
    assertEquals(drops(server.lines, "fragmented").length, 1);
    assertEquals(drops(server.lines, "malformed").length, 1);
    // … the exit's at the local: 127.0.0.1, 0.0.0.0 and localhost all reach loopback.
    assertEquals(drops(local.lines, "not-allowed").length, 1);
    assert(
      drops(local.lines, "not-allowed")[0].includes("127.0.0.1"),
      drops(local.lines, "not-allowed")[0],
    );
    closeQuietly(a.control);
    const closed = (lines: string[]) =>
      lines.filter((l) => l.includes("dest=udp") && l.includes("connection closed"));
    await until(
      "the association's close line on both sides",
      () => closed(server.lines).length === 1 && closed(local.lines).length === 1,
    );
    const sLine = closed(server.lines)[0], lLine = closed(local.lines)[0];
    // The server passes on all four datagrams (31 bytes) it cannot judge; the local sends
    // one ("allowed", 7 bytes), and its answer comes back.
    assert(sLine.includes("up=31 ") && sLine.includes("down=7 "), sLine);
    assert(lLine.includes("up=7 ") && lLine.includes("down=7 "), lLine);
    assert(sLine.includes("datagramsUp=4") && sLine.includes("3 datagrams dropped"), sLine);
    assertEquals(answers.length, 1);
    assert(lLine.includes("datagramsUp=1") && lLine.includes(String.raw`\"not-allowed\":3`), lLine);
    const text = await metricsText();
    for (
      const [relay, reason] of [["depot-server", "fragmented"], ["depot-local", "not-allowed"]]
    ) {
      assert(
        sample(text, `warren_udp_dropped_total{relay="${relay}",reason="${reason}"}`) >= 1,
        text,
      );
    }
  } finally {
    client.close();
    stranger.close();
    echo.close();
    closeQuietly(a.control);
    await depot.close();
  }
});

Deno.test("depot udp: a destination name that is not UTF-8 is dropped as malformed; the server goes on", async () => {
  // 200 bytes of 0xff decoded to 200 U+FFFD (600 bytes as UTF-8): re-wrapping that for the
  // exit threw inside the relay socket's message handler, an uncaught error in depot-server.
  const echo = await UdpSocket.bind("127.0.0.1", 0);
  echo.onMessage = (d, from) => void echo.send(d, from).catch(() => {});
  const server = collector();
  const depot = await startDepot({ server: { log: server.log } });
  const client = await UdpSocket.bind("127.0.0.1", 0);
  const a = await socks5Associate(depot.socksPort, client.addr.port);
  try {
    assertEquals(a.reply, 0);
    const answers: string[] = [];
    client.onMessage = (d) => answers.push(new TextDecoder().decode(decodeSocks5Udp(d).data));
    const name = new Uint8Array(200).fill(0xff);
    await client.send(Uint8Array.of(0, 0, 0, 3, name.length, ...name, 0, 53, 0x71), a.relay);
    const ok = encodeSocks5Udp(echo.addr, new TextEncoder().encode("after"));
    await client.send(ok, a.relay);
    await until("the next datagram's echo", () => answers.length === 1);
    assertEquals(answers, ["after"]);
    assertEquals(drops(server.lines, "malformed").length, 1);
  } finally {
    client.close();
    echo.close();
    closeQuietly(a.control);
    await depot.close();
  }
});

Deno.test("depot udp: an answer too big to wrap for the client is counted, the next one passes", async () => {
  const dest = await UdpSocket.bind("127.0.0.1", 0);
  dest.onMessage = (d, from) => {
    const big = new TextDecoder().decode(d) === "big";
    void dest.send(big ? new Uint8Array(65_507) : d, from).catch(() => {});
  };
  const server = collector();
  const depot = await startDepot({ server: { log: server.log } });
  const client = await UdpSocket.bind("127.0.0.1", 0);
  const a = await socks5Associate(depot.socksPort, client.addr.port);
  try {
    const got: number[] = [];
    client.onMessage = (d) => void got.push(decodeSocks5Udp(d).data.length);
    const enc = new TextEncoder();
    await client.send(encodeSocks5Udp(dest.addr, enc.encode("big")), a.relay);
    await until("the too-big drop", () => drops(server.lines, "too-big").length === 1);
    await client.send(encodeSocks5Udp(dest.addr, enc.encode("small")), a.relay);
    await until("the small answer", () => got.length === 1);
    assertEquals(got, [5]);
  } finally {
    client.close();
    dest.close();
    closeQuietly(a.control);
    await depot.close();
  }
});

Deno.test("depot udp: ends on the idle timeout, and with the exit's control connection", async () => {
  const server = collector();
  const depot = await startDepot({ server: { log: server.log, udp: { idleTimeoutMs: 300 } } });
  const closed = () =>
    server.lines.filter((l) => l.includes("dest=udp") && l.includes("connection closed"));
  const idle = await socks5Associate(depot.socksPort);
  try {
    assertEquals(idle.reply, 0);
    await until("the idle association's close line", () => closed().length === 1);
    assert(/ end=idle /.test(closed()[0]), closed()[0]);
    assertEquals(
      await within(idle.control.read(new Uint8Array(1)), "the idle association's TCP close"),
      null,
    ); // closed with it
    const cut = await socks5Associate(depot.socksPort);
    assertEquals(cut.reply, 0);
    await depot.locals[0].stop();
    await until("the cut association's close line", () => closed().length === 2);
    assertEquals(
      await within(cut.control.read(new Uint8Array(1)), "the cut association's TCP close"),
      null,
    );
    closeQuietly(cut.control);
  } finally {
    closeQuietly(idle.control);
    await depot.close();
  }
});

Deno.test("depot udp: a local without UDP (udp: false) gets no associate; the client gets 0x07", async () => {
  const depot = await startDepot({ locals: [{ udp: false }] });
  const a = await socks5Associate(depot.socksPort);
  try {
    assertEquals(a.reply, 7);
    assertEquals(depot.server.status().failuresByReason["no-udp"], 1);
  } finally {
    closeQuietly(a.control);
    await depot.close();
  }
});

Deno.test("depot udp: a flood of destinations is held to the local's flow bound", async () => {
  const maxFlows = 64;
  const local = collector();
  const depot = await startDepot({ locals: [{ udp: { maxFlows }, log: local.log }] });
  const client = await UdpSocket.bind("127.0.0.1", 0);
  const a = await socks5Associate(depot.socksPort, client.addr.port);
  const echo = await UdpSocket.bind("127.0.0.2", 0);
  echo.onMessage = (d, from) => void echo.send(d, from).catch(() => {});
  try {
    // 2000 destinations (ports on 127.0.0.3, where nothing listens), in batches; after each,
    // the echo answers once everything before it went out (the exit keeps the order). UDP
    // may lose the probe or its answer on a busy machine: it is sent again until answered.
    const payload = new Uint8Array(8);
    let answers = 0;
    client.onMessage = () => void answers++;
    for (let batch = 0; batch < 20; batch++) {
      for (let i = 0; i < 100; i++) {
        const port = 20_000 + batch * 100 + i;
        await client.send(encodeSocks5Udp({ host: "127.0.0.3", port }, payload), a.relay);
      }
      const want = answers + 1;
      for (let tries = 0; answers < want; tries++) {
        assert(tries < 6_000, `no echo after batch ${batch}: the association stopped relaying`);
        if (tries % 50 === 0) await client.send(encodeSocks5Udp(echo.addr, payload), a.relay);
        await new Promise((r) => setTimeout(r, 10));
      }
    }
    const text = await metricsText();
    const flows = sample(text, 'warren_udp_flows_active{relay="depot-local"}');
    console.log(`2000 destinations and an echo, max ${maxFlows} flows: ${flows} held at the local`);
    assertEquals(flows, maxFlows);
  } finally {
    client.close();
    echo.close();
    closeQuietly(a.control);
    await depot.close();
  }
});
