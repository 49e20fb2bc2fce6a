/**
 * UDP tunnels (`--udp`, the sibling of `--tcp`): a public UDP port on the server relayed to a
 * client's local UDP service, one tunnel stream per public peer. Real peers: dig and our own
 * DNS queries to a real dnsmasq behind the client, every datagram counted on both sides; the
 * admin API's `/udp` routes and the state file; idle flows expiring on both ends; and as
 * processes, a flood of new peers held to `--udp-max-flows`.
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { createAdminApp, TunnelStateFile, type UdpTunnelInfo } from "../lib/tunnel/mod.ts";
import { UdpSocket } from "../lib/udp/mod.ts";
import { dig, dnsAnswer, dnsQuery, exampleTestAddress, startDnsmasq } from "./_dns.ts";
import { freeUdpPort, startClient, startTunnel, testLog } from "./_tunnel.ts";
import { run, startService } from "./_util.ts";

/** Wait until `check()` is true (flows open and close with the traffic, not on a clock). */
async function until(check: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * A DNS peer on its own socket: `ask` sends queries and collects the answers by transaction
 * id; every datagram sent and received is counted.
 */
async function dnsPeer(port: number) {
  const sock = await UdpSocket.bind("127.0.0.1", 0);
  const answers = new Map<number, string | undefined>();
  const order: number[] = [];
  let sent = 0, received = 0;
  let wake: (() => void) | undefined;
  sock.onMessage = (d) => {
    received++;
    const a = dnsAnswer(d);
    answers.set(a.id, a.a);
    order.push(a.id);
    wake?.();
  };
  const send = async (id: number) => {
    sent++;
    await sock.send(dnsQuery(id, `q${id}.example.test`), { host: "127.0.0.1", port });
  };
  /** Wait (up to `ms`) until every id of `ids` has an answer. */
  const wait = async (ids: number[], ms: number) => {
    const deadline = Date.now() + ms;
    while (ids.some((id) => !answers.has(id)) && Date.now() < deadline) {
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, 100);
      });
    }
  };
  return {
    answers,
    order,
    get sent() {
      return sent;
    },
    get received() {
      return received;
    },
    /** One query at a time: sent again (up to 3 times) when no answer comes in 2 s. */
    async askEach(ids: number[]) {
      for (const id of ids) {
        for (let attempt = 0; attempt < 3 && !answers.has(id); attempt++) {
          await send(id);
          await wait([id], 2_000);
        }
      }
    },
    /** All at once, then wait for the answers. */
    async askBurst(ids: number[]) {
      for (const id of ids) await send(id);
      await wait(ids, 15_000);
    },
    close: () => sock.close(),
  };
}

const id = "udp-tunnel-identifier-01";
const token = "admin-token-for-udp-tests";

