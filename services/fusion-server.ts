/**
 * fusion-server: joins the paths fusion-clients open into sessions (seed 000) and relays
 * each session to one connection to the target, by default the local sshd.
 *
 *   FUSION_TOKEN=s3cret deno run -A services/fusion-server.ts --listen 0.0.0.0:5022
 */

import { bindOrExit, onShutdown, startService } from "./_kit.ts";
import { command, validate } from "./config/fusion-server.ts";
import { constructFusionServer } from "./construct/fusion-server.ts";

// ---- flags, config validation (the same for --check-config) ----
const { cfg, flags, log } = await startService(command, validate);

// ---- wiring and run (services/construct/fusion-server.ts) ----
const fusion = await constructFusionServer(flags, cfg, log, bindOrExit);

// ---- shutdown ----
onShutdown(log, () => fusion.stop(flags["drain-timeout"]));
