/**
 * fusion-client: accepts connections (e.g. ssh) and carries each over several TCP paths at
 * once to fusion-server (seed 000): faster than any single path, and surviving a path's
 * death.
 *
 *   FUSION_TOKEN=s3cret deno run -A services/fusion-client.ts \
 *     --path 192.168.1.10>203.0.113.5:5022 --path 10.0.0.7>203.0.113.5:5022
 *   ssh -p 5021 user@127.0.0.1
 */

import {
  bindOrExit,
  fail,
  hostPortFlag,
  intFlag,
  listenOrExit,
  onShutdown,
  parseFlags,
  serviceLogger,
} from "../lib/cli.ts";
import {
  secretFileFlag,
  secretFromFlags,
  tlsClientFlags,
  tlsClientFromFlags,
} from "../lib/cli_security.ts";
import { FusionClient, livePathMetrics, parsePathSpec } from "../lib/fusion/mod.ts";
import type { PathSpec } from "../lib/fusion/mod.ts";
import { serveMetrics } from "../lib/metrics.ts";
import { fusionStatusProvider, StatusHub } from "../lib/status/mod.ts";
import { errorMessage, formatAddr, serve } from "../lib/net/mod.ts";
import { type SchedulerName, schedulerNames } from "../lib/sequencer/mod.ts";

// ---- flags ----
const flags = parseFlags({
  name: "fusion-client",
  summary: "multipath client: each accepted connection travels over N paths to fusion-server",
  flags: {
    listen: {
      type: "string",
      arg: "host:port",
      default: "127.0.0.1:5021",
      env: "FUSION_LISTEN",
      help: "where to accept connections (point ssh -p here)",
    },
    server: {
      type: "string",
      arg: "host:port",
      env: "FUSION_SERVER",
      help: "fusion-server address, used by --paths N when no --path is given",
    },
    paths: {
      type: "string",
      arg: "n",
      default: "2",
      help: "number of paths to --server",
    },
    path: {
      type: "string",
      arg: "[local_ip>]host:port",
      multiple: true,
      help: "one path: server address, optionally bound to a local address (one link each)",
    },
    token: {
      type: "string",
      arg: "secret",
      env: "FUSION_TOKEN",
      help: "shared secret (prefer the env variable or --token-file)",
    },
    "token-file": secretFileFlag("token"),
    ...tlsClientFlags,
    scheduler: {
      type: "string",
      arg: schedulerNames.join("|"),
      default: "weighted",
      help: "how frames are spread over paths",
    },
    "window-mib": {
      type: "string",
      arg: "MiB",
      default: "16",
      help: "bytes in flight per direction and session (same on both ends)",
    },
    "silence-timeout-ms": {
      type: "string",
      arg: "ms",
      default: "3000",
      help: "a path silent this long (no acks, no heartbeats) is dropped and redialled",
    },
    "nack-gap": {
      type: "string",
      arg: "frames",
      default: "10",
      help: "a hole with this many frames received beyond it is NACKed (or after 300 ms)",
    },
    "grace-ms": {
      type: "string",
      arg: "ms",
      default: "30000",
      help: "a session with no path for this long ends",
    },
    "max-conns": {
      type: "string",
      arg: "n",
      default: "64",
      help: "connections (sessions) at once",
    },
    "drain-timeout-ms": {
      type: "string",
      arg: "ms",
      default: "2000",
      help: "on SIGINT/SIGTERM, let live sessions finish this long",
    },
  },
  examples: [
    "FUSION_TOKEN=s3cret fusion-client --server 203.0.113.5:5022 --paths 4",
    "FUSION_TOKEN=s3cret fusion-client --path '192.168.1.10>203.0.113.5:5022' --path '10.0.0.7>203.0.113.5:5022'",
    "FUSION_TOKEN=s3cret fusion-client --server fusion.example:5022 --tls-ca ca.pem",
    "ssh -p 5021 user@127.0.0.1",
  ],
});
const log = serviceLogger("fusion-client", flags["log-level"]);

