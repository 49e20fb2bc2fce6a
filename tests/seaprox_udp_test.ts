/**
 * SOCKS5 UDP ASSOCIATE on seaprox's SOCKS5 listener (RFC 1928 §7): PySocks (a client we did
 * not write) asks dnsmasq 50 DNS queries through it, every answer back in order; a raw client
 * shows the relay's rules — datagrams from another port, fragments, malformed headers and ACL-
 * denied destinations (the unspecified address included) are dropped and counted while the
 * allowed ones pass; the association ends with its TCP connection, on the idle timeout, and
 * fails naming the hop (0x01) when it leaves through a --forward SOCKS5 hop that is down.
 */

import { assert, assertEquals } from "./_assert.ts";
import { Logger } from "../lib/log.ts";
import { Acl, closeQuietly } from "../lib/net/mod.ts";
import {
  parseForwardUrl,
  parseListenUrl,
  type ProxyConnectionRecord,
  type Seaprox,
  startSeaprox,
} from "../lib/proxy/mod.ts";
import { decodeSocks5Udp, encodeSocks5Udp } from "../lib/socks5/mod.ts";
import { UdpSocket } from "../lib/udp/mod.ts";
import { dig, exampleTestAddress, startDnsmasq } from "./_dns.ts";
import { run, until, within } from "./_util.ts";
import { socks5Associate } from "./_socks5.ts";

const pysocksScript = new URL("./py/pysocks_dns.py", import.meta.url).pathname;
/** PySocks as Debian's python3-socks installs it (tools/setup.ts), for Debian's python3. */
const pysocksModule = "/usr/lib/python3/dist-packages/socks.py";

/** seaprox with one SOCKS5 listener; closed connections and log lines are collected. */
async function seaprox(
  extra: Partial<Parameters<typeof startSeaprox>[0]> = {},
): Promise<{ sp: Seaprox; port: number; closed: ProxyConnectionRecord[]; lines: string[] }> {
  const closed: ProxyConnectionRecord[] = [];
  const lines: string[] = [];
  const sp = await startSeaprox({
    listeners: [parseListenUrl("socks5://127.0.0.1:0")],
    log: new Logger("debug", {}, (l) => void lines.push(l)),
    hooks: { onClose: (r) => void closed.push(r) },
    ...extra,
  });
  return { sp, port: sp.servers[0].addr.port, closed, lines };
}

/** A raw SOCKS5 UDP ASSOCIATE (tests/_socks5.ts). */
const associate = socks5Associate;

Deno.test("seaprox udp: PySocks asks dnsmasq 50 queries through UDP ASSOCIATE, all in order", async () => {
  const dns = await startDnsmasq();
  const { sp, port, closed } = await seaprox();
  try {
    assertEquals(await dig(dns.port, "direct.example.test"), exampleTestAddress);
    Deno.statSync(pysocksModule); // a missing python3-socks is named, not a Python traceback
    const n = 50;
    const r = await run("/usr/bin/python3", [pysocksScript, `${port}`, `${dns.port}`, `${n}`]);
    assertEquals(r.code, 0, r.stderr);
    const got = JSON.parse(r.stdout) as {
      ids: number[];
      addrs: string[];
      sent: number;
      retries: number;
    };
    console.log(
      `PySocks via seaprox: ${got.sent} queries sent, ${got.ids.length} answered, ` +
        `${got.retries} retried, order ${
          got.ids.every((id, i) => id === i + 1) ? "kept" : "changed"
        }`,
    );
    assertEquals(got.ids, Array.from({ length: n }, (_, i) => i + 1));
    assert(got.addrs.every((a) => a === exampleTestAddress), got.addrs.join());
    await until("the association's close record", () => closed.length === 1);
    assertEquals([closed[0].scheme, closed[0].end], ["socks5-udp", "done"]);
    assert(closed[0].bytesUp > 0 && closed[0].bytesDown > closed[0].bytesUp);
  } finally {
    await sp.stop();
    await dns.stop();
  }
});

