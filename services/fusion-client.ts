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
  transportFlags,
  transportFromFlags,
} from "../lib/cli_security.ts";
import { FusionClient, livePathMetrics, parsePathSpec } from "../lib/fusion/mod.ts";
import type { PathSpec } from "../lib/fusion/mod.ts";
import { fusionStatusProvider, serveObservability } from "../lib/status/mod.ts";
import { errorMessage, formatAddr, serve } from "../lib/net/mod.ts";
import { fusionSessionFlags, fusionSessionOptions } from "./_fusion_flags.ts";

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
    ...transportFlags,
    ...fusionSessionFlags(
      "a path silent this long (no acks, no heartbeats) is dropped and redialled",
    ),
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
const session = fusionSessionOptions(flags);
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
const maxConns = intFlag("max-conns", flags["max-conns"], 64);
const drainTimeoutMs = intFlag("drain-timeout-ms", flags["drain-timeout-ms"], 2000);

// ---- wiring ----
const client = new FusionClient({
  transport: transportFromFlags(flags),
  paths,
  token,
  tls,
  ...session,
  log,
});
const listener = listenOrExit(listenAddr, "listen");
const server = serve(listener, client.handle, { maxConns, log, handshakeTimeoutMs: 0 });
log.info("listening", { name: "listen", addr: formatAddr(listener.addr) });
log.info("paths", { count: paths.length, scheduler: session.scheduler, tls: tls ? "on" : "off" });
// Per-path rate, RTT and in-flight bytes of the live sessions, read at scrape time.
if (metricsAddr) livePathMetrics(() => [...client.sessions].map((s) => s.status()));
// The live status page: sessions, paths, each path's share of the traffic.
const metrics = metricsAddr
  ? bindOrExit("metrics", metricsAddr, () =>
    serveObservability(metricsAddr, {
      service: "fusion-client",
      log,
      status: () => ({
        sessions: [...client.sessions].map((s) => s.status()),
        recent: client.recent,
      }),
      providers: [fusionStatusProvider(() => [...client.sessions].map((s) => s.status()))],
    }))
  : undefined;

// ---- shutdown ----
onShutdown(log, async () => {
  await server.stop(drainTimeoutMs);
  await client.close();
  await metrics?.shutdown();
});
