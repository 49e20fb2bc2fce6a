/**
 * A FLUSHALL landing inside a heartbeat: after the beat found the instance's own record
 * (EXISTS 1) and before it wrote it again. The beat then wrote the record back as if nothing
 * was lost, so no later beat (nor a lookup's miss, which checks that record) saw the loss,
 * and the hosts added through the instance were gone from Redis for good. A proxy between the
 * registry and a real redis-server holds the registry's next command after that EXISTS until a
 * FLUSHALL has run, so the flush lands there every time; no clock.
 */

import { assert, assertEquals } from "./_assert.ts";
import { redisCommand, startRedis } from "./_redis.ts";
import { within } from "./_util.ts";
import { RedisRegistry } from "../lib/tunnel/mod.ts";

/** A TCP proxy to Redis that can run a FLUSHALL right after the beat's EXISTS of `marker`. */
function flushingProxy(redisPort: number, marker: string) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const tasks: Promise<void>[] = [];
  const state = {
    armed: false,
    /** EXISTS <marker> commands seen since the flush. */
    beatsAfter: 0,
    flushed: Promise.withResolvers<void>(),
    wake: () => {},
  };
  const text = new TextDecoder();
  const pump = async (from: Deno.Conn, to: Deno.Conn, watch: boolean) => {
    const buf = new Uint8Array(64 * 1024);
    let holdNext = false;
    try {
      for (let n = await from.read(buf); n !== null; n = await from.read(buf)) {
        const chunk = buf.subarray(0, n);
        if (watch && holdNext) {
          holdNext = false;
          // The beat's next command waits for the flush: EXISTS said 1, Redis is empty now.
          assertEquals(await redisCommand(redisPort, "FLUSHALL"), "+OK");
          state.flushed.resolve();
        }
        if (watch) {
          const s = text.decode(chunk);
          if (s.includes("EXISTS") && s.includes(marker)) {
            if (state.armed) {
              state.armed = false;
              holdNext = true;
            } else state.beatsAfter++;
            state.wake();
          }
        }
        let off = 0;
        while (off < n) off += await to.write(chunk.subarray(off));
      }
    } catch {
      // One side closed under the other: the proxy's connection ends with it.
    } finally {
      // Already closed (the other pump's end closed both): nothing to half-close.
      await to.closeWrite().catch(() => {});
    }
  };
  const accepting = (async () => {
    for await (const c of listener) {
      const up = await Deno.connect({ hostname: "127.0.0.1", port: redisPort });
      conns.add(c).add(up);
      tasks.push(pump(c, up, true), pump(up, c, false));
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    state,
    async close() {
      listener.close();
      await accepting.catch(() => {/* the listener's close ends the loop */});
      for (const c of conns) {
        try {
          c.close();
        } catch {
          // Closed by its pump already.
        }
      }
      await Promise.all(tasks);
    },
  };
}

Deno.test("redis registry: a FLUSHALL inside a heartbeat (after its EXISTS) still gets the instance's hosts written back", async () => {
  const redis = await startRedis();
  const proxy = flushingProxy(redis.port, "instance:a");
  const a = await RedisRegistry.connect({
    url: `redis://127.0.0.1:${proxy.port}`,
    instance: "a",
    leaseMs: 1_500,
  });
  try {
    await a.addHost("app.example.com", "id-a");
    proxy.state.armed = true;
    await within(proxy.state.flushed.promise, "a FLUSHALL inside a heartbeat of a");
    // Two beats started after the one the flush hit: the first of them has ended.
    proxy.state.beatsAfter = 0;
    await within(
      new Promise<void>((resolve) => {
        proxy.state.wake = () => {
          if (proxy.state.beatsAfter >= 2) resolve();
        };
        proxy.state.wake();
      }),
      "two more heartbeats of a after the flush",
    );
    const host = await redisCommand(redis.port, "HGET warren:tunnel:hosts app.example.com");
    assert(host !== "$-1", "a's host is not written back after the flush");
    assertEquals(await a.lookup("app.example.com"), "id-a");
  } finally {
    await a.close();
    await proxy.close();
    await redis.stop();
  }
});
