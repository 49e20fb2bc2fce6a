/**
 * tunnel-server: the HTTP virtual-host reverse tunnel (seed 002). Public requests are routed
 * by Host to the tunnel client registered for that host; clients connect over a WebSocket
 * on `/_controlPath_/` of the same port.
 *
 *   TUNNEL_ADMIN_TOKEN=… deno run -A services/tunnel-server.ts --listen 0.0.0.0:8080 \
 *     --host app.example.com=env:APP_IDENTIFIER --admin 127.0.0.1:8081
 */

import { bindOrExit, fail, listenOrExit, onShutdown, serveOrExit, startService } from "./_kit.ts";
import { command, validate } from "./config/tunnel-server.ts";
import { listenTlsCounted } from "../lib/cli_security.ts";
import { serveObservability, tunnelStatusProvider } from "../lib/status/mod.ts";
import { AuthFailureLimiter, formatAddr } from "../lib/net/mod.ts";
import { createAdminApp, serveTunnel, TunnelServer } from "../lib/tunnel/mod.ts";

// ---- flags, config validation (the same for --check-config and reloads) ----
const { cfg, flags, log, onReload } = await startService(command, validate);

// ---- wiring ----
const server = new TunnelServer({
  duplicate: flags.duplicate,
  tcpPorts: cfg.tcpPorts,
  tcpHost: flags["tcp-host"],
  responseTimeoutMs: flags["response-timeout"],
  heartbeatIntervalMs: flags.heartbeat,
  heartbeatTimeoutMs: flags.heartbeat * 3,
  authLimiter: new AuthFailureLimiter({ burst: 10, perMinute: 30 }),
  log,
});
const applied = await server.applyConfig(cfg.routes);
for (const f of applied.failedTcp) fail(`--tcp ${f.port}: ${f.error}`, 2);

// With --tls-client-ca the listener is node:tls and hands out only connections whose client
// certificate chains to that CA; failed handshakes are logged (warn) and never reach the front.
const listener = cfg.tls
  ? await bindOrExit(
    "http",
    flags.listen,
    () => listenTlsCounted(flags.listen, cfg.tls!, "http", log),
  )
  : await listenOrExit(flags.listen, "http");
const admin = flags.admin && await serveOrExit(
  flags.admin,
  "admin",
  log,
  createAdminApp(server, { token: flags["admin-token"]!, authLimiter: new AuthFailureLimiter() })
    .fetch,
);
// The live status page: hosts and their clients, requests, bytes, client RTT.
const metrics = flags.metrics &&
  await bindOrExit("metrics", flags.metrics, () =>
    serveObservability(flags.metrics!, {
      service: "tunnel-server",
      log,
      auth: flags["status-auth"],
      status: async () => ({ hosts: await server.status(), clients: server.clients() }),
      providers: [tunnelStatusProvider(() => server.status(), () => server.clients())],
    }));

// ---- run ----
const front = serveTunnel(listener, server, {
  maxConns: flags["max-conns"],
  proto: cfg.tls ? "https" : flags.proto,
  trustForwarded: flags["trust-forwarded"],
  log,
});
log.info("listening", { name: "http", addr: formatAddr(listener.addr) });
log.info("hosts", {
  count: cfg.routes.hosts.size,
  tcpPorts: flags["tcp-ports"] ?? "none",
  tls: cfg.tls ? (cfg.tls.ca ? "mutual" : "server") : "off",
});

// ---- reload (SIGHUP) ----
// Hosts, identifiers and --tcp tunnels from flags/config change live (what the admin API
// added stays); connected clients and their streams stay.
onReload(async (next) => {
  const r = await server.applyConfig(next.routes);
  for (const f of r.failedTcp) log.warn("tcp tunnel not added", { port: f.port, error: f.error });
  log.info("hosts", { count: next.routes.hosts.size });
});

// ---- shutdown ----
onShutdown(log, async () => {
  await server.close();
  await front.stop(flags["drain-timeout"]);
  if (admin) await admin.shutdown();
  if (metrics) await metrics.shutdown();
});
