/**
 * fusion-client: accepts connections (e.g. ssh) and carries each over several TCP paths at
 * once to fusion-server (seed 000): faster than any single path, and surviving a path's
 * death.
 *
 *   FUSION_TOKEN=s3cret deno run -A services/fusion-client.ts \
 *     --path 192.168.1.10>203.0.113.5:5022 --path 10.0.0.7>203.0.113.5:5022
 *   ssh -p 5021 user@127.0.0.1
 */

import { bindOrExit, listenOrExit, onShutdown, startService } from "./_kit.ts";
import { command, validate } from "./config/fusion-client.ts";
import { FusionClient, livePathMetrics } from "../lib/fusion/mod.ts";
import { fusionStatusProvider, serveObservability } from "../lib/status/mod.ts";
import { formatAddr, serve } from "../lib/net/mod.ts";

// ---- flags, config validation (the same for --check-config) ----
const { cfg, flags, log } = await startService(command, validate);

// ---- wiring ----
const client = new FusionClient({
  transport: flags.transport,
  paths: cfg.paths,
  token: cfg.token,
  tls: cfg.tls,
  ...cfg.session,
  log,
});
const listener = await listenOrExit(flags.listen, "listen");
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
const metrics = flags.metrics &&
  await bindOrExit("metrics", flags.metrics, () =>
    serveObservability(flags.metrics!, {
      service: "fusion-client",
      log,
      auth: flags["status-auth"],
      status: () => ({ sessions: sessions(), recent: client.recent }),
      providers: [fusionStatusProvider(sessions)],
    }));

// ---- shutdown ----
onShutdown(log, async () => {
  await server.stop(flags["drain-timeout"]);
  await client.close();
  if (metrics) await metrics.shutdown();
});
