/**
 * depot, fusion and a seaprox link each ride WebSocket through lib/transport: 8 MiB up, a
 * half-close, the target's answer and 8 MiB down, byte-exact by SHA-256. A peer on the other
 * carrier (plain TCP against a ws listener) does not get through.
 */

import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { socksDial, startDepot } from "./_depot.ts";
import { startHashThenSendTarget, uploadHalfCloseDownload } from "./_transport.ts";
import { listenLocal } from "./_util.ts";
import { closeQuietly, serve } from "../lib/net/mod.ts";
import { FusionClient, FusionServer, parsePathSpec } from "../lib/fusion/mod.ts";
import { LinkClient, serveLink } from "../lib/proxy/link.ts";
import { directDialer } from "../lib/proxy/dialer.ts";

const MiB = 1024 * 1024;
const opts = { sanitizeOps: true, sanitizeResources: true };

Deno.test({ name: "depot over WebSocket: 8 MiB each way with half-close", ...opts }, async () => {
  const target = startHashThenSendTarget(8 * MiB);
  const depot = await startDepot({
    server: { transport: "ws" },
    locals: [{ transport: "ws", mux: true }, { transport: "ws", mux: false, name: "plain" }],
  });
  try {
    for (const username of ["default", "plain"]) {
      const conn = await socksDial(depot.socksPort, { host: "127.0.0.1", port: target.addr.port }, {
        username,
      });
      try {
        await uploadHalfCloseDownload(conn, 8 * MiB, 8 * MiB);
      } finally {
        closeQuietly(conn);
      }
    }
  } finally {
    await depot.close();
    await target.stop(500);
  }
});

Deno.test(
  { name: "fusion over WebSocket: 2 ws paths carry 8 MiB each way with half-close", ...opts },
  async () => {
    const target = startHashThenSendTarget(8 * MiB);
    const token = "fusion-ws-token";
    const timers = { heartbeatIntervalMs: 100, silenceTimeoutMs: 2_000, lingerMs: 500 };
    const server = new FusionServer({
      token,
      target: { host: "127.0.0.1", port: target.addr.port },
      transport: "ws",
      ...timers,
    });
    const srv = serve(listenLocal(), server.handle);
    const port = srv.addr.port;
    // One path names its carrier in the spec, the other takes the client's default.
    const client = new FusionClient({
      token,
      paths: [parsePathSpec(`ws://127.0.0.1:${port}`), { host: "127.0.0.1", port }],
      transport: "ws",
      backoff: { initialMs: 50, maxMs: 300 },
      ...timers,
    });
    const cli = serve(listenLocal(), client.handle);
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: cli.addr.port });
      try {
        await uploadHalfCloseDownload(conn, 8 * MiB, 8 * MiB);
      } finally {
        closeQuietly(conn);
      }
    } finally {
      await cli.stop(1000);
      await client.close();
      await srv.stop(1000);
      await server.close();
      await target.stop(500);
    }
  },
);

Deno.test(
  {
    name: "seaprox link over WebSocket: 8 MiB each way with half-close; tcp peer refused",
    ...opts,
  },
  async () => {
    const target = startHashThenSendTarget(8 * MiB);
    const token = "link-ws-token";
    const b = serveLink(listenLocal(), {
      token,
      dialer: directDialer({ prefer: "ipv4" }),
      transport: "ws",
    });
    const addr = { host: "127.0.0.1", port: b.addr.port };
    // Generous: the link coming up is waited for, never timed (the tcp one below must fail).
    const a = new LinkClient({ addr, token, transport: "ws", waitMs: 30_000 });
    const tcp = new LinkClient({ addr, token, waitMs: 500, backoff: { initialMs: 50 } });
    try {
      const dest = { host: "127.0.0.1", port: target.addr.port };
      const conn = await a.dial(dest, AbortSignal.timeout(60_000));
      try {
        await uploadHalfCloseDownload(conn, 8 * MiB, 8 * MiB);
      } finally {
        closeQuietly(conn);
      }
      // A plain-TCP hello is not a WebSocket upgrade: the ws listener answers 400.
      const err = await assertRejects(() => tcp.dial(dest, AbortSignal.timeout(5000)));
      assert(err.message.length > 0);
      assertEquals(target.stats.total, 1, "only the ws link reached the target");
    } finally {
      await tcp.close();
      await a.close();
      await b.stop(500);
      await target.stop(500);
    }
  },
);
