/**
 * fusion-server: joins the paths fusion-clients open into sessions (seed 000) and relays
 * each session to one connection to the target, by default the local sshd.
 *
 *   FUSION_TOKEN=s3cret deno run -A services/fusion-server.ts --listen 0.0.0.0:5022
 */

import { bindOrExit, listenLinkOrExit, onShutdown, startService } from "./_kit.ts";
import { command, validate } from "./config/fusion-server.ts";
import { FusionServer, livePathMetrics } from "../lib/fusion/mod.ts";
import {
  fusionStatusProvider,
  listenersStatusProvider,
  serveObservability,
} from "../lib/status/mod.ts";
import { AuthFailureLimiter, formatAddr, joinHostPort, serve } from "../lib/net/mod.ts";

// ---- flags, config validation (the same for --check-config) ----
const { cfg, flags, log } = await startService(command, validate);

// ---- wiring ----
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
const listener = await listenLinkOrExit(flags.listen, cfg.tls, "listen", log);
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
const metrics = flags.metrics &&
  await bindOrExit("metrics", flags.metrics, () =>
    serveObservability(flags.metrics!, {
      service: "fusion-server",
      log,
      auth: flags["status-auth"],
      status: () => ({ sessions: sessions(), recent: fusion.recent }),
      providers: [listenersStatusProvider(), fusionStatusProvider(sessions)],
    }));

// ---- shutdown ----
onShutdown(log, async () => {
  await server.stop(flags["drain-timeout"]);
  await fusion.close();
  if (metrics) await metrics.shutdown();
});
