/**
 * depot-server as a cluster (issue 19), a frozen holder: instance A holds the exit, and its
 * link to instance B stops carrying anything while its TCP connection stays open (A stopped,
 * swapped out, or behind a network that drops). A SOCKS request reaching B for that exit must
 * get a failure reply within the links' keepalive (lib/cluster `linkKeepalive`: 3 heartbeats,
 * at least 5 s), not wait for lib/mux's default (no ping before 30 s, dead at 60 s). Once A
 * answers again, B serves the exit over a new link. In process: A's link port is reached
 * through a relay the test freezes; a real redis-server; every wait is bounded and names what
 * it waited for. The bound on B's reply (45 s) is far above the keepalive and below the old
 * code's earliest answer.
 */

import { writeAll } from "../lib/net/mod.ts";
import { DepotCluster } from "../lib/cluster/mod.ts";
import { assert, assertEquals } from "./_assert.ts";
import { socksDial, startDepot, startTarget } from "./_depot.ts";
import { startRedis } from "./_redis.ts";
import { freezableRelay } from "./_freeze.ts";
import { listenLocal, readAll, until, within } from "./_util.ts";

const auth = { username: "far", password: "x" };

/** Echo one message through B to the target (its "E" mode) and back. */
async function echoThrough(socksPort: number, target: number, text: string): Promise<string> {
  const c = await within(
    socksDial(socksPort, { host: "127.0.0.1", port: target }, auth),
    `SOCKS reply from b for ${text}`,
  );
  try {
    await writeAll(c, new TextEncoder().encode(`E${text}`));
    await c.closeWrite();
    return new TextDecoder().decode(await readAll(c));
  } finally {
    c.close();
  }
}

Deno.test("depot cluster: a SOCKS request for an exit held by a frozen instance fails within the link keepalive, and is served over a new link once it answers again", async () => {
  const redis = await startRedis();
  const target = startTarget();
  const a = await startDepot({ locals: [{ name: "far" }] });
  const b = await startDepot({ locals: [] });
  const linkPort = listenLocal();
  const relay = freezableRelay(linkPort.addr.port);
  const opts = { url: redis.url, token: "frozen-test-token-0001", heartbeatMs: 1_000 };
  const ca = await DepotCluster.connect(a.server, {
    ...opts,
    instance: "a",
    advertise: `127.0.0.1:${relay.port}`,
  });
  ca.listen(linkPort);
  const cb = await DepotCluster.connect(b.server, { ...opts, instance: "b", advertise: "h:2" });
  try {
    await until("b sees a holding the exit", () => cb.view().exitsElsewhere.length === 1);
    assertEquals(await echoThrough(b.socksPort, target.port, "first"), "first");

    relay.freeze();
    const refused = await within(
      socksDial(b.socksPort, { host: "127.0.0.1", port: target.port }, auth).then(
        (c) => (c.close(), undefined),
        (err: Error) => err,
      ),
      "b's SOCKS reply while a is frozen",
      45_000,
    );
    assert(refused instanceof Error, "b granted a request through a frozen instance");

    relay.thaw();
    assertEquals(await echoThrough(b.socksPort, target.port, "back"), "back");
  } finally {
    await cb.close();
    await ca.close();
    await relay.close();
    await a.close();
    await b.close();
    await target.close();
    await redis.stop();
  }
});