Deno.test("tunnel --udp: dig and 400 counted datagrams to a real dnsmasq, admin /udp, state file, idle expiry", async () => {
  const dns = await startDnsmasq();
  const [p1, p2] = [await freeUdpPort(), await freeUdpPort()];
  const range = { min: Math.min(p1, p2), max: Math.max(p1, p2) };
  const t = startTunnel({ udpPorts: range, udpLimits: { idleTimeoutMs: 1_000 } });
  await t.server.addHost("udp.test", id);
  const dir = await Deno.makeTempDir();
  const state = new TunnelStateFile(`${dir}/state.json`, t.server, testLog("state"));
  const admin = createAdminApp(t.server, { token, onChange: () => state.save() });
  const call = async (method: string, path: string, body?: unknown) => {
    const res = await admin.fetch(
      new Request(`http://admin${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      }),
    );
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : null };
  };
  const local = { host: "127.0.0.1", port: dns.port };
  const c = startClient({
    server: t.url,
    identifier: id,
    local: { host: "127.0.0.1", port: 1 },
    udp: [{ publicPort: p1, local }],
  });
  const peer = await dnsPeer(p1);
  try {
    await c.connected();
    assertEquals(t.server.clients()[0].udpPorts, [p1]);
    // dig, a real DNS client, through the tunnel.
    assertEquals(await dig(p1, "dig.example.test"), exampleTestAddress);

    // 300 queries one at a time and a burst of 100, from one peer (one flow): every answer
    // comes back, and the server counted exactly the datagrams this peer sent and received.
    const before = t.server.udpTunnels().find((x) => x.publicPort === p1)!.stats;
    const one = Array.from({ length: 300 }, (_, i) => i + 1);
    await peer.askEach(one);
    const burst = Array.from({ length: 100 }, (_, i) => 1000 + i);
    await peer.askBurst(burst);
    for (const q of [...one, ...burst]) assertEquals(peer.answers.get(q), exampleTestAddress);
    const after = t.server.udpTunnels().find((x) => x.publicPort === p1)!.stats;
    assertEquals(after.datagramsIn - before.datagramsIn, peer.sent);
    assertEquals(after.datagramsOut - before.datagramsOut, peer.received);
    const burstOrder = peer.order.filter((q) => q >= 1000);
    const inversions = burstOrder.filter((q, i) => i > 0 && q < burstOrder[i - 1]).length;
    console.log(
      `udp tunnel: ${peer.sent} datagrams sent, ${peer.received} answers; burst of 100: ` +
        `${burstOrder.length} answers, ${inversions} out of order; drops ${
          JSON.stringify(after.drops)
        }`,
    );

    // A server-defined UDP tunnel through the admin API, to a port the client allows (the
    // local address of its own --udp tunnel).
    const add = await call("POST", "/udp", { publicPort: p2, identifier: id, localPort: dns.port });
    assertEquals(add.status, 201, JSON.stringify(add.json));
    assertEquals([add.json.publicPort, add.json.source, add.json.open], [p2, "server", true]);
    assert(!JSON.stringify(add.json).includes(id), "identifier in the answer");
    assertEquals(await dig(p2, "admin.example.test"), exampleTestAddress);
    const list = (await call("GET", "/udp")).json as UdpTunnelInfo[];
    assertEquals(
      list.map((x) => [x.publicPort, x.source, x.open]),
      [
        [p1, "client", true],
        [p2, "server", true],
      ].sort((a, b) => Number(a[0]) - Number(b[0])),
    );
    assert(list.every((x) => x.stats.datagramsIn > 0 && x.stats.flowsOpened > 0));
    const saved = JSON.parse(await Deno.readTextFile(`${dir}/state.json`));
    assertEquals(saved.udp, [{ publicPort: p2, identifier: id, localPort: dns.port }]);
    const twice = await call("POST", "/udp", { publicPort: p2, identifier: id });
    assertEquals([twice.status, twice.json.reason], [409, "in-use"]);
    const outside = await call("POST", "/udp", { publicPort: range.max + 1, identifier: id });
    assertEquals([outside.status, outside.json.reason], [403, "not-allowed"]);

    // Idle flows expire on the server, and the client closes its side with them.
    await until(
      () => t.server.udpTunnels().every((x) => x.flows === 0),
      "server flows to expire",
    );
    await until(() => (c.client.udpFlows?.size ?? 0) === 0, "client flows to close");
    const expired = t.server.udpTunnels().reduce((n, x) => n + x.stats.flowsExpired, 0);
    assert(expired >= 2, `flows expired: ${expired}`);
    // After expiry the same peer simply gets a new flow.
    await peer.askEach([5000]);
    assertEquals(peer.answers.get(5000), exampleTestAddress);

    // Removing closes the port; the state file forgets it.
    assertEquals((await call("DELETE", `/udp/${p2}`)).status, 204);
    assertEquals((await call("DELETE", `/udp/${p2}`)).status, 404);
    assertEquals(t.server.udpTunnels().map((x) => x.publicPort), [p1]);
    const rebound = await UdpSocket.bind("127.0.0.1", p2);
    await rebound.close();
    assertEquals(JSON.parse(await Deno.readTextFile(`${dir}/state.json`)).udp, undefined);

    // A local port the client does not allow: it refuses each flow, nothing is sent there,
    // and the server counts every datagram it could not carry (in = relayed + dropped).
    const refused = await call("POST", "/udp", { publicPort: p2, identifier: id, localPort: 9 });
    assertEquals(refused.status, 201);
    const stats = () => t.server.udpTunnels().find((x) => x.publicPort === p2)!.stats;
    const [inBefore, failedBefore] = [stats().datagramsIn, stats().drops["send-failed"] ?? 0];
    const stranger = await UdpSocket.bind("127.0.0.1", 0);
    try {
      for (let q = 0; q < 3; q++) {
        await stranger.send(dnsQuery(q, "refused.example.test"), { host: "127.0.0.1", port: p2 });
      }
      await until(
        () => (stats().drops["send-failed"] ?? 0) - failedBefore === 3,
        "three datagrams counted as dropped",
      );
    } finally {
      await stranger.close();
    }
    assertEquals(stats().datagramsIn, inBefore);
    assert((c.client.failuresByReason["no-such-port"] ?? 0) >= 1, "the client refused the flow");
    assertEquals((await call("DELETE", `/udp/${p2}`)).status, 204);
  } finally {
    peer.close();
    await c.stop();
    await t.close();
    await dns.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

/** Open file descriptors and resident KiB of process `pid`. */
function usage(pid: number): { fds: number; rssKiB: number } {
  const fds = [...Deno.readDirSync(`/proc/${pid}/fd`)].length;
  const rss = /VmRSS:\s+(\d+)/.exec(Deno.readTextFileSync(`/proc/${pid}/status`))?.[1];
  return { fds, rssKiB: Number(rss) };
}

Deno.test("tunnel-server --udp as processes: dig to dnsmasq, and 3000 new peers held to --udp-max-flows", async () => {
  const dns = await startDnsmasq();
  const port = await freeUdpPort();
  const maxFlows = 64;
  const env = { TUNNEL_ID: id };
  const server = await startService("tunnel-server.ts", [
    "--listen",
    "127.0.0.1:0",
    "--admin",
    "127.0.0.1:0",
    "--udp-ports",
    `${port}-${port}`,
    "--udp",
    `${port}:${dns.port}=env:TUNNEL_ID`,
    "--udp-max-flows",
    String(maxFlows),
  ], { readyCount: 2, env: { ...env, TUNNEL_ADMIN_TOKEN: token } });
  let client;
  try {
    // A UDP-only client: the server names the local port, the client allows it.
    client = await startService("tunnel-client.ts", [
      "--server",
      `http://${server.addrs.get("http")}`,
      "--local",
      `127.0.0.1:${dns.port}`,
      "--allow-port",
      String(dns.port),
    ], { env: { TUNNEL_IDENTIFIER: id }, ready: /msg="connected"/, readyCount: 0 });
    await server.waitFor(new RegExp(`name=udp-${port}`));
    assertEquals(await dig(port, "process.example.test"), exampleTestAddress);

    const adminUrl = `http://${server.addrs.get("admin")}/udp`;
    const tunnels = async () =>
      await (await fetch(adminUrl, { headers: { authorization: `Bearer ${token}` } }))
        .json() as UdpTunnelInfo[];
    const before = { server: usage(server.child.pid), client: usage(client.child.pid) };
    // 3000 peers, 200 sockets at a time, one query each (answers are not waited for).
    let peak = 0;
    for (let wave = 0; wave < 15; wave++) {
      const peers = await Promise.all(
        Array.from({ length: 200 }, () => UdpSocket.bind("127.0.0.1", 0)),
      );
      const q = dnsQuery(wave, "flood.example.test");
      for (const p of peers) await p.send(q, { host: "127.0.0.1", port });
      for (const p of peers) p.close();
      peak = Math.max(peak, (await tunnels())[0].flows);
    }
    // One peer after the flood still gets its answer (dig retries: UDP may lose one).
    assertEquals(await dig(port, "after.example.test"), exampleTestAddress);
    const after = { server: usage(server.child.pid), client: usage(client.child.pid) };
    const [info] = await tunnels();
    console.log(
      `udp tunnel, 3000 new peers, --udp-max-flows ${maxFlows}: flows peak ${peak}, ` +
        `opened ${info.stats.flowsOpened}, evicted ${info.stats.flowsEvicted}, drops ${
          JSON.stringify(info.stats.drops)
        }; server fds ${before.server.fds} -> ${after.server.fds}, RSS ${before.server.rssKiB} -> ${after.server.rssKiB} KiB; ` +
        `client fds ${before.client.fds} -> ${after.client.fds}, RSS ${before.client.rssKiB} -> ${after.client.rssKiB} KiB`,
    );
    assert(peak <= maxFlows, `flows held: ${peak}`);
    assert(info.flows <= maxFlows, `flows held: ${info.flows}`);
    assert(
      info.stats.flowsOpened > maxFlows,
      `the flood did open flows: ${info.stats.flowsOpened}`,
    );
    assert(info.stats.flowsEvicted > 0, "flows were evicted at the bound");
    // The server holds no socket per flow; the client one per flow it still holds.
    assert(after.server.fds - before.server.fds <= 8, `server fds ${JSON.stringify(after)}`);
    assert(after.client.fds - before.client.fds <= 2 * maxFlows, `client ${JSON.stringify(after)}`);
  } finally {
    await client?.stop();
    await server.stop();
    await dns.stop();
  }
});

Deno.test("tunnel-server --udp: outside --udp-ports, or a busy UDP port, exits with one line", async () => {
  const svc = new URL("../services/tunnel-server.ts", import.meta.url).pathname;
  const outside = await run(Deno.execPath(), [
    ...["run", "-A", svc, "--check-config", "--udp-ports", "20000-20010"],
    ...["--udp", `30000=${id}`],
  ]);
  assertEquals(outside.code, 2, outside.stderr);
  assertEquals(outside.stderr.trim().split("\n").length, 1, outside.stderr);
  assertMatch(outside.stderr, /--udp 30000: outside --udp-ports 20000-20010/);
  const busy = await UdpSocket.bind("127.0.0.1", 0);
  try {
    const port = busy.addr.port;
    const r = await run(Deno.execPath(), [
      ...["run", "-A", svc, "--listen", "127.0.0.1:0", "--udp-ports", `${port}`],
      ...["--udp", `${port}=${id}`],
    ]);
    assertEquals(r.code, 2, r.stderr);
    assertMatch(r.stderr, new RegExp(`--udp ${port}: cannot bind ${port}`));
  } finally {
    await busy.close();
  }
});