// ---- config validation ----
const listenAddr = hostPortFlag("listen", flags.listen!);
const metricsAddr = flags.metrics ? hostPortFlag("metrics", flags.metrics) : undefined;
const token = secretFromFlags(flags.token, flags["token-file"], { flag: "token", log }) ?? "";
const tls = tlsClientFromFlags(flags);
if (token === "") fail("a token is required: --token, FUSION_TOKEN or --token-file", 2);
const scheduler = flags.scheduler as SchedulerName;
if (!schedulerNames.includes(scheduler)) {
  fail(`--scheduler must be one of ${schedulerNames.join(", ")}`, 2);
}
const paths: PathSpec[] = [];
for (const p of flags.path) {
  try {
    paths.push(parsePathSpec(p));
  } catch (err) {
    fail(`--path ${JSON.stringify(p)}: ${errorMessage(err)}`, 2);
  }
}
if (flags.server) {
  const n = intFlag("paths", flags.paths, 2);
  if (n < 1 || n > 64) fail("--paths must be between 1 and 64", 2);
  const server = hostPortFlag("server", flags.server);
  for (let i = 0; i < n; i++) paths.push(server);
}
if (paths.length === 0) fail("give --server host:port (with --paths N) or --path, repeatable", 2);
const windowMiB = intFlag("window-mib", flags["window-mib"], 16);
if (windowMiB < 1 || windowMiB > 1024) fail("--window-mib must be between 1 and 1024", 2);
const silenceTimeoutMs = intFlag("silence-timeout-ms", flags["silence-timeout-ms"], 3000);
if (silenceTimeoutMs < 100) fail("--silence-timeout-ms must be at least 100", 2);
const graceMs = intFlag("grace-ms", flags["grace-ms"], 30_000);
const nackGapFrames = intFlag("nack-gap", flags["nack-gap"], 10);
if (nackGapFrames < 1) fail("--nack-gap must be at least 1", 2);
const maxConns = intFlag("max-conns", flags["max-conns"], 64);
const drainTimeoutMs = intFlag("drain-timeout-ms", flags["drain-timeout-ms"], 2000);

// ---- wiring ----
const client = new FusionClient({
  paths,
  token,
  tls,
  scheduler,
  windowBytes: windowMiB * 1024 * 1024,
  silenceTimeoutMs,
  heartbeatIntervalMs: Math.max(20, Math.min(250, Math.floor(silenceTimeoutMs / 4))),
  graceMs,
  nackGapFrames,
  log,
});
const listener = listenOrExit(listenAddr, "listen");
const server = serve(listener, client.handle, { maxConns, log, handshakeTimeoutMs: 0 });
log.info("listening", { name: "listen", addr: formatAddr(listener.addr) });
log.info("paths", { count: paths.length, scheduler, tls: tls ? "on" : "off" });
// Per-path rate, RTT and in-flight bytes of the live sessions, read at scrape time.
if (metricsAddr) livePathMetrics(() => [...client.sessions].map((s) => s.status()));
const metrics = metricsAddr
  ? bindOrExit("metrics", metricsAddr, () =>
    serveMetrics(metricsAddr.host, metricsAddr.port, log, {
      "/status": () =>
        Response.json({
          sessions: [...client.sessions].map((s) => s.status()),
          recent: client.recent,
        }),
    }, { status: statusHub() }))
  : undefined;

/** The live status page: sessions, paths, each path's share of the traffic. */
function statusHub(): StatusHub {
  const hub = new StatusHub({ service: "fusion-client" });
  hub.register(fusionStatusProvider(() => [...client.sessions].map((s) => s.status())));
  return hub;
}

// ---- shutdown ----
onShutdown(log, async () => {
  await server.stop(drainTimeoutMs);
  await client.close();
  await metrics?.shutdown();
});
