/**
 * depot-server as a cluster (issue 19) after Redis lost its records (FLUSHALL, or a restart
 * without persistence: both tested): a SOCKS client of instance B still reaches an exit
 * instance A holds.
 * Before, B's first heartbeat after the loss read an empty list of the exits held elsewhere
 * and refused every request for A's exit until A's next beat wrote its lease back (and B's
 * next beat read it). Now B, finding its own instance lease gone, keeps the exits it read
 * before the loss for a settle window. A beats every 200 s here, so A never writes back
 * during the test; B beats every 2 s (and does not nudge A). With the nudge (the default),
 * B's beat that finds the loss tells A over its link, and A writes its leases back at once
 * rather than at its next beat (before, 200 s away). A real redis-server; every wait is
 * bounded. A FLUSHALL inside B's beat (after it wrote its own lease, before it read the
 * exits: a proxy holds that read until the flush ran) is caught by the same beat (its own
 * lease missing from its read) and keeps A's exit as well.
 */

import { DepotCluster, PeerLinks } from "../lib/cluster/mod.ts";
import { encodeFrame } from "../lib/control/mod.ts";
import { assertEquals } from "./_assert.ts";
import { socksDial, startDepot, startTarget } from "./_depot.ts";
import { flushingProxy, redisCommand, startRedis, watchCommands } from "./_redis.ts";
import { until, within } from "./_util.ts";

/**
 * Instance a (holding exit "far", beating every 200 s so it never writes back on its own during
 * a test, listening for links) and instance b (beating every 2 s, reaching Redis at `bUrl`).
 */
async function twoInstances(
  redisUrl: string,
  token: string,
  b: { url?: string; nudgeOnLoss?: boolean } = {},
) {
  const depotA = await startDepot({ locals: [{ name: "far" }] });
  const depotB = await startDepot({ locals: [] });
  const linkPort = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const ca = await DepotCluster.connect(depotA.server, {
    url: redisUrl,
    token,
    heartbeatMs: 200_000,
    instance: "a",
    advertise: `127.0.0.1:${linkPort.addr.port}`,
  });
  ca.listen(linkPort);
  const cb = await DepotCluster.connect(depotB.server, {
    url: b.url ?? redisUrl,
    token,
    heartbeatMs: 2_000,
    instance: "b",
    advertise: "h:2",
    ...(b.nudgeOnLoss === undefined ? {} : { nudgeOnLoss: b.nudgeOnLoss }),
  });
  return {
    b: depotB,
    cb,
    async close(): Promise<void> {
      await cb.close();
      await ca.close();
      await depotA.close();
      await depotB.close();
    },
  };
}

/** Echo `what` through b's SOCKS port to exit "far" (held by a) and the target. */
async function echoThroughB(socksPort: number, targetPort: number, what: string): Promise<void> {
  const c = await within(
    socksDial(socksPort, { host: "127.0.0.1", port: targetPort }, {
      username: "far",
      password: "x",
    }),
    `the SOCKS reply through b (${what})`,
  );
  try {
    await c.write(new TextEncoder().encode(`E${what}`));
    await c.closeWrite();
    const buf = new Uint8Array(what.length);
    let got = 0;
    while (got < buf.length) {
      const n = await within(c.read(buf.subarray(got)), `the echo of ${what}`);
      if (n === null) break;
      got += n;
    }
    assertEquals(new TextDecoder().decode(buf.subarray(0, got)), what);
  } finally {
    c.close();
  }
}

for (const loss of ["FLUSHALL", "restart"] as const) {
  Deno.test(`depot cluster: after a ${loss} a SOCKS client of another instance still reaches the exit`, async () => {
    const redis = await startRedis();
    const target = startTarget();
    // Not nudging a to write back at once: the test is of b's settle window.
    const { b, cb, close } = await twoInstances(redis.url, "flush-test-token-0001", {
      nudgeOnLoss: false,
    });
    let watch = await watchCommands(redis.port);
    const echo = (what: string) => echoThroughB(b.socksPort, target.port, what);
    try {
      await until("b sees a holding the exit", () => cb.view().exitsElsewhere.length === 1);
      await echo("before");
      if (loss === "FLUSHALL") {
        assertEquals(await redisCommand(redis.port, "FLUSHALL"), "+OK");
      } else {
        // Killed and started again, empty: b's connections drop and reconnect.
        await watch.close();
        await redis.down();
        await redis.up();
        watch = await watchCommands(redis.port);
      }
      // Two writes of b's instance lease after the loss: b's first beat after it is over.
      const bKey = "warren:depot:instance:b";
      await watch.until(`b's second beat after the ${loss}`, (seen) => {
        const at = loss === "FLUSHALL"
          ? seen.findIndex((c) => c.args[0]?.toUpperCase() === "FLUSHALL")
          : 0;
        return at >= 0 &&
          seen.slice(at).filter((c) => c.args[0]?.toUpperCase() === "SET" && c.args[1] === bKey)
              .length >= 2;
      });
      // a has not written its lease back (its next beat is 200 s away).
      assertEquals(await redisCommand(redis.port, "EXISTS warren:depot:exit:far"), ":0");
      await echo("after");
    } finally {
      await watch.close();
      await close();
      await target.close();
      await redis.stop();
    }
  });
}

