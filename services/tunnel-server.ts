/**
 * tunnel-server: the HTTP virtual-host reverse tunnel (seed 002). Public requests are routed
 * by Host to the tunnel client registered for that host; clients connect over a WebSocket
 * on `/_controlPath_/` of the same port.
 *
 *   TUNNEL_ADMIN_TOKEN=... deno run -A services/tunnel-server.ts --listen 0.0.0.0:8080 \
 *     --host app.example.com=env:APP_IDENTIFIER --admin 127.0.0.1:8081
 */

import { bindOrExit, fail, logFdLimits, onShutdown, startService } from "./_kit.ts";
import { command, validate } from "./config/tunnel-server.ts";
import { constructTunnelServer } from "./construct/tunnel-server.ts";

// ---- flags, config validation (the same for --check-config and reloads) ----
const { cfg, flags, log, onReload } = await startService(command, validate);

// ---- wiring and run (services/construct/tunnel-server.ts) ----
// A bad --state-file is refused like a bad flag: one line, exit 2.
const tunnel = await constructTunnelServer(flags, cfg, log, bindOrExit).catch((err: Error) =>
  fail(err.message, 2)
);
for (const f of tunnel.failedTcp) fail(`--tcp ${f.port}: ${f.error}`, 2);
for (const f of tunnel.failedUdp) fail(`--udp ${f.port}: ${f.error}`, 2);

// ---- reload (SIGHUP) ----
// Hosts, identifiers and --tcp/--udp tunnels from flags/config change live (what the admin API
// added stays); connected clients and their streams stay.
onReload(async (next) => {
  const r = await tunnel.server.applyConfig(next.routes);
  for (const f of r.failedTcp) log.warn("tcp tunnel not added", { port: f.port, error: f.error });
  for (const f of r.failedUdp) log.warn("udp tunnel not added", { port: f.port, error: f.error });
  log.info("hosts", { count: next.routes.hosts.size });
});

// ---- open-file limits (logged once listening: a busy port still exits with one line) ----
// --max-conns public connections (their tunnels are streams of the clients' connections).
logFdLimits(log, flags["max-conns"]);

// ---- shutdown ----
onShutdown(log, () => tunnel.stop(flags["drain-timeout"]));
