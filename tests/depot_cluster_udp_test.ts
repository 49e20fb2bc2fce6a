/**
 * SOCKS5 UDP ASSOCIATE to an exit held by another depot-server instance (issue 19): PySocks
 * asks dnsmasq 50 DNS queries through depot-server A, which binds the client's relay and hands
 * the association to B over the cluster link (one stream of framed datagrams); B passes them
 * over its tunnel to depot-local and the answers back. A real redis-server, real processes.
 * Every query is answered in order; A (relay "depot-server"), B (relay "depot-cluster") and
 * the local count the same datagrams, in their logs and in /metrics. A checks the exit's
 * password against B's lease (a wrong one is refused), an exit without UDP gets 0x07 at A at
 * once, and killing B (the link drops) ends the association at A: its control connection closes.
 * In-process instances: A's idle timeout ends a handed-over association (and B's side with it),
 * and so does the exit leaving B. On the old code every ASSOCIATE through A was refused with 0x07.
 */

import { assert, assertEquals } from "./_assert.ts";
import { closeQuietly } from "../lib/net/mod.ts";
import { UdpSocket } from "../lib/udp/mod.ts";
import { decodeSocks5Udp, encodeSocks5Udp } from "../lib/socks5/mod.ts";
import { dnsAnswer, dnsQuery, exampleTestAddress, startDnsmasq } from "./_dns.ts";
import { startRedis } from "./_redis.ts";
import { socks5Associate } from "./_socks5.ts";
import {
  listenLocal,
  readWithin,
  run,
  type ServiceProcess,
  startService,
  until as untilShared,
  within,
} from "./_util.ts";
import { depotMemberArgs, startDepot } from "./_depot.ts";
import { Logger } from "../lib/log.ts";
import { DepotCluster } from "../lib/cluster/mod.ts";

/** Wait until `cond` holds (a line or a lease that must come); the failure quotes it. */
function until(cond: () => boolean): Promise<void> {
  return untilShared(String(cond), cond);
}

const pysocksScript = new URL("./py/pysocks_dns.py", import.meta.url).pathname;
const env = { DEPOT_TOKEN: "udp-depot-token", DEPOT_CLUSTER_TOKEN: "udp-cluster-token-1" };

