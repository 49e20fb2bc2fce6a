/**
 * tunnel-client: makes a local web app (and optionally local TCP services) reachable
 * through a tunnel-server. Connects to the server's `/_controlPath_/`, reconnects forever
 * with backoff, and relays every request the server sends to the local app.
 *
 *   TUNNEL_IDENTIFIER=... deno run -A services/tunnel-client.ts \
 *     --server http://tunnel.example.com:8080 --local 127.0.0.1:3000
 */

import { bindOrExit, fail, logFdLimits, onShutdown, startService } from "./_kit.ts";
import { command, validate } from "./config/tunnel-client.ts";
import { constructTunnelClient } from "./construct/tunnel-client.ts";

// ---- flags, config validation (the same for --check-config) ----
const { cfg, flags, log } = await startService(command, validate);

// ---- wiring and run (services/construct/tunnel-client.ts) ----
const tc = await constructTunnelClient(flags, cfg, log, bindOrExit);

// ---- open-file limits (logged once listening: a busy port still exits with one line) ----
logFdLimits(log);

// ---- shutdown ----
onShutdown(log, () => tc.stop());
await tc.done;
await tc.metrics?.shutdown();
if (tc.client.replaced) {
  log.error("exiting: another client with the same identifier took over");
  Deno.exit(3);
}
// A wrong identifier ends the client (unless --keep-trying) with one line and status 4.
if (tc.client.refusal) fail(tc.client.refusal, 4);
