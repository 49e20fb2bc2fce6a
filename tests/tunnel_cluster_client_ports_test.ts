/**
 * Ports a client asks for in its own handshake span the cluster (issue 19): two
 * tunnel-servers on a real redis-server, A binding public ports on 127.0.0.1 and B on
 * 127.0.0.2 (one machine, so each instance has an address of its own). The client connects
 * to B and asks for TCP and UDP ports; A binds them when it learns of the claim and hands
 * their traffic to B over the cluster link:
 *
 * - byte-exact through A: two 24 MiB uploads hashed after the sender's FIN, an 8 MiB download
 *   sent after the request's FIN, DNS answers from a real dnsmasq (the client sets access
 *   rules for its HTTP host: they do not stop its ports' streams over the link);
 * - a port another program holds on A: A says so in its log and admin API, B serves it;
 * - a second client asking for the same port on A is refused with the reason;
 * - kill -9 of B: the client reconnects to A, which takes the claim over; a new instance
 *   (127.0.0.2 again) binds the claimed ports at start and serves them through A;
 * - the client leaves: both instances close the ports;
 * - a holder killed while its client can reach no other instance: the claim's lease expires
 *   and the other instance closes the port.
 *
 * Then a group with members on both instances keeps its port when the member on the claim's
 * holder leaves, and two `--workers` share a client's ports: TCP with SO_REUSEPORT, both
 * relaying; UDP with SO_REUSEADDR (Deno offers no SO_REUSEPORT for UDP), one receiving.
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { blockStreamSha256, freePort, type ServiceProcess, startService } from "./_util.ts";
import {
  download,
  freeUdpPort,
  hashThrough,
  portOnBoth,
  startClientProcess,
  startClusterMember,
  startHasher,
  startSender,
} from "./_tunnel.ts";
import { startRedis } from "./_redis.ts";
import { dig, exampleTestAddress, startDnsmasq } from "./_dns.ts";
import type { PortTunnelInfo } from "../lib/tunnel/mod.ts";

const id = "client-ports-identifier-01";
const otherId = "client-ports-identifier-02";
const token = "client-ports-link-token-01";
const adminToken = "client-ports-admin-token-01";

/** Whether a TCP connection to `hostname:port` is refused (nothing listens there). */
async function refused(hostname: string, port: number): Promise<boolean> {
  try {
    (await Deno.connect({ hostname, port })).close();
    return false;
  } catch (err) {
    return err instanceof Deno.errors.ConnectionRefused;
  }
}

/** The TCP tunnels `m`'s admin API lists. */
async function tcpTunnels(m: ServiceProcess): Promise<PortTunnelInfo[]> {
  const res = await fetch(`http://${m.addrs.get("admin")}/tcp`, {
    headers: { authorization: `Bearer ${adminToken}` },
  });
  assertEquals(res.status, 200);
  return await res.json();
}

