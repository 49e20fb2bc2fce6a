/**
 * The claim race fixed in 788f572, ordered by hooks (issue 19), in process on a real
 * redis-server: instance A's grace for a subdomain claim ends; its release looks for the
 * client (held nowhere) and is about to remove the name. Just then the client comes up on
 * instance B, which writes its lease and looks for the name (still there: nothing to claim
 * again). Only then does A remove it. One of the two must see the other: A looks again after
 * the removal, finds the client on B and gives the name back. In the other order (A removes
 * and looks again between B's admission and B's lease), B's look after its lease claims it
 * again. Before 788f572 the name was gone in both, and the client on B served nothing.
 */

import { assert, assertEquals } from "./_assert.ts";
import { Logger } from "../lib/log.ts";
import { claimIdentifier, SubdomainClaims } from "../lib/tunnel/mod.ts";
import { rawGet, startClient } from "./_tunnel.ts";
import { startRedis } from "./_redis.ts";
import { type Member, member } from "./_tunnel_cluster.ts";

const token = "account-token-race-0001";
const host = "race.t.localhost";

/** A logger whose lines land in `lines`; `waitFor` resolves at the first matching line. */
function capture() {
  const lines: string[] = [];
  let wake = () => {};
  const log = new Logger("info", {}, (l) => {
    lines.push(l);
    wake();
  });
  const waitFor = async (re: RegExp, what: string): Promise<string> => {
    const deadline = Date.now() + 15_000;
    for (;;) {
      const hit = lines.find((l) => re.test(l));
      if (hit) return hit;
      if (Date.now() > deadline) throw new Error(`${what}: no line ${re}\n${lines.join("\n")}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, 100);
        wake = () => (clearTimeout(t), r());
      });
    }
  };
  return { log, lines, waitFor };
}

/** One instance: a cluster member with claims under t.localhost, read through no cache. */
function instance(url: string, name: string, log: Logger): Promise<Member> {
  const subdomains = new SubdomainClaims({ domain: "t.localhost", tokens: [token], graceMs: 300 });
  return member(url, name, { cacheMs: 0, server: { log, subdomains } });
}

/**
 * The race in one of its two orders. A's release is held right before it removes the name.
 * "b-looks-first": B's client comes up (lease written, name looked for) before A removes it,
 * so A's second look must give it back. "a-looks-first": B admits the client (the name is
 * still there) and is held before its lease until A has removed the name and looked again
 * (no lease yet), so B's look after its lease must claim it again.
 */
async function race(order: "b-looks-first" | "a-looks-first"): Promise<void> {
  const redis = await startRedis();
  const app = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => new Response("race app"),
  );
  const la = capture();
  const lb = capture();
  const a = await instance(redis.url, "race-a", la.log);
  const closing: (() => Promise<void>)[] = [a.close];
  try {
    const atRemoval = Promise.withResolvers<void>();
    const goOn = Promise.withResolvers<void>();
    const secondLook = Promise.withResolvers<void>();
    let removed = false;
    const removeHost = a.tunnel.server.removeHost.bind(a.tunnel.server);
    a.tunnel.server.removeHost = async (h: string) => {
      atRemoval.resolve();
      await goOn.promise;
      const r = await removeHost(h);
      removed = true;
      return r;
    };
    const getClient = a.registry.getClient.bind(a.registry);
    a.registry.getClient = async (id: string) => {
      const r = await getClient(id);
      if (removed) secondLook.resolve();
      return r;
    };
    const local = { host: "127.0.0.1", port: app.addr.port };
    const first = startClient({
      server: a.tunnel.url,
      identifier: token,
      subdomain: "race",
      local,
    });
    await first.connected();
    await first.stop();
    // The grace (300 ms) ends; A has looked for the client (held nowhere) and is at the removal.
    await atRemoval.promise;

    const b = await instance(redis.url, "race-b", lb.log);
    closing.push(b.close);
    if (order === "a-looks-first") {
      // B admitted the client (the name still there) and is about to write its lease.
      const setClient = b.registry.setClient.bind(b.registry);
      b.registry.setClient = async (id, rec) => {
        if (rec !== undefined && !removed) {
          goOn.resolve();
          // Code without the second look never makes it: then B goes on after a bound (the
          // test fails on what B finds, not here).
          let timer: ReturnType<typeof setTimeout> | undefined;
          const bound = new Promise<void>((r) => timer = setTimeout(r, 5_000));
          await Promise.race([secondLook.promise, bound]);
          clearTimeout(timer);
        }
        return await setClient(id, rec);
      };
    }
    const moved = startClient({
      server: b.tunnel.url,
      identifier: token,
      subdomain: "race",
      local,
    });
    closing.push(moved.stop);
    await moved.connected();
    // B has written the lease and looked for the name after it (counted after that look).
    while (b.tunnel.server.clientEvents.connected < 1) {
      await new Promise((r) => setTimeout(r, 10));
    }
    if (order === "b-looks-first") {
      assert(!lb.lines.some((l) => /subdomain claimed again/.test(l)), lb.lines.join("\n"));
      // Now A removes the name; its second look finds the client on B and gives it back.
      goOn.resolve();
      await la.waitFor(/msg="subdomain released"/, "A releases the name");
      await la.waitFor(/msg="subdomain claimed again for its client"/, "A gives it back");
    } else {
      await la.waitFor(/msg="subdomain released"/, "A releases the name");
      await lb.waitFor(/msg="subdomain claimed again for its client"/, "B claims it again");
    }
    assertEquals(await b.registry.lookup(host), claimIdentifier(token, "race"));
    // A public request for the name through A reaches the client held by B.
    const res = await rawGet(a.tunnel.port, host, "/");
    assertEquals([res.status, res.body], [200, "race app"]);
  } finally {
    for (const c of closing.reverse()) await c();
    await app.shutdown();
    await redis.stop();
  }
}

Deno.test("tunnel cluster claims: a name released after its client came up on another instance is given back by the releasing one", async () => {
  await race("b-looks-first");
});

Deno.test("tunnel cluster claims: a name released while its client comes up on another instance is claimed again by that one", async () => {
  await race("a-looks-first");
});