Deno.test("seaprox udp: only the client's datagrams, no fragments, ACL on every destination", async () => {
  const echo = await UdpSocket.bind("127.0.0.2", 0);
  echo.onMessage = (d, from) => void echo.send(d, from).catch(() => {});
  const { sp, port, closed, lines } = await seaprox({
    acl: new Acl({ deny: ["127.0.0.1"] }),
  });
  const client = await UdpSocket.bind("127.0.0.1", 0);
  const stranger = await UdpSocket.bind("127.0.0.1", 0);
  const a = await associate(port, client.addr.port);
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
    await client.send(dgram(echo.addr.host, echo.addr.port, "allowed"), a.relay);
    await until("the allowed datagram's echo", () => answers.length === 1);
    assertEquals(answers, [`127.0.0.2:${echo.addr.port} allowed`]);
    const drops = (reason: string) =>
      lines.filter((l) => l.includes("udp datagram dropped") && l.includes(`failure=${reason}`));
    await until("the wrong-source drop", () => drops("wrong-source").length === 1);
    assertEquals(drops("fragmented").length, 1);
    assertEquals(drops("malformed").length, 1);
    // Both the literal 127.0.0.1 and 0.0.0.0 (which reaches it) are refused.
    assertEquals(drops("not-allowed").map((l) => /count=(\d+)/.exec(l)?.[1]), ["1"]);
    assert(drops("not-allowed")[0].includes("deny 127.0.0.1"), drops("not-allowed")[0]);
    closeQuietly(a.control);
    await until("the association's close record", () => closed.length === 1);
    assertEquals([closed[0].scheme, closed[0].end], ["socks5-udp", "done"]);
    assertEquals([closed[0].bytesUp, closed[0].bytesDown], [7, 7]);
    // The connection's line counts every drop, the second refusal too.
    const endLine = lines.find((l) => l.includes("socks5-udp["))!;
    assert(endLine.includes("5 datagrams dropped"), endLine);
    assert(endLine.includes(String.raw`\"not-allowed\":2`), endLine);
  } finally {
    client.close();
    stranger.close();
    echo.close();
    await sp.stop();
  }
});

Deno.test("seaprox udp: an association ends on its idle timeout", async () => {
  const { sp, port, closed } = await seaprox({ idleTimeoutMs: 300 });
  const a = await associate(port);
  try {
    assertEquals(a.reply, 0);
    await until("the association's close record", () => closed.length === 1);
    assertEquals([closed[0].scheme, closed[0].end], ["socks5-udp", "idle"]);
    // The control connection was closed with it.
    assertEquals(
      await within(a.control.read(new Uint8Array(1)), "the control connection's close"),
      null,
    );
  } finally {
    closeQuietly(a.control);
    await sp.stop();
  }
});

Deno.test("seaprox udp: through a --forward SOCKS5 hop that is down: 0x01, the hop named", async () => {
  // Datagrams never bypass the chain: the hop's own UDP ASSOCIATE is needed, and it is down.
  const { sp, port, closed, lines } = await seaprox({
    forward: [parseForwardUrl("socks5://127.0.0.1:1")],
  });
  const a = await associate(port);
  try {
    assertEquals(a.reply, 1);
    await until("the association's close record", () => closed.length === 1);
    const line = lines.find((l) => l.includes("socks5-udp[")) ?? lines.join("\n");
    assert(line.includes("hop 1/1 socks5://127.0.0.1:1 unreachable"), line);
  } finally {
    closeQuietly(a.control);
    await sp.stop();
  }
});

Deno.test("seaprox udp: an answer too big to wrap for the client is counted, the next one passes", async () => {
  // The destination answers "big" with a full 65507-byte datagram: with the SOCKS5 header it
  // no longer fits in one, so the relay counts it ("too-big") instead of failing.
  const dest = await UdpSocket.bind("127.0.0.1", 0);
  dest.onMessage = (d, from) => {
    const big = new TextDecoder().decode(d) === "big";
    void dest.send(big ? new Uint8Array(65_507) : d, from).catch(() => {});
  };
  const { sp, port, closed, lines } = await seaprox();
  const client = await UdpSocket.bind("127.0.0.1", 0);
  const a = await associate(port, client.addr.port);
  try {
    const got: number[] = [];
    client.onMessage = (d) => void got.push(decodeSocks5Udp(d).data.length);
    const enc = new TextEncoder();
    await client.send(encodeSocks5Udp(dest.addr, enc.encode("big")), a.relay);
    await until("the too-big drop", () => lines.some((l) => l.includes("failure=too-big")));
    await client.send(encodeSocks5Udp(dest.addr, enc.encode("small")), a.relay);
    await until("the small answer", () => got.length === 1);
    assertEquals(got, [5]);
    closeQuietly(a.control);
    await until("the association's close record", () => closed.length === 1);
    assertEquals(closed[0].bytesDown, 5); // the answer delivered; the dropped one is not counted
  } finally {
    client.close();
    dest.close();
    await sp.stop();
  }
});
