/**
 * fusion-client built from its validated config: the local listener whose connections each
 * travel over every path, per-path metrics and the status page.
 * services/fusion-client.ts runs it as a process; the demo in-process.
 * @module
 */

import type { Logger } from "../../lib/log.ts";
import { formatAddr, serve, type Server } from "../../lib/net/mod.ts";
import { FusionClient, livePathMetrics } from "../../lib/fusion/mod.ts";
import type { ObservabilityServer } from "../../lib/status/serve.ts";
import { fusionStatusProvider } from "../../lib/status/fusion.ts";
import type { ServiceFlags } from "../_kit.ts";
import type { command, FusionClientServiceConfig } from "../config/fusion-client.ts";
import { type Bind, listenAt, observeAt } from "./bind.ts";

/** A running fusion-client. */
export interface FusionClientService {
  client: FusionClient;
  server: Server;
  metrics?: ObservabilityServer;
  stop(drainMs: number): Promise<void>;
}

/** Start fusion-client; its listeners are bound through `bind`. */
export async function constructFusionClient(
  flags: ServiceFlags<typeof command.flags>,
  cfg: FusionClientServiceConfig,
  log: Logger,
  bind: Bind,
): Promise<FusionClientService> {
  const client = new FusionClient({
    transport: flags.transport,
    paths: cfg.paths,
    token: cfg.token,
    tls: cfg.tls,
    proxy: cfg.proxy,
    ...cfg.session,
    log,
  });
  const listener = await listenAt(bind, "listen", flags.listen);
  const server = serve(listener, client.handle, {
    maxConns: flags["max-conns"],
    name: "listen",
    log,
    handshakeTimeoutMs: 0,
  });
  log.info("listening", { name: "listen", addr: formatAddr(listener.addr) });
  log.info("paths", {
    count: cfg.paths.length,
    scheduler: cfg.session.scheduler,
    tls: cfg.tls ? "on" : "off",
  });
  // Per-path rate, RTT and in-flight bytes of the live sessions, read at scrape time.
  const sessions = () => [...client.sessions].map((s) => s.status());
  if (flags.metrics) livePathMetrics(sessions);
  // The live status page: sessions, paths, each path's share of the traffic.
  const metrics = await observeAt(bind, "metrics", flags.metrics, {
    service: "fusion-client",
    log,
    auth: flags["status-auth"],
    status: () => ({ sessions: sessions(), recent: client.recent }),
    providers: [fusionStatusProvider(sessions)],
  });
  return {
    client,
    server,
    metrics,
    stop: async (drainMs) => {
      await server.stop(drainMs);
      await client.close();
      await metrics?.shutdown();
    },
  };
}
