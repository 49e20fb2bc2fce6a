/**
 * tunnel-client: makes a local web app (and optionally local TCP services) reachable
 * through a tunnel-server. Connects to the server's `/_controlPath_/`, reconnects forever
 * with backoff, and relays every request the server sends to the local app.
 *
 *   TUNNEL_IDENTIFIER=… deno run -A services/tunnel-client.ts \
 *     --server http://tunnel.example.com:8080 --local 127.0.0.1:3000
 */

import { bindOrExit, onShutdown, startService } from "./_kit.ts";
import { command, validate } from "./config/tunnel-client.ts";
import { joinHostPort } from "../lib/net/mod.ts";
import { collectedCounter, gauge } from "../lib/stats.ts";
import { serveObservability } from "../lib/status/mod.ts";
import { TunnelClient } from "../lib/tunnel/mod.ts";

// ---- flags, config validation (the same for --check-config) ----
const { cfg, flags, log } = await startService(command, validate);

// ---- wiring ----
const ac = new AbortController();
const client = new TunnelClient({
  server: cfg.server,
  identifier: cfg.identifier,
  local: flags.local,
  allowPorts: flags["allow-port"],
  tcp: cfg.tcp,
  transport: flags.transport,
  tls: cfg.tls,
  heartbeatIntervalMs: flags.heartbeat,
  heartbeatTimeoutMs: flags.heartbeat * 3,
  backoff: { initialMs: 250, maxMs: flags["backoff-max"] },
  log,
  signal: ac.signal,
});
gauge("warren_tunnel_client_connected", "1 while connected to the server", [], function () {
  this.set(client.state === "connected" ? 1 : 0);
});
collectedCounter("warren_tunnel_client_streams_total", "Tunnel streams served", [], () => [[
  {},
  client.streams,
]]);
collectedCounter("warren_tunnel_client_connects_total", "Sessions established", [], () => [[
  {},
  client.connects,
]]);
// /status and the live status page: connection state, reconnects, streams served.
const metrics = flags.metrics &&
  await bindOrExit("metrics", flags.metrics, () =>
    serveObservability(flags.metrics!, {
      service: "tunnel-client",
      log,
      auth: flags["status-auth"],
      status: () => ({ state: client.state, connects: client.connects, streams: client.streams }),
    }));

// ---- run and shutdown ----
onShutdown(log, async () => {
  ac.abort();
  await done;
  if (metrics) await metrics.shutdown();
});
log.info("starting", {
  server: cfg.server,
  local: joinHostPort(flags.local.host, flags.local.port),
  tcp: cfg.tcp.length,
});
const done = client.run();
await done;
if (metrics) await metrics.shutdown();
if (client.replaced) {
  log.error("exiting: another client with the same identifier took over");
  Deno.exit(3);
}
