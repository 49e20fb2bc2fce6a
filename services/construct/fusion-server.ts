/**
 * fusion-server built from its validated config: the path listener, the sessions, per-path
 * metrics and the status page. services/fusion-server.ts runs it as a process; the demo
 * in-process.
 * @module
 */

import type { Logger } from "../../lib/log.ts";
import { listenLink } from "../../lib/cli_security.ts";
import {
  AuthFailureLimiter,
  formatAddr,
  joinHostPort,
  serve,
  type Server,
} from "../../lib/net/mod.ts";
import { FusionServer, livePathMetrics } from "../../lib/fusion/mod.ts";
import type { ObservabilityServer } from "../../lib/status/serve.ts";
import { fusionStatusProvider } from "../../lib/status/fusion.ts";
import { listenersStatusProvider } from "../../lib/status/json.ts";
import type { ServiceFlags } from "../_kit.ts";
import type { command, FusionServerServiceConfig } from "../config/fusion-server.ts";
import { type Bind, observeAt } from "./bind.ts";

/** A running fusion-server. */
export interface FusionServerService {
  fusion: FusionServer;
  server: Server;
  metrics?: ObservabilityServer;
  stop(drainMs: number): Promise<void>;
}

/** Start fusion-server; its listeners are bound through `bind`. */
export async function constructFusionServer(
  flags: ServiceFlags<typeof command.flags>,
  cfg: FusionServerServiceConfig,
  log: Logger,
  bind: Bind,
): Promise<FusionServerService> {
  const fusion = new FusionServer({
    transport: flags.transport,
    token: cfg.token,
    target: flags.target,
    ...cfg.session,
    maxSessions: flags["max-sessions"],
    maxPathsPerSession: flags["max-paths"],
    authLimiter: new AuthFailureLimiter(),
    log,
  });
  const listener = await bind(
    "listen",
    flags.listen,
    () => listenLink(flags.listen, cfg.tls, "listen", log),
  );
  const server = serve(listener, fusion.handle, {
    maxConns: flags["max-sessions"] * flags["max-paths"],
    name: "listen",
    log,
    handshakeTimeoutMs: 10_000,
  });
  log.info("listening", { name: "listen", addr: formatAddr(listener.addr) });
  log.info("path security", {
    tls: cfg.tls
      ? (cfg.tls.ca ? "mutual" : "server")
      : "off (plaintext: keep it on loopback or a trusted network)",
  });
  log.info("target", {
    addr: joinHostPort(flags.target.host, flags.target.port),
    scheduler: cfg.session.scheduler,
  });
  // Per-path rate, RTT and in-flight bytes of the live sessions, read at scrape time.
  const sessions = () => [...fusion.sessions.values()].map((s) => s.status());
  if (flags.metrics) livePathMetrics(sessions);
  // The live status page: listeners, sessions, paths, each path's share of the traffic.
  const metrics = await observeAt(bind, "metrics", flags.metrics, {
    service: "fusion-server",
    log,
    auth: flags["status-auth"],
    status: () => ({ sessions: sessions(), recent: fusion.recent }),
    providers: [listenersStatusProvider(), fusionStatusProvider(sessions)],
  });
  return {
    fusion,
    server,
    metrics,
    stop: async (drainMs) => {
      await server.stop(drainMs);
      await fusion.close();
      await metrics?.shutdown();
    },
  };
}
