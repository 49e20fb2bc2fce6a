/**
 * A cluster's host rules (issue 19) with a real redis-server, two tunnel-server processes and
 * curl: a header rewrite or access rule set through one instance's admin API applies to
 * requests reaching the other (the app echoes the headers it got), DELETE on either clears it
 * everywhere, a `--host-rewrite` given to one instance is the cluster's, admin GET on either
 * shows the cluster's rules, Redis keeps the credentials only as digests, and a Redis
 * restarted empty gets the rules back.
 */

import { assert, assertEquals } from "./_assert.ts";
import { portOf, type ServiceProcess, until } from "./_util.ts";
import { curl, startApp, startClientProcess, startClusterMember } from "./_tunnel.ts";
import { startRedis } from "./_redis.ts";
import { type HostRewriteInfo, type HostStatus, RedisRegistry } from "../lib/tunnel/mod.ts";

const id = "rules-identifier-0001";
const linkToken = "rules-link-token-0001";
const adminToken = "rules-admin-token-0001";
const bearer = "rules-bearer-secret-0001";
const password = "rules-basic-password-0001";

Deno.test("tunnel cluster rules: rewrites and access rules set on one instance apply on the other; DELETE too; no clear secret in redis", async () => {
  const redis = await startRedis();
  const app = startApp("app");
  const procs: ServiceProcess[] = [];
  const watcher = await RedisRegistry.connect({ url: redis.url, instance: "watcher" });
  try {
    const instance = async (extra: string[]) => {
      const p = await startClusterMember(
        redis.url,
        linkToken,
        ["--host", `app.test=${id}`, "--admin", "127.0.0.1:0", ...extra],
        { readyCount: 3, env: { TUNNEL_ADMIN_TOKEN: adminToken } },
      );
      procs.push(p);
      return {
        p,
        port: portOf(p.addrs.get("http")!),
        /** One admin request: its status and its JSON body (null when none). */
        admin: async <T = unknown>(method: string, path: string, body?: unknown) => {
          const res = await fetch(`http://${p.addrs.get("admin")}${path}`, {
            method,
            headers: { authorization: `Bearer ${adminToken}` },
            body: body === undefined ? undefined : JSON.stringify(body),
          });
          const text = await res.text();
          return { status: res.status, json: (text ? JSON.parse(text) : null) as T };
        },
      };
    };
    // A flag given to A only: the cluster's rule (README), so B applies it too.
    const a = await instance(["--host-rewrite", "app.test=req-set:X-Flag:from-a"]);
    const b = await instance([]);
    procs.push(await startClientProcess(`127.0.0.1:${a.port}`, app.port, id));
    const seen = async (port: number, extra: string[] = []) => {
      const r = await curl(port, "app.test", "/headers", extra);
      return r.status === 200
        ? (JSON.parse(r.body) as { headers: Record<string, string> }).headers
        : {};
    };
    await until("the flag's rewrite on B", async () => (await seen(b.port))["x-flag"] === "from-a");

    // A rewrite PUT on A reaches the app through B (B parses the request and rewrites it).
    const w = await a.admin<HostRewriteInfo>("PUT", "/hosts/app.test/rewrite", {
      request: { set: { "X-Rule": "set-on-a" } },
    });
    assertEquals(w.status, 200);
    assertEquals(w.json.request.set, ["X-Rule"]);
    await until("A's rewrite on B", async () => (await seen(b.port))["x-rule"] === "set-on-a");
    assertEquals((await seen(b.port))["x-flag"], undefined, "replaced the flag's rules");
    const hostOf = async (i: typeof a) =>
      (await i.admin<HostStatus[]>("GET", "/hosts")).json
        .find((h) => h.host === "app.test")!;
    assertEquals((await hostOf(b)).rewrite?.request.set, ["X-Rule"]);

    // Access rules PUT on B: refused and admitted on A, which holds the client.
    const r = await b.admin("PUT", "/hosts/app.test/access", {
      bearer: [bearer],
      basic: [`user:${password}`],
    });
    assertEquals(r.status, 200);
    assertEquals(r.json, { basic: 1, bearer: 1, allow: [] });
    await until(
      "B's access rules on A",
      async () => (await curl(a.port, "app.test", "/name?id=1")).status === 401,
    );
    assertEquals(
      (await curl(a.port, "app.test", "/name?id=2", ["-H", `Authorization: Bearer ${bearer}`]))
        .body,
      "app 2",
    );
    assertEquals(
      (await curl(a.port, "app.test", "/name?id=3", ["-u", `user:${password}`])).body,
      "app 3",
    );
    const wrong = await curl(a.port, "app.test", "/name?id=4", ["-u", "user:wrong-password"]);
    assertEquals(wrong.status, 401);
    assertEquals(
      (await curl(b.port, "app.test", "/name?id=5", ["-H", "Authorization: Bearer nope-nope"]))
        .status,
      401,
    );
    assertEquals((await hostOf(a)).access, { basic: 1, bearer: 1, allow: [] });

    // Redis holds the rules with the credentials as digests only.
    const stored = JSON.stringify(await watcher.redis.hGetAll(watcher.key("rules")));
    assert(stored.includes("X-Rule") && stored.includes("a:app.test"), stored);
    for (const secret of [bearer, password, btoa(`user:${password}`)]) {
      assert(!stored.includes(secret), `a secret in redis: ${stored}`);
      for (const p of procs) assert(!p.lines.some((l) => l.includes(secret)), "secret logged");
    }

    // Redis restarted empty: the instances write their copy back; the rules stay in force.
    await redis.down();
    await redis.up();
    await until("the rules are back in redis", async () => {
      const all = await watcher.redis.hGetAll(watcher.key("rules")).catch(() => ({}));
      return "a:app.test" in all && "w:app.test" in all;
    });
    assertEquals((await curl(b.port, "app.test", "/name?id=6")).status, 401);
    // Both instances back on Redis (their records written back), not only the one that wrote
    // the rules back: A's reconnect may still wait out its backoff, and its admin change would
    // then be refused 503 (failed once so, at load 15).
    await until(
      "both instances' records back in redis",
      async () => (await watcher.instances().catch(() => [])).length === 3,
    );

    // DELETE on the other instance clears them everywhere.
    assertEquals((await a.admin("DELETE", "/hosts/app.test/access")).status, 204);
    await until(
      "access cleared on B",
      async () => (await curl(b.port, "app.test", "/name?id=7")).body === "app 7",
    );
    assertEquals((await b.admin("DELETE", "/hosts/app.test/rewrite")).status, 204);
    await until("rewrite cleared on A", async () => (await seen(a.port))["x-rule"] === undefined);
    assertEquals((await a.admin("DELETE", "/hosts/app.test/rewrite")).status, 404);
    assertEquals((await hostOf(a)).rewrite, undefined);
    assertEquals((await hostOf(b)).access, undefined);
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await watcher.close();
    await app.close();
    await redis.stop();
  }
});
