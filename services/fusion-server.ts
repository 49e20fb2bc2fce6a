/**
 * fusion-server: joins the paths fusion-clients open into sessions (seed 000) and relays
 * each session to one connection to the target, by default the local sshd.
 *
 *   FUSION_TOKEN=s3cret deno run -A services/fusion-server.ts --listen 0.0.0.0:5022
 */

import { bindOrExit, logFdLimits, onShutdown, startService } from "./_kit.ts";
import { command, validate } from "./config/fusion-server.ts";
import { constructFusionServer } from "./construct/fusion-server.ts";

// ---- flags, config validation (the same for --check-config) ----
const { cfg, flags, log } = await startService(command, validate);

// ---- wiring and run (services/construct/fusion-server.ts) ----
const fusion = await constructFusionServer(flags, cfg, log, bindOrExit);

// ---- open-file limits (logged once listening: a busy port still exits with one line) ----
// --max-sessions sessions, each its paths and its upstream connection.
logFdLimits(log, flags["max-sessions"] * (flags["max-paths"] + 1));

// ---- shutdown ----
onShutdown(log, () => fusion.stop(flags["drain-timeout"]));
