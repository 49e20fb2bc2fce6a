/**
 * Admin and status of any cluster instance show the whole cluster (issue 19): hosts with the
 * instance holding their client, every client with its holder, the live instances; with
 * Redis down, an instance still shows its own clients and says why the rest is missing.
 */

import { assert, assertEquals } from "./_assert.ts";
import { startRedis } from "./_redis.ts";
import { startApp, startClient } from "./_tunnel.ts";
import { type Member, member } from "./_tunnel_cluster.ts";
import {
  type ClientInfo,
  type ClusterView,
  clusterView,
  createAdminApp,
  fingerprint,
  type HostStatus,
} from "../lib/tunnel/mod.ts";
import { tunnelStatusProvider } from "../lib/status/mod.ts";

const id = "view-identifier-0001";
const adminToken = "view-admin-token-0001";

/** Poll `f` until it holds (a bound far above a lease write; never a timing assertion). */
async function until(what: string, f: () => Promise<boolean>, maxMs = 20_000): Promise<void> {
  const end = Date.now() + maxMs;
  while (!(await f())) {
    if (Date.now() > end) throw new Error(`never happened: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** GET `path` of `m`'s admin API as JSON. */
async function admin<T>(m: Member, path: string): Promise<T> {
  const app = createAdminApp(m.tunnel.server, { token: adminToken });
  const r = await app.fetch(
    new Request(`http://admin${path}`, { headers: { authorization: `Bearer ${adminToken}` } }),
  );
  assertEquals(r.status, 200, path);
  return await r.json() as T;
}

const hostOf = (hs: HostStatus[], h: string) => hs.find((x) => x.host === h)!;

Deno.test("cluster view: admin and status of either instance show every host, client and holder", async () => {
  const redis = await startRedis();
  const app = startApp("app");
  const members: Member[] = [];
  try {
    const a = await member(redis.url, "a");
    const b = await member(redis.url, "b");
    members.push(a, b);
    await a.tunnel.server.addHost("app.test", id);
    await b.tunnel.server.addHost("idle.test", "view-identifier-idle");
    const client = startClient({
      server: a.tunnel.url,
      identifier: id,
      local: { host: "127.0.0.1", port: app.port },
    });
    try {
      await client.connected();
      await until("a's lease", async () => (await b.registry.locate(id, true)) !== undefined);
      const fp = fingerprint(id);

      // From b, which holds nothing: the client is a's.
      const v = await admin<ClusterView>(b, "/cluster");
      assertEquals(v.instance, "b");
      assertEquals(
        v.instances.map((i) => [i.name, i.self, i.clients]),
        [["a", false, 1], ["b", true, 0]],
      );
      assertEquals(v.clients.map((c) => [c.fingerprint, c.instance, c.hosts]), [
        [fp, "a", ["app.test"]],
      ]);
      assertEquals(hostOf(v.hosts, "app.test").instance, "a");
      assertEquals(hostOf(v.hosts, "app.test").connected, true);
      assertEquals(hostOf(v.hosts, "idle.test").connected, false);
      assertEquals(hostOf(v.hosts, "idle.test").instance, undefined);
      assertEquals((await admin<ClientInfo[]>(b, "/clients")).map((c) => c.instance), ["a"]);
      assertEquals(hostOf(await admin<HostStatus[]>(b, "/hosts"), "app.test").instance, "a");

      // From a, which holds it: its own live record (with RTT once measured), named "a".
      const va = await clusterView(a.tunnel.server);
      assertEquals(va.clients.length, 1);
      assertEquals(va.clients[0].instance, "a");
      assertEquals(va.clients[0].remote, a.tunnel.server.clients()[0].remote);

      // b's status page: an instances table, and the holder in the host and client tables.
      const snap = await tunnelStatusProvider(() => clusterView(b.tunnel.server))();
      const table = (t: string) => snap.tables!.find((x) => x.title === t)!;
      assertEquals(table("instances").rows.map((r) => [r[0], r[3], r[4]]), [
        ["a", 1, false],
        ["b", 0, true],
      ]);
      const hosts = table("hosts");
      const row = hosts.rows.find((r) => r[0] === "app.test")!;
      assertEquals(row[hosts.columns.indexOf("instance")], "a");
      const clients = table("clients");
      assertEquals(clients.rows[0][clients.columns.indexOf("instance")], "a");

      // Redis down: a shows its own client and the reason the rest is missing.
      await redis.down();
      const down = await clusterView(a.tunnel.server);
      assert(down.registryError !== undefined, "the registry error is shown");
      assertEquals(down.clients.map((c) => c.instance), ["a"]);
      await redis.up();
      // Back to normal before the end (no reconnect attempt left pending at close).
      for (const m of [a, b]) {
        await until(`${m.name} reconnected`, async () =>
          m.registry.cacheActive &&
          (await clusterView(m.tunnel.server)).registryError === undefined);
      }
    } finally {
      await client.stop();
    }
  } finally {
    for (const m of members.reverse()) await m.close();
    await app.close();
    await redis.stop();
  }
});
