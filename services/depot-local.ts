/**
 * depot-local: the exit side of the reverse SOCKS5 proxy (seed 001). Dials depot-server's
 * control port (reconnecting forever) and opens, for each SOCKS request, the connection to
 * the target from here plus a tunnel connection back to the server.
 *
 *   DEPOT_TOKEN=s3cret deno run -A services/depot-local.ts --server depot.example:7000
 */

import { bindOrExit, onShutdown, startService } from "./_kit.ts";
import { command, validate } from "./config/depot-local.ts";
import { serveObservability } from "../lib/status/mod.ts";
import { joinHostPort } from "../lib/net/mod.ts";
import { DepotLocal } from "../lib/depot/mod.ts";

// ---- flags, config validation (the same for --check-config) ----
const { cfg, flags, log } = await startService(command, validate);

// ---- wiring ----
const local = new DepotLocal({
  transport: flags.transport,
  server: flags.server,
  tunnel: flags.tunnel,
  token: flags.token ?? "",
  tls: cfg.tls,
  name: flags.name,
  socksPassword: cfg.socksPassword,
  dialTimeoutMs: flags["dial-timeout"],
  idleTimeoutMs: flags["idle-timeout"],
  mux: flags.mux,
  spareTunnels: flags["spare-tunnels"],
  acl: cfg.acl.empty ? undefined : cfg.acl,
  backoff: { maxMs: Math.max(250, flags["backoff-max"]) },
  log,
});
// --status and --metrics: the same listener (the page shows this exit's /status fields).
const observed = {
  service: `depot-local ${flags.name}`,
  log,
  status: () => local.status(),
  auth: flags["status-auth"],
};
const statusAddr = flags.status, metricsAddr = flags.metrics;
const statusServer = statusAddr &&
  await bindOrExit(
    "status",
    statusAddr,
    () => serveObservability(statusAddr, { ...observed, name: "status" }),
  );
const metrics = metricsAddr &&
  await bindOrExit("metrics", metricsAddr, () => serveObservability(metricsAddr, observed));
log.info("starting", {
  server: joinHostPort(flags.server.host, flags.server.port),
  name: flags.name,
  access: cfg.acl.empty ? "all destinations" : cfg.acl.describe(),
  tls: cfg.tls ? "on" : "off",
});
const running = local.run();

// ---- shutdown ----
onShutdown(log, async () => {
  await local.stop();
  await running;
  if (statusServer) await statusServer.shutdown();
  if (metrics) await metrics.shutdown();
});
