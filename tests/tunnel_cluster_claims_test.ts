/**
 * Subdomain claims in a cluster (issue 19), with a real redis-server and tunnel-server and
 * tunnel-client processes: an instance restarted while Redis still holds its claim restores it
 * from its state file and releases it after its grace period (before, the restore failed on
 * the host Redis held, and the name was never released), and a claim follows its client to
 * another instance: the owner gets its name there, the instance it left does not release it
 * after its grace, and the new one releases it after the client left; a claim whose instance
 * was killed while its client was connected (no state file anywhere) is released by another
 * instance a grace after the client's lease ran out.
 */

import { assert, assertEquals } from "./_assert.ts";
import { portOf, type ServiceProcess, startService, until } from "./_util.ts";
import { curl, startApp, startClusterMember } from "./_tunnel.ts";
import { startRedis } from "./_redis.ts";
import { RedisRegistry } from "../lib/tunnel/mod.ts";

const linkToken = "claims-link-token-0001";
const account = "claims-cluster-account-0001";
const host = "app.t.localhost";

/** A cluster member serving claims under t.localhost with a 2 s grace. */
async function claimsMember(redisUrl: string, extra: string[] = []) {
  const p = await startClusterMember(redisUrl, linkToken, [
    ...["--domain", "t.localhost", "--account-token", "env:ACCOUNT"],
    ...["--subdomain-grace", "2s", ...extra],
  ], { env: { ACCOUNT: account } });
  return { p, port: portOf(p.addrs.get("http")!) };
}

/** A tunnel-client claiming `app` with the account token through the instance at `port`. */
async function claimant(port: number, appPort: number): Promise<ServiceProcess> {
  const p = await startService("tunnel-client.ts", [
    ...["--server", `http://127.0.0.1:${port}`, "--local", `127.0.0.1:${appPort}`],
    ...["--subdomain", "app", "--backoff-max", "300"],
  ], { readyCount: 0, ready: /./, env: { TUNNEL_IDENTIFIER: account } });
  await p.waitFor(/msg="forwarding" url=http:\/\/app\.t\.localhost:/);
  return p;
}

Deno.test("tunnel cluster claims: restored on restart while redis holds them, released after the grace; they follow the client to another instance", async () => {
  const redis = await startRedis();
  const app = startApp("a");
  const dir = await Deno.makeTempDir();
  const stateFile = `${dir}/state.json`;
  const procs: ServiceProcess[] = [];
  const watcher = await RedisRegistry.connect({ url: redis.url, instance: "watcher" });
  try {
    const instance = async (extra: string[] = []) => {
      const m = await claimsMember(redis.url, extra);
      procs.push(m.p);
      return m;
    };
    const client = async (port: number) => {
      const p = await claimant(port, app.port);
      procs.push(p);
      return p;
    };
    const inRedis = async () => (await watcher.lookup(host)) !== undefined;

    // The client claims the name on A; A stops (its clients did not leave: their grace starts
    // when it is back), the client too. Redis keeps the host.
    let a = await instance(["--state-file", stateFile]);
    const c1 = await client(a.port);
    assertEquals((await curl(a.port, host, "/name?id=1")).body, "a 1");
    await a.p.stop();
    await c1.stop();
    assert(await inRedis(), "redis holds the claimed host");

    // A comes back: it restores the claim Redis still holds, and releases it after the grace
    // (from its start: the client never came back).
    a = await instance(["--state-file", stateFile]);
    await a.p.waitFor(/msg="state loaded".* claims=1/);
    await until("the claim released", async () => !(await inRedis()));
    await a.p.waitFor(/msg="subdomain released" host=app\.t\.localhost/);

    // Claimed again on A, the client reconnects to B before its session on A ended: B gives it
    // its name; A, once that session ended, does not release it past the grace.
    const b = await instance();
    const c2 = await client(a.port);
    const c3 = await client(b.port);
    await b.p.waitFor(/msg="subdomain claim kept here" host=app\.t\.localhost/);
    assertEquals((await curl(b.port, host, "/name?id=2")).body, "a 2");
    await c2.stop();
    await a.p.waitFor(/msg="client disconnected"/);
    await a.p.waitFor(/msg="subdomain claim left to the instance holding its client"/);
    assert(await inRedis(), "A released a name its client holds on B");
    assertEquals((await curl(a.port, host, "/name?id=3")).body, "a 3");

    // The client leaves B: B releases the name after the grace.
    await c3.stop();
    await until("the claim released by B", async () => !(await inRedis()));
    await b.p.waitFor(/msg="subdomain released" host=app\.t\.localhost/);
    for (const p of procs) assert(!p.lines.some((l) => l.includes(account)), "token logged");
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await watcher.close();
    await app.close();
    await redis.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tunnel cluster claims: a claim whose instance was killed is released by another after the grace", async () => {
  const redis = await startRedis();
  const app = startApp("a");
  const procs: ServiceProcess[] = [];
  const watcher = await RedisRegistry.connect({ url: redis.url, instance: "watcher" });
  try {
    const a = await claimsMember(redis.url);
    procs.push(a.p);
    const b = await claimsMember(redis.url);
    procs.push(b.p);
    const c = await claimant(a.port, app.port);
    procs.push(c);
    assertEquals((await curl(b.port, host, "/name?id=1")).body, "a 1");
    // A dies with the client connected, and the client does not come back.
    await a.p.stop("SIGKILL");
    await c.stop();
    await until(
      "the orphaned claim released",
      async () => (await watcher.lookup(host)) === undefined,
    );
    await b.p.waitFor(/msg="subdomain released" host=app\.t\.localhost/);
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await watcher.close();
    await app.close();
    await redis.stop();
  }
});
