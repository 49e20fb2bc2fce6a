/**
 * depot-server: the public side of the reverse SOCKS5 proxy (seed 001). SOCKS5 clients
 * connect here; their connections exit from wherever a depot-local runs.
 *
 *   deno run -A services/depot-server.ts --token "$DEPOT_TOKEN"
 *   curl --socks5-hostname 127.0.0.1:1080 http://intranet.example/
 */

import { bindOrExit, listenLinkOrExit, listenOrExit, onShutdown, startService } from "./_kit.ts";
import { command, validate } from "./config/depot-server.ts";
import {
  depotStatusProvider,
  listenersStatusProvider,
  serveObservability,
} from "../lib/status/mod.ts";
import { AuthFailureLimiter, formatAddr } from "../lib/net/mod.ts";
import { DepotServer } from "../lib/depot/mod.ts";

// ---- flags, config validation (the same for --check-config and reloads) ----
const { cfg, flags, log, onReload } = await startService(command, validate);
if (cfg.token === "") {
  log.warn("no token (--allow-open): any program reaching the control port can become an exit");
}

// ---- wiring ----
// Control and tunnel connections come from depot-locals: TLS when configured. SOCKS clients
// are local applications and stay plaintext.
const listeners = {
  control: await listenLinkOrExit(flags.control, cfg.tls, "control", log),
  socks: await listenOrExit(flags.socks, "socks"),
  tunnel: await listenLinkOrExit(flags.tunnel, cfg.tls, "tunnel", log),
};
const server = new DepotServer({
  transport: flags.transport,
  token: cfg.token,
  authLimiter: new AuthFailureLimiter(),
  defaultExit: cfg.defaultExit,
  heartbeatMs: flags.heartbeat,
  pendingTimeoutMs: flags["pending-timeout"],
  maxPending: flags["max-pending"],
  idleTimeoutMs: flags["idle-timeout"],
  maxConns: flags["max-conns"],
  log,
});
server.start(listeners);
for (const [name, l] of Object.entries(listeners)) {
  log.info("listening", { name, addr: formatAddr(l.addr) });
}
log.info("link security", {
  tls: cfg.tls
    ? (cfg.tls.ca ? "mutual" : "server")
    : "off (plaintext: keep it on loopback or a trusted network)",
});
// --status and --metrics: the same listener; the page shows exits with RTT and traffic,
// pending requests, failures, and the listeners.
const observed = {
  service: "depot-server",
  log,
  status: () => server.status(),
  providers: [depotStatusProvider(() => server.status()), listenersStatusProvider()],
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
log.info("waiting for depot-local", { defaultExit: cfg.defaultExit });

// ---- reload (SIGHUP) ----
// The token (next hellos; a token file is re-read, so rotating it is: write the file, SIGHUP)
// and the default exit change live; connected locals stay.
onReload((next) => {
  server.reconfigure({ token: next.token, defaultExit: next.defaultExit });
  log.info("depot config applied", {
    defaultExit: next.defaultExit,
    token: next.token === "" ? "none" : "set",
  });
});

// ---- shutdown ----
onShutdown(log, async () => {
  await server.stop(flags["drain-timeout"]);
  if (statusServer) await statusServer.shutdown();
  if (metrics) await metrics.shutdown();
});
