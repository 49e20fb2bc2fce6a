/**
 * ClusterHostRules against a real redis-server, in process: a rule set through one instance is
 * in the other's copy and checks credentials there; a change whose notice was lost (written
 * without one) reaches the copy by the heartbeat's count check; a rule Redis holds in a shape
 * it cannot use is skipped with a warning; an instance digesting under another cluster token
 * says so and never admits those credentials; with Redis down a change is refused (the admin
 * API answers 503) and the copy keeps serving.
 */

import { assert, assertEquals } from "./_assert.ts";
import { startRedis } from "./_redis.ts";
import { until } from "./_util.ts";
import { Logger } from "../lib/log.ts";
import {
  ClusterHostRules,
  createAdminApp,
  type HostRules,
  RedisRegistry,
  TunnelServer,
} from "../lib/tunnel/mod.ts";

const key = "host-rules-cluster-token-0001";
const bearer = "host-rules-bearer-0001";

Deno.test("host rules: shared through redis, a lost notice caught by the heartbeat, a bad record skipped, another token told", async () => {
  const redis = await startRedis();
  const lines: string[] = [];
  const log = new Logger("info", {}, (line) => lines.push(line));
  const open: { rules: HostRules; reg: RedisRegistry }[] = [];
  const instance = async (name: string, k: string) => {
    // A short lease: heartbeats (and with them the count check) every 100 ms.
    const reg = await RedisRegistry.connect({ url: redis.url, instance: name, leaseMs: 300 });
    const rules = await ClusterHostRules.start(reg, { key: k, log: log.child({ name }) });
    open.push({ rules, reg });
    return { reg, rules };
  };
  try {
    const a = await instance("a", key);
    const b = await instance("b", key);
    await a.rules.setAccess("app.test", { bearer: [bearer] }, "admin");
    await until("a's rule in b's copy", () => b.rules.access.has("app.test"));
    const rule = b.rules.access.get("app.test")!.rule;
    assertEquals(rule.check(`Bearer ${bearer}`, "127.0.0.1"), undefined);
    assertEquals(rule.check("Bearer not-the-token", "127.0.0.1")?.reason, "wrong-credentials");
    assertEquals(b.rules.access.get("app.test")!.origin, "admin");

    // Written without a notice (as if the subscriber had been away): the count check finds it.
    const hash = a.reg.key("rules");
    await a.reg.redis.eval(
      `redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
       redis.call('HSET', KEYS[1], 'w:bad.test', '{"request": {"set": {"Host": "x"}}}')
       return redis.call('HINCRBY', KEYS[1], 'v', 1)`,
      {
        keys: [hash],
        arguments: ["w:app.test", JSON.stringify({ host: "inner", origin: "flag" })],
      },
    );
    await until("the silent change in b's copy", () => b.rules.rewrites.has("app.test"));
    assertEquals(b.rules.rewrites.get("app.test")!.rule.info().host, "inner");
    assert(!b.rules.rewrites.has("bad.test"), "a rule it cannot use");
    assert(lines.some((l) => /host rule in redis skipped.*field=w:bad\.test/.test(l)), "warned");

    // Another cluster token: said once, and the credentials stored under the first never match.
    const c = await instance("c", "another-cluster-token-0001");
    assert(lines.some((l) => /level=error .*stored under another cluster token/.test(l)));
    const other = c.rules.access.get("app.test")!.rule;
    assertEquals(other.check(`Bearer ${bearer}`, "127.0.0.1")?.status, 401);

    // Redis down: the admin API refuses a change with 503, the copy keeps its rules.
    const server = new TunnelServer({ registry: a.reg, rules: a.rules });
    try {
      await server.addHost("app.test", "host-rules-identifier-0001");
      const admin = createAdminApp(server, { token: "host-rules-admin-0001" });
      await redis.down();
      const res = await admin.fetch(
        new Request("http://admin/hosts/app.test/access", {
          method: "PUT",
          headers: { authorization: "Bearer host-rules-admin-0001" },
          body: JSON.stringify({ bearer: ["host-rules-other-0001"] }),
        }),
      );
      assertEquals(res.status, 503);
      assertEquals((await res.json()).reason, "registry-unavailable");
      assertEquals(
        server.checkAccess({ host: "app.test" }, `Bearer ${bearer}`, "10.0.0.1"),
        undefined,
      );
      assertEquals(server.accessInfo("app.test"), { basic: 0, bearer: 1, allow: [] });
      await redis.up();
      // Every connection back before they are closed (a reconnect timer would outlive the test).
      for (const { reg } of open) {
        await until(
          `${reg.instance} reconnected`,
          async () => reg.cacheActive && await reg.instances().then(() => true, () => false),
        );
      }
    } finally {
      await server.close();
    }
    for (const l of lines) assert(!l.includes(bearer), "secret logged");
  } finally {
    for (const { rules, reg } of open.reverse()) {
      await rules.close();
      await reg.close();
    }
    await redis.stop();
  }
});
