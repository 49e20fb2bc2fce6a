/**
 * TCP and UDP tunnels across cluster instances (issue 19): two tunnel-servers on a real
 * redis-server, each defining the same identifier's server-defined tunnels on its own ports
 * (`--tcp`, `--udp`). The client connects to B only; connections and datagrams arriving at A's
 * ports travel A → B over the cluster link and reach the client there — byte-exact both ways
 * with half-close (an upload hashed after the sender's FIN, a download sent after the
 * request's FIN), and DNS answers from a real dnsmasq, every datagram counted.
 */

import { assertEquals } from "./_assert.ts";
import { blockStreamSha256, freePort, readAll, type ServiceProcess } from "./_util.ts";
import {
  download,
  freeUdpPort,
  hashThrough,
  startClientProcess,
  startClusterMember,
  startHasher,
  startSender,
} from "./_tunnel.ts";
import { startRedis } from "./_redis.ts";
import { dig, dnsAnswer, dnsQuery, exampleTestAddress, startDnsmasq } from "./_dns.ts";
import { UdpSocket } from "../lib/udp/mod.ts";

const id = "cluster-ports-identifier-01";
const token = "cluster-ports-link-token-01";

/**
 * `n` DNS queries from one socket, one at a time, each re-sent after 10 s without an answer
 * (3 tries: a datagram may be lost; 2 s was close to a slow hop chain on a loaded box).
 */
async function queries(port: number, n: number): Promise<{ sent: number; answered: number }> {
  const sock = await UdpSocket.bind("127.0.0.1", 0);
  const answers = new Map<number, string | undefined>();
  let wake: (() => void) | undefined;
  sock.onMessage = (d) => {
    const a = dnsAnswer(d);
    answers.set(a.id, a.a);
    wake?.();
  };
  let sent = 0;
  try {
    for (let q = 1; q <= n; q++) {
      for (let attempt = 0; attempt < 3 && !answers.has(q); attempt++) {
        sent++;
        await sock.send(dnsQuery(q, `c${q}.example.test`), { host: "127.0.0.1", port });
        const deadline = Date.now() + 10_000;
        while (!answers.has(q) && Date.now() < deadline) {
          await new Promise<void>((r) => {
            wake = r;
            setTimeout(r, 100);
          });
        }
      }
    }
    const answered = [...answers.values()].filter((a) => a === exampleTestAddress).length;
    return { sent, answered };
  } finally {
    await sock.close();
  }
}

Deno.test("tunnel cluster: TCP and UDP tunnels of a client held by another instance, over the link", async () => {
  const redis = await startRedis();
  const hasher = startHasher();
  const app = startSender();
  const dns = await startDnsmasq();
  const procs: ServiceProcess[] = [];
  try {
    const instance = async (tcpPort: number, udpPort: number) => {
      const p = await startClusterMember(redis.url, token, [
        "--tcp-ports",
        `${tcpPort}-${tcpPort + 1}`,
        "--tcp",
        `${tcpPort}:${hasher.port}=env:ID`,
        "--tcp",
        `${tcpPort + 1}:${app.port}=env:ID`,
        "--udp-ports",
        `${udpPort}-${udpPort}`,
        "--udp",
        `${udpPort}:${dns.port}=env:ID`,
      ], { readyCount: 5, env: { ID: id } });
      procs.push(p);
      return p;
    };
    // Two consecutive free TCP ports per instance (the hasher's and the app's tunnel).
    const pair = () => {
      for (;;) {
        const p = freePort();
        try {
          Deno.listen({ hostname: "127.0.0.1", port: p + 1 }).close();
          return p;
        } catch {
          // Taken: try another.
        }
      }
    };
    const [tcpA, udpA] = [pair(), await freeUdpPort()];
    const a = await instance(tcpA, udpA);
    const [tcpB, udpB] = [pair(), await freeUdpPort()];
    const b = await instance(tcpB, udpB);
    // No client anywhere yet: A's port takes the connection and closes it (a 502 in its log).
    const early = await Deno.connect({ hostname: "127.0.0.1", port: tcpA });
    assertEquals((await readAll(early)).length, 0);
    early.close();
    await a.waitFor(/failure=no-client/);
    // The client is held by B; it allows the ports the servers name.
    procs.push(
      await startClientProcess(b.addrs.get("http")!, hasher.port, id, [
        "--allow-port",
        String(app.port),
        "--allow-port",
        String(dns.port),
      ]),
    );

    // Through B itself (the client is local there) and through A (handed over the link).
    for (const [port, who] of [[tcpB, "B"], [tcpA, "A"]] as const) {
      const total = 24 * 1024 * 1024 + 7;
      const up = await Promise.all([1, 2].map((seed) => hashThrough(port, total, seed)));
      assertEquals(up, [blockStreamSha256(total, 1), blockStreamSha256(total, 2)], who);
      const down = 8 * 1024 * 1024 + 3;
      assertEquals(await download(port + 1, down, 9), blockStreamSha256(down, 9), who);
    }
    await a.waitFor(/cluster link up/);

    for (const port of [udpB, udpA]) {
      assertEquals(await dig(port, "cluster.example.test"), exampleTestAddress);
      const r = await queries(port, 50);
      assertEquals(r.answered, 50, `port ${port}: ${JSON.stringify(r)}`);
      console.log(
        `udp through ${
          port === udpA ? "A (over the link)" : "B"
        }: ${r.sent} sent, ${r.answered} answered`,
      );
    }
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await dns.stop();
    await app.close();
    await hasher.close();
    await redis.stop();
  }
});