/** The value of one sample of a metrics text (0 when absent). */
function sample(text: string, series: string): number {
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

/** The `warren_udp_datagrams_total` samples of `relay` on `p`'s /metrics: [up, down]. */
async function datagrams(p: { metrics: string }, relay: string): Promise<[number, number]> {
  const text = await (await fetch(`http://${p.metrics}/metrics`)).text();
  const of = (d: string) =>
    sample(text, `warren_udp_datagrams_total{relay="${relay}",direction="${d}"}`);
  return [of("up"), of("down")];
}

Deno.test("depot cluster udp: PySocks -> depot-server A -> B -> depot-local -> dnsmasq, 50 queries in order; password via B's lease; 0x07 without UDP; ends when the link drops", async () => {
  const redis = await startRedis();
  const dns = await startDnsmasq();
  const procs: ServiceProcess[] = [];
  const instance = async () => {
    const p = await startService(
      "depot-server.ts",
      depotMemberArgs(redis.url, "--metrics", "127.0.0.1:0"),
      { readyCount: 4, env },
    );
    procs.push(p);
    const metrics = /addr=(\S+)/.exec(await p.waitFor(/msg="metrics listening"/))![1];
    return Object.assign(p, { metrics });
  };
  const local = async (at: ServiceProcess, args: string[]) => {
    const p = await startService(
      "depot-local.ts",
      ["--server", at.addrs.get("control")!, ...args],
      { readyCount: 0, ready: /msg="connected"/, env },
    );
    procs.push(p);
    return p;
  };
  try {
    const a = await instance();
    const b = await instance();
    const office = await local(b, ["--name", "office", "--socks-password", "office-password-1"]);
    await local(b, ["--name", "noudp", "--no-udp"]);
    await a.waitFor(/msg="exits held elsewhere" exits="noudp@\w+,office@\w+"/);
    const socksPort = a.addrs.get("socks")!.split(":")[1];
    const pysocks = (n: number, pass: string) =>
      run("/usr/bin/python3", [pysocksScript, socksPort, `${dns.port}`, `${n}`, "office", pass]);

    // A checks the password against the digest in B's lease: a wrong one gets no association.
    const wrong = await pysocks(1, "not-the-password");
    assert(wrong.code !== 0, wrong.stdout);
    await a.waitFor(/msg="SOCKS authentication failed" .*exit=office/);

    const n = 50;
    const r = await pysocks(n, "office-password-1");
    assertEquals(r.code, 0, r.stderr);
    const got = JSON.parse(r.stdout) as { ids: number[]; addrs: string[]; sent: number };
    console.log(
      `PySocks via depot cluster A -> B: ${got.sent} queries sent, ${got.ids.length} answered`,
    );
    assertEquals(got.ids, Array.from({ length: n }, (_, i) => i + 1));
    assert(got.addrs.every((x) => x === exampleTestAddress), got.addrs.join());
    // The association ends with PySocks' TCP connection: at A, then at B and the local.
    const aLine = await a.waitFor(/dest=udp .*msg="connection closed" .*via=cluster/);
    const bLine = await b.waitFor(/dest=udp msg="cluster connection closed"/);
    const lLine = await office.waitFor(/dest=udp .*msg="connection closed"/);
    assert(/ end=done /.test(aLine), aLine);
    assert(/ endedBy=instance /.test(bLine), bLine);
    for (const line of [aLine, bLine, lLine]) {
      assert(new RegExp(` datagramsUp=${got.sent}( |$)`).test(line), line);
      assert(new RegExp(` datagramsDown=${n}( |$)`).test(line), line);
    }
    // The same counts in both instances' /metrics: A as the relay the client reached, B as
    // the one holding the exit.
    assertEquals(await datagrams(a, "depot-server"), [got.sent, n]);
    assertEquals(await datagrams(b, "depot-cluster"), [got.sent, n]);
    assertEquals(await datagrams(b, "depot-server"), [0, 0]);

    // An exit that does not carry UDP (its lease says so): 0x07 at A, without asking B.
    const noudp = await socks5Associate(Number(socksPort), 0, { user: "noudp", pass: "x" });
    assertEquals(noudp.reply, 7);
    closeQuietly(noudp.control);
    await a.waitFor(/exit=noudp .*msg="udp associate refused" failure=no-udp /);

    // The link drops (B killed): A ends the association and closes the client's connection.
    const client = await UdpSocket.bind("127.0.0.1", 0);
    const assoc = await socks5Associate(Number(socksPort), client.addr.port, {
      user: "office",
      pass: "office-password-1",
    });
    try {
      assertEquals(assoc.reply, 0);
      const answered = new Promise<number>((resolve) => {
        client.onMessage = (d) => resolve(dnsAnswer(decodeSocks5Udp(d).data).id);
      });
      const dnsAddr = { host: "127.0.0.1", port: dns.port };
      await client.send(encodeSocks5Udp(dnsAddr, dnsQuery(77, "x.example.test")), assoc.relay);
      assertEquals(await within(answered, "the answer to query 77"), 77);
      await b.stop("SIGKILL");
      assertEquals(
        await readWithin(assoc.control, new Uint8Array(1), "A closing the control connection"),
        null,
      );
      const cut = await a.waitFor(/dest=udp .*msg="connection closed" .*datagramsDown=1( |$)/);
      assert(/ failure=exit-(closed|error) /.test(cut), cut);
    } finally {
      closeQuietly(assoc.control);
      client.close();
    }
  } finally {
    for (const p of procs.reverse()) await p.stop("SIGKILL");
    await dns.stop();
    await redis.stop();
  }
});

Deno.test("depot cluster udp: a handed-over association ends on A's idle timeout, and when the exit leaves B", async () => {
  const redis = await startRedis();
  const aLines: string[] = [], bLines: string[] = [];
  const logger = (lines: string[]) => new Logger("debug", {}, (l) => void lines.push(l));
  const a = await startDepot({
    server: { log: logger(aLines), udp: { idleTimeoutMs: 300 } },
    locals: [],
  });
  const b = await startDepot({ server: { log: logger(bLines) } });
  const member = async (server: typeof a.server, instance: string) => {
    const l = listenLocal();
    const c = await DepotCluster.connect(server, {
      url: redis.url,
      token: "udp-cluster-token-2",
      advertise: `127.0.0.1:${l.addr.port}`,
      heartbeatMs: 100,
      instance,
      log: logger(instance === "a" ? aLines : bLines),
    });
    c.listen(l);
    return c;
  };
  const ca = await member(a.server, "a");
  const cb = await member(b.server, "b");
  const closedAt = (lines: string[], n: number) =>
    lines.filter((l) => l.includes("dest=udp") && l.includes("connection closed")).length >= n;
  try {
    await until(() => ca.view().exitsElsewhere.length === 1);
    const idle = await socks5Associate(a.socksPort);
    assertEquals(idle.reply, 0);
    // Nothing moves: A ends it after 300 ms, closes the client's connection, and B follows.
    assertEquals(
      await readWithin(idle.control, new Uint8Array(1), "A closing the idle association"),
      null,
    );
    closeQuietly(idle.control);
    await until(() => closedAt(aLines, 1) && closedAt(bLines, 1));
    const aLine = aLines.find((l) => l.includes("dest=udp") && l.includes("connection closed"))!;
    assert(/ end=idle /.test(aLine) && / via=cluster /.test(aLine), aLine);
    assert(bLines.some((l) => / endedBy=instance( |$)/.test(l)), bLines.join("\n"));

    // The exit leaves B: the association ends at A, and its client's connection with it.
    const cut = await socks5Associate(a.socksPort);
    assertEquals(cut.reply, 0);
    await b.locals[0].stop();
    assertEquals(
      await readWithin(cut.control, new Uint8Array(1), "A closing the association the exit left"),
      null,
    );
    closeQuietly(cut.control);
    await until(() => closedAt(aLines, 2));
    const last = aLines.filter((l) => l.includes("dest=udp") && l.includes("connection closed"))[1];
    assert(/ failure=exit-(closed|error) /.test(last), last);
  } finally {
    await ca.close();
    await cb.close();
    await a.close();
    await b.close();
    await redis.stop();
  }
});
