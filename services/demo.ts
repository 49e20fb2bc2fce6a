/**
 * `deno task demo`: all of warren on this machine in a few seconds, with no flags and
 * nothing installed beyond Deno.
 *
 * Starts, in this process, on 127.0.0.1 with free ports and generated secrets, an origin
 * app and every service as its script runs it (services/demo/): seaprox (static, SOCKS5,
 * HTTP and a link:// pair), depot-server + depot-local, tunnel-server + tunnel-client
 * (HTTP and WebSocket to a vhost of the origin), fusion-server + fusion-client over two
 * paths. Sends a small request and 4 MiB (checked by SHA-256) through each, prints one
 * table and a final line; exits 0 only when every check passed.
 *
 * `--serve` keeps everything running after the checks and prints, per service, a command
 * to try it by hand and the address of its live status page; Ctrl-C stops all cleanly.
 */

import type { LogLevel } from "../lib/log.ts";
import { errorMessage } from "../lib/net/mod.ts";
import { formatTable, runChecks, summaryLine } from "../lib/demo/mod.ts";
import { startDemoSet } from "./demo/set.ts";

const usage = `usage: deno task demo [--serve] [--log-level debug|info|warn|error]

  (no flags)   start the set, check every path, print the table, stop; exit 0 if all passed
  --serve      keep the set running after the checks, print how to try each service and
               its status page; Ctrl-C stops it`;

/** A check that has not answered by then failed (a hang is a failure, not a wait). */
const checkTimeoutMs = 15_000;
const levels = ["debug", "info", "warn", "error"];

// ---- flags ----
let serve = false;
let level: LogLevel = (levels.find((l) => l === Deno.env.get("WARREN_LOG_LEVEL")) ??
  "error") as LogLevel;
for (let i = 0; i < Deno.args.length; i++) {
  const a = Deno.args[i];
  if (a === "--serve") serve = true;
  else if (a === "--help" || a === "-h") {
    console.log(usage);
    Deno.exit(0);
  } else if (a === "--log-level" && levels.includes(Deno.args[i + 1])) {
    level = Deno.args[++i] as LogLevel;
  } else {
    console.error(`error: unknown argument ${JSON.stringify(a)} (see --help)`);
    Deno.exit(2);
  }
}

// ---- start ----
const t0 = performance.now();
const set = await startDemoSet({ level, pages: serve }).catch((err) => {
  console.error(`error: ${errorMessage(err)}`);
  Deno.exit(1);
});
const startMs = performance.now() - t0;
console.log(
  `warren demo: origin and ${set.nodes.length} services on 127.0.0.1 ` +
    `(origin ${set.origin.addr}), started in ${(startMs / 1000).toFixed(1)} s\n`,
);

// ---- check ----
const results = await runChecks(set.checks, checkTimeoutMs);
const passed = results.every((r) => r.ok);
console.log(formatTable(results));
console.log(
  "\n" + summaryLine(
    results,
    performance.now() - t0,
    "seaprox (static, SOCKS5, HTTP, link), depot, tunnel (HTTP, WebSocket), fusion",
  ),
);

if (!serve) {
  await set.stop();
  Deno.exit(passed ? 0 : 1);
}

// ---- serve ----
const width = Math.max(...set.commands.map((c) => c.service.length));
console.log("\ntry them (running until Ctrl-C):");
for (const c of set.commands) console.log(`  ${c.service.padEnd(width)}  ${c.command}`);
console.log("\nlive status pages (/, /status, /metrics):");
const nameWidth = Math.max(...set.nodes.map((n) => n.name.length));
for (const n of set.nodes) if (n.page) console.log(`  ${n.name.padEnd(nameWidth)}  ${n.page}`);
console.log("\nready; Ctrl-C stops everything");

let stopping = false;
const shutdown = () => {
  if (stopping) Deno.exit(130);
  stopping = true;
  set.stop().then(
    () => {
      console.log("stopped");
      Deno.exit(passed ? 0 : 1);
    },
    (err) => {
      console.error(`error: stopping: ${errorMessage(err)}`);
      Deno.exit(1);
    },
  );
};
for (const sig of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(sig, shutdown);
