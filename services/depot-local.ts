/**
 * depot-local: the exit side of the reverse SOCKS5 proxy (seed 001). Dials depot-server's
 * control port (reconnecting forever) and opens, for each SOCKS request, the connection to
 * the target from here plus a tunnel connection back to the server.
 *
 *   DEPOT_TOKEN=s3cret deno run -A services/depot-local.ts --server depot.example:7000
 */

import { bindOrExit, logFdLimits, onShutdown, startService } from "./_kit.ts";
import { command, validate } from "./config/depot-local.ts";
import { constructDepotLocal } from "./construct/depot-local.ts";

// ---- flags, config validation (the same for --check-config) ----
const { cfg, flags, log } = await startService(command, validate);

// ---- wiring and run (services/construct/depot-local.ts) ----
const local = await constructDepotLocal(flags, cfg, log, bindOrExit);

// ---- open-file limits (logged once listening: a busy port still exits with one line) ----
logFdLimits(log);

// ---- shutdown ----
onShutdown(log, () => local.stop());