Deno.test("depot cluster: an instance that finds Redis lost its records nudges the others, which write back at once", async () => {
  const redis = await startRedis();
  // a beats every 200 s: only a nudge makes it write back during the test.
  const { cb, close } = await twoInstances(redis.url, "nudge-test-token-0001");
  try {
    await until("b sees a holding the exit", () => cb.view().exitsElsewhere.length === 1);
    assertEquals(await redisCommand(redis.port, "FLUSHALL"), "+OK");
    await until(
      "a's lease of exit far written back after b's nudge",
      async () => await redisCommand(redis.port, "EXISTS warren:depot:exit:far") === ":1",
    );
    assertEquals(await redisCommand(redis.port, "EXISTS warren:depot:instance:a"), ":1");
  } finally {
    await close();
    await redis.stop();
  }
});

Deno.test("depot cluster: a FLUSHALL inside b's heartbeat (after its own lease was written) still leaves a's exit reachable through b", async () => {
  const redis = await startRedis();
  const target = startTarget();
  // b's beat starts with the EVAL writing its own lease; the flush lands right after it.
  const proxy = flushingProxy(
    redis.port,
    (s) => s.includes("EVAL") && s.includes("depot:instance:b"),
  );
  const { b, cb, close } = await twoInstances(redis.url, "mid-beat-test-token-01", {
    url: `redis://127.0.0.1:${proxy.port}`,
    nudgeOnLoss: false,
  });
  try {
    await until("b sees a holding the exit", () => cb.view().exitsElsewhere.length === 1);
    await proxy.flushInsideBeat("b");
    // a has not written its lease back (its next beat is 200 s away, and it was not nudged).
    assertEquals(await redisCommand(redis.port, "EXISTS warren:depot:exit:far"), ":0");
    await echoThroughB(b.socksPort, target.port, "mid");
  } finally {
    await close();
    await proxy.close();
    await target.close();
    await redis.stop();
  }
});

Deno.test("depot cluster: a FLUSHALL inside the beat that writes back after a loss (after the exit's lease went back) is caught: the leases come back", async () => {
  const redis = await startRedis();
  // The write-back beat refreshes exit far's lease (written back) after its own: the second
  // flush lands right after that, before the beat reads the instances.
  const proxy = flushingProxy(
    redis.port,
    (s) => s.includes("EVAL") && s.includes("depot:instance:a"),
    (s) => s.includes("EVAL") && s.includes("depot:exit:far"),
  );
  const token = "recovery-flush-token-001";
  const depotA = await startDepot({ locals: [{ name: "far" }] });
  const linkPort = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  // Beats every 200 s: only the nudge below (and what it finds) starts one.
  const ca = await DepotCluster.connect(depotA.server, {
    url: `redis://127.0.0.1:${proxy.port}`,
    token,
    heartbeatMs: 200_000,
    instance: "a",
    advertise: `127.0.0.1:${linkPort.addr.port}`,
  });
  ca.listen(linkPort);
  const peer = new PeerLinks({ token, from: "peer", onStream: (s) => s.reset() });
  const exists = (key: string) => redisCommand(redis.port, `EXISTS warren:depot:${key}`);
  try {
    await until("a's lease of exit far", async () => await exists("exit:far") === ":1");
    await proxy.flushInsideBeat("a", {
      // The first loss, then a peer's nudge: a beats at once and finds its lease gone.
      first: async () => {
        assertEquals(await redisCommand(redis.port, "FLUSHALL"), "+OK");
        const link = await peer.link(`127.0.0.1:${linkPort.addr.port}`);
        const s = await link.open({ data: encodeFrame({ lost: 1 }) });
        await s.closeWrite();
        await within(s.read(new Uint8Array(16)), "a's end of the nudge stream");
        s.close();
      },
      // The beat that finds its own lease missing from its read runs another at once.
      beats: 1,
    });
    await until(
      "exit far's lease written back again",
      async () => await exists("exit:far") === ":1",
    );
    assertEquals(await exists("instance:a"), ":1");
  } finally {
    await peer.close();
    await ca.close();
    await depotA.close();
    await proxy.close();
    await redis.stop();
  }
});
