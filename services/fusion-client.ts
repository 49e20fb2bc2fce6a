/**
 * fusion-client: accepts connections (e.g. ssh) and carries each over several TCP paths at
 * once to fusion-server (seed 000): faster than any single path, and surviving a path's
 * death.
 *
 *   FUSION_TOKEN=s3cret deno run -A services/fusion-client.ts \
 *     --path 192.168.1.10>203.0.113.5:5022 --path 10.0.0.7>203.0.113.5:5022
 *   ssh -p 5021 user@127.0.0.1
 */

import { bindOrExit, logFdLimits, onShutdown, startService } from "./_kit.ts";
import { command, validate } from "./config/fusion-client.ts";
import { constructFusionClient } from "./construct/fusion-client.ts";

// ---- flags, config validation (the same for --check-config) ----
const { cfg, flags, log } = await startService(command, validate);

// ---- wiring and run (services/construct/fusion-client.ts) ----
const fusion = await constructFusionClient(flags, cfg, log, bindOrExit);

// ---- open-file limits (logged once listening: a busy port still exits with one line) ----
// --max-conns sessions, each an accepted connection and its paths.
logFdLimits(log, flags["max-conns"] * (cfg.paths.length + 1));

// ---- shutdown ----
onShutdown(log, () => fusion.stop(flags["drain-timeout"]));