Deno.test("tunnel cluster: ports a client asks for are bound on every instance and reach it over the link", async () => {
  const redis = await startRedis();
  const hasher = startHasher();
  const app = startSender();
  const dns = await startDnsmasq();
  const procs: ServiceProcess[] = [];
  // Another program holds one of the ports on A's address.
  const P = portOnBoth(3);
  const U = await freeUdpPort();
  const [up, down, busy] = [P, P + 1, P + 2];
  const squatter = Deno.listen({ hostname: "127.0.0.1", port: busy });
  try {
    const member = async (host: string, admin = false) => {
      const p = await startClusterMember(redis.url, token, [
        "--tcp-ports",
        `${P}-${P + 2}`,
        "--tcp-host",
        host,
        "--udp-ports",
        `${U}-${U}`,
        "--udp-host",
        host,
        "--host",
        "one.test=env:ID",
        "--host",
        "two.test=env:OTHER_ID",
        ...(admin ? ["--admin", "127.0.0.1:0", "--metrics", "127.0.0.1:0"] : []),
      ], {
        readyCount: admin ? 3 : 2,
        env: { ID: id, OTHER_ID: otherId, TUNNEL_ADMIN_TOKEN: adminToken },
      });
      procs.push(p);
      return p;
    };
    const a = await member("127.0.0.1", true);
    let b = await member("127.0.0.2");
    const client = await startClientProcess(
      `${b.addrs.get("http")},http://${a.addrs.get("http")}`,
      hasher.port,
      id,
      [
        "--tcp",
        `${up}=127.0.0.1:${hasher.port}`,
        "--tcp",
        `${down}=127.0.0.1:${app.port}`,
        "--tcp",
        `${busy}=127.0.0.1:${hasher.port}`,
        "--udp",
        `${U}=127.0.0.1:${dns.port}`,
        // Access rules of its HTTP host do not stop its ports' streams over the link.
        "--basic-auth",
        "user:client-ports-password",
      ],
    );
    procs.push(client);
    await client.waitFor(new RegExp(`msg="tcp tunnel open" publicPort=${up} addr=127.0.0.2:`));
    // A learns of the claims and binds the ports; the one another program holds it cannot.
    for (const name of [`tcp-${up}`, `tcp-${down}`, `udp-${U}`]) {
      await a.waitFor(new RegExp(`msg="listening" name=${name} addr=127\\.0\\.0\\.1:`));
    }
    await a.waitFor(
      new RegExp(`level=warn .*msg="tcp port claimed in the cluster not bound here.* port=${busy}`),
    );
    // B writes the client's lease just after its handshake (the ports were claimed in it):
    // until then another instance finds no client for them (a connection there is closed).
    await b.waitFor(/msg="client connected"/);

    const total = 24 * 1024 * 1024 + 7;
    const hashes = await Promise.all([1, 2].map((seed) => hashThrough(up, total, seed)));
    assertEquals(hashes, [blockStreamSha256(total, 1), blockStreamSha256(total, 2)]);
    const size = 8 * 1024 * 1024 + 3;
    assertEquals(await download(down, size, 9), blockStreamSha256(size, 9));
    await a.waitFor(/cluster link up/);
    assertEquals(await dig(U, "one.example.test"), exampleTestAddress);
    // The busy port: shown by A's admin API, served by B.
    const listed = await tcpTunnels(a);
    const busyInfo = listed.find((t) => t.publicPort === busy);
    assertEquals([busyInfo?.source, busyInfo?.open], ["client", false]);
    assertMatch(busyInfo?.error ?? "", /in use/i);
    const upInfo = listed.find((t) => t.publicPort === up);
    assertEquals([upInfo?.open, upInfo?.addr], [true, `127.0.0.1:${up}`]);
    assert(upInfo?.instance !== undefined && upInfo.instance !== "", "the holder is named");
    assertEquals(await hashThrough(busy, 1024, 3, "127.0.0.2"), blockStreamSha256(1024, 3));
    // And A's status page: the ports, by holder, the busy one with its error.
    const metrics = /addr=(\S+)/.exec(await a.waitFor(/msg="metrics listening"/))![1];
    const page = await (await fetch(`http://${metrics}/status/ui/data`))
      .json() as { tables: { title: string; columns: string[]; rows: unknown[][] }[] };
    const ports = page.tables.find((t) => t.title === "ports");
    assertEquals(ports?.columns.slice(0, 2), ["proto", "port"]);
    const row = (proto: string, port: number) =>
      ports?.rows.find((r) => r[0] === proto && r[1] === port);
    assertEquals(row("tcp", up)?.slice(3), ["client", upInfo.instance, true, `127.0.0.1:${up}`]);
    assertEquals(row("tcp", busy)?.slice(3, 6), ["client", upInfo.instance, false]);
    assertMatch(String(row("tcp", busy)?.[6]), /in use/i);
    assertEquals(row("udp", U)?.[5], true);

    // Another client asking for the same port on A is refused, with the reason.
    const other = await startClientProcess(a.addrs.get("http")!, hasher.port, otherId, [
      "--tcp",
      `${up}=127.0.0.1:${hasher.port}`,
    ]);
    procs.push(other);
    await other.waitFor(
      new RegExp(`msg="tcp tunnel refused" publicPort=${up} error="port in use by another client`),
    );
    await other.stop();
    assertEquals(await hashThrough(up, 4096, 4), blockStreamSha256(4096, 4));

    // kill -9 of the holder: the client reconnects to A, whose ports serve again.
    await b.stop("SIGKILL");
    await client.waitFor(new RegExp(`msg="tcp tunnel open" publicPort=${up} addr=127.0.0.1:`));
    assertEquals(await hashThrough(up, total, 5), blockStreamSha256(total, 5));
    assertEquals(await dig(U, "two.example.test"), exampleTestAddress);
    // A new instance on B's address binds the claimed ports at start and hands them to A.
    b = await member("127.0.0.2");
    await b.waitFor(new RegExp(`msg="listening" name=tcp-${up} addr=127\\.0\\.0\\.2:`));
    await b.waitFor(new RegExp(`msg="listening" name=udp-${U} addr=127\\.0\\.0\\.2:`));
    assertEquals(await hashThrough(up, total, 6, "127.0.0.2"), blockStreamSha256(total, 6));
    assertEquals(await download(down, size, 7, "127.0.0.2"), blockStreamSha256(size, 7));
    assertEquals(await dig(U, "three.example.test", "127.0.0.2"), exampleTestAddress);

    // The client leaves: every instance closes its ports.
    const released = (proto: string, port: number) =>
      new RegExp(`msg="${proto} port released in the cluster: closed" port=${port}`);
    let marks = [a.lines.length, b.lines.length];
    await client.stop();
    for (const [i, m, host] of [[0, a, "127.0.0.1"], [1, b, "127.0.0.2"]] as const) {
      await m.waitFor(released("tcp", up), undefined, marks[i]);
      await m.waitFor(released("tcp", down), undefined, marks[i]);
      await m.waitFor(released("udp", U), undefined, marks[i]);
      assert(await refused(host, up), `${host}:${up} still open`);
      assert(await refused(host, down), `${host}:${down} still open`);
    }
    assertEquals((await tcpTunnels(a)).length, 0);

    // A holder killed while its client cannot reach another instance: its claim's lease
    // expires and the other instances close the port.
    marks = [a.lines.length];
    const stranded = await startClientProcess(b.addrs.get("http")!, hasher.port, otherId, [
      "--tcp",
      `${down}=127.0.0.1:${app.port}`,
    ]);
    procs.push(stranded);
    await a.waitFor(new RegExp(`msg="listening" name=tcp-${down} `), undefined, marks[0]);
    await b.waitFor(/msg="client connected"/);
    assertEquals(await download(down, size, 8), blockStreamSha256(size, 8));
    marks = [a.lines.length];
    await b.stop("SIGKILL");
    await a.waitFor(released("tcp", down), undefined, marks[0]);
    assert(await refused("127.0.0.1", down), `127.0.0.1:${down} still open`);
  } finally {
    for (const p of procs.reverse()) await p.stop();
    squatter.close();
    await dns.stop();
    await app.close();
    await hasher.close();
    await redis.stop();
  }
});

