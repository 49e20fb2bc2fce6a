/**
 * depot-server: the public side of the reverse SOCKS5 proxy (seed 001). SOCKS5 clients
 * connect here; their connections exit from wherever a depot-local runs.
 *
 *   deno run -A services/depot-server.ts --token "$DEPOT_TOKEN"
 *   curl --socks5-hostname 127.0.0.1:1080 http://intranet.example/
 */

import { bindOrExit, fail, logFdLimits, onShutdown, startService } from "./_kit.ts";
import { command, validate } from "./config/depot-server.ts";
import { constructDepotServer } from "./construct/depot-server.ts";

// ---- flags, config validation (the same for --check-config and reloads) ----
const { cfg, flags, log, onReload } = await startService(command, validate);

// ---- wiring and run (services/construct/depot-server.ts) ----
// An unreachable --registry at start ends it with one line, like a busy port.
const depot = await constructDepotServer(flags, cfg, log, bindOrExit)
  .catch((err: Error) => fail(`cannot start: ${err.message}`));

// ---- reload (SIGHUP) ----
// The token (next hellos; a token file is re-read, so rotating it is: write the file, SIGHUP)
// and the default exit change live; connected locals stay.
onReload((next) => {
  depot.server.reconfigure({ token: next.token, defaultExit: next.defaultExit });
  log.info("depot config applied", {
    defaultExit: next.defaultExit,
    token: next.token === "" ? "none" : "set",
  });
});

// ---- open-file limits (logged once listening: a busy port still exits with one line) ----
// Each listener holds up to --max-conns (a relayed connection: a SOCKS and a tunnel one), the
// tunnel listener the idle standby spares (--standby-total) beside them.
logFdLimits(log, 3 * flags["max-conns"] + flags["standby-total"]);

// ---- shutdown ----
onShutdown(log, () => depot.stop(flags["drain-timeout"]));