Deno.test("tunnel cluster: a group with members on two instances keeps its port when the member holding the claim leaves", async () => {
  const redis = await startRedis();
  const hasher = startHasher();
  const procs: ServiceProcess[] = [];
  const P = portOnBoth(3);
  try {
    const member = (host: string) =>
      startClusterMember(redis.url, token, [
        "--duplicate",
        "balance",
        "--tcp-ports",
        `${P}-${P}`,
        "--tcp-host",
        host,
        "--host",
        "one.test=env:ID",
        // Leases of 3 s: who holds the client's lease moves only when the test moves it, not
        // because a beat came late on a loaded machine.
        "--heartbeat",
        "1s",
      ], { env: { ID: id } });
    const a = await member("127.0.0.1");
    procs.push(a);
    const b = await member("127.0.0.2");
    procs.push(b);
    const join = async (m: ServiceProcess) => {
      const c = await startClientProcess(m.addrs.get("http")!, hasher.port, id, [
        "--tcp",
        `${P}=127.0.0.1:${hasher.port}`,
      ]);
      procs.push(c);
      await c.waitFor(new RegExp(`msg="tcp tunnel open" publicPort=${P} addr=`));
      return c;
    };
    await join(a);
    await b.waitFor(new RegExp(`msg="listening" name=tcp-${P} addr=127\\.0\\.0\\.2:`));
    // The member on B claims the port too: B holds the claim now.
    const second = await join(b);
    for (const host of ["127.0.0.1", "127.0.0.2"]) {
      assertEquals(await hashThrough(P, 1 << 20, 1, host), blockStreamSha256(1 << 20, 1));
    }
    // A stands by for the client (B holds its lease now), in Redis too.
    await a.waitFor(/msg="client now held by another instance"/);
    const marks = [a.lines.length, b.lines.length];
    await second.stop();
    // B released the claim; A, whose member still serves the port, writes it back and keeps
    // its port bound; B binds it again.
    await b.waitFor(
      new RegExp(`msg="listening" name=tcp-${P} addr=127\\.0\\.0\\.2:`),
      undefined,
      marks[1],
    );
    const want = blockStreamSha256(1 << 20, 2);
    assertEquals(await hashThrough(P, 1 << 20, 2), want);
    // B reaches the member on A at once: B's release handed the client's lease to A, which
    // stood by for it (no moment without a lease, in which B would close the connection).
    assertEquals(await hashThrough(P, 1 << 20, 2, "127.0.0.2"), want);
    const releasedOnA = a.lines.slice(marks[0]).filter((l) =>
      /port released in the cluster/.test(l)
    );
    assertEquals(releasedOnA, []);
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await hasher.close();
    await redis.stop();
  }
});

Deno.test("workers: ports a client asks for are bound by both tunnel-server workers (TCP: SO_REUSEPORT, byte-exact through both; UDP: SO_REUSEADDR, DNS answered)", async () => {
  const redis = await startRedis();
  const hasher = startHasher();
  const dns = await startDnsmasq();
  const port = freePort();
  const tcp = portOnBoth(3);
  const udp = await freeUdpPort();
  const procs: ServiceProcess[] = [];
  try {
    const server = await startService("tunnel-server.ts", [
      "--listen",
      `127.0.0.1:${port}`,
      "--registry",
      redis.url,
      "--heartbeat",
      "300ms",
      "--tcp-ports",
      `${tcp}-${tcp}`,
      "--udp-ports",
      `${udp}-${udp}`,
      "--host",
      "one.test=env:ID",
      "--workers",
      "2",
    ], {
      denoArgs: ["--unstable-net"],
      ready: /msg="workers ready"/,
      readyCount: 0,
      env: { ID: id },
    });
    procs.push(server);
    procs.push(
      await startClientProcess(`127.0.0.1:${port}`, hasher.port, id, [
        "--tcp",
        `${tcp}=127.0.0.1:${hasher.port}`,
        "--udp",
        `${udp}=127.0.0.1:${dns.port}`,
      ]),
    );
    // The worker holding the client claims the ports; both bind them. UDP has no
    // SO_REUSEPORT in Deno: both bind with SO_REUSEADDR, and Linux gives each datagram to
    // the one bound last (here the worker that does not hold the client, so the DNS query
    // also crosses the workers' link). Neither reports the port as busy.
    for (const w of [1, 2]) {
      await server.waitFor(new RegExp(`worker=${w} msg="listening" name=tcp-${tcp}`));
      await server.waitFor(new RegExp(`worker=${w} msg="listening" name=udp-${udp}`));
    }
    await server.waitFor(/msg="client connected"/);
    assertEquals(await dig(udp, "workers.example.test"), exampleTestAddress);
    assertEquals(server.lines.filter((l) => / level=(warn|error) /.test(l)), []);
    const closedBy = (w: string) =>
      server.lines.filter((l) =>
        new RegExp(`worker=${w} .*tcp=${tcp} .*msg="connection closed"`).test(l)
      )
        .length;
    const total = 1024 * 1024 + 5;
    for (let i = 0; i < 200 && (closedBy("1") === 0 || closedBy("2") === 0); i++) {
      assertEquals(await hashThrough(tcp, total, i), blockStreamSha256(total, i));
      await new Promise((r) => setTimeout(r, 5));
    }
    await new Promise((r) => setTimeout(r, 100));
    assert(closedBy("1") > 0 && closedBy("2") > 0, "both workers relayed connections");
    assertEquals(await server.stop("SIGTERM"), 0);
  } finally {
    for (const p of procs.reverse()) await p.stop("SIGKILL");
    await hasher.close();
    await dns.stop();
    await redis.stop();
  }
});
