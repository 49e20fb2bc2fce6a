/**
 * fusion-server: joins the paths fusion-clients open into sessions (seed 000) and relays
 * each session to one connection to the target, by default the local sshd.
 *
 *   FUSION_TOKEN=s3cret deno run -A services/fusion-server.ts --listen 0.0.0.0:5022
 */

import {
  bindOrExit,
  fail,
  hostPortFlag,
  intFlag,
  onShutdown,
  parseFlags,
  serviceLogger,
} from "../lib/cli.ts";
import {
  listenMaybeTls,
  secretFileFlag,
  secretFromFlags,
  tlsServerFlags,
  tlsServerFromFlags,
  transportFlags,
  transportFromFlags,
} from "../lib/cli_security.ts";
import { FusionServer, livePathMetrics } from "../lib/fusion/mod.ts";
import {
  fusionStatusProvider,
  listenersStatusProvider,
  serveObservability,
} from "../lib/status/mod.ts";
import { AuthFailureLimiter, formatAddr, serve } from "../lib/net/mod.ts";
import { fusionSessionFlags, fusionSessionOptions } from "./_fusion_flags.ts";

// ---- flags ----
const flags = parseFlags({
  name: "fusion-server",
  summary: "multipath server: joins fusion paths into sessions, one target connection each",
  flags: {
    listen: {
      type: "string",
      arg: "host:port",
      default: "127.0.0.1:5022",
      env: "FUSION_LISTEN",
      help: "where fusion-client paths connect",
    },
    target: {
      type: "string",
      arg: "host:port",
      default: "localhost:22",
      env: "FUSION_TARGET",
      help: "where each session goes",
    },
    token: {
      type: "string",
      arg: "secret",
      env: "FUSION_TOKEN",
      help: "shared secret every path must present (prefer the env variable or --token-file)",
    },
    "token-file": secretFileFlag("token"),
    ...tlsServerFlags,
    ...transportFlags,
    ...fusionSessionFlags("a path silent this long (no acks, no heartbeats) is dropped"),
    "max-sessions": { type: "string", arg: "n", default: "256", help: "sessions at once" },
    "max-paths": { type: "string", arg: "n", default: "8", help: "paths per session" },
    "drain-timeout-ms": {
      type: "string",
      arg: "ms",
      default: "2000",
      help: "on SIGINT/SIGTERM, let live sessions finish this long",
    },
  },
  examples: [
    "FUSION_TOKEN=s3cret fusion-server --listen 0.0.0.0:5022",
    "FUSION_TOKEN=s3cret fusion-server --listen 0.0.0.0:5022 --target 10.0.0.9:22 --metrics :9522",
    "fusion-server --listen 0.0.0.0:5022 --token-file /etc/warren/fusion.token --tls-cert cert.pem --tls-key key.pem",
  ],
});
const log = serviceLogger("fusion-server", flags["log-level"]);

// ---- config validation ----
const listenAddr = hostPortFlag("listen", flags.listen!);
const target = hostPortFlag("target", flags.target!, "localhost");
const metricsAddr = flags.metrics ? hostPortFlag("metrics", flags.metrics) : undefined;
const token = secretFromFlags(flags.token, flags["token-file"], { flag: "token", log }) ?? "";
if (token === "") fail("a token is required: --token, FUSION_TOKEN or --token-file", 2);
const tls = tlsServerFromFlags(flags);
const session = fusionSessionOptions(flags);
const maxSessions = intFlag("max-sessions", flags["max-sessions"], 256);
const maxPaths = intFlag("max-paths", flags["max-paths"], 8);
if (maxSessions < 1 || maxPaths < 1) fail("--max-sessions and --max-paths must be >= 1", 2);
const drainTimeoutMs = intFlag("drain-timeout-ms", flags["drain-timeout-ms"], 2000);

// ---- wiring ----
const fusion = new FusionServer({
  transport: transportFromFlags(flags),
  token,
  target,
  ...session,
  maxSessions,
  maxPathsPerSession: maxPaths,
  authLimiter: new AuthFailureLimiter(),
  log,
});
const listener = await listenMaybeTls(listenAddr, tls, "listen", log);
const server = serve(listener, fusion.handle, {
  maxConns: maxSessions * maxPaths,
  log,
  handshakeTimeoutMs: 10_000,
});
log.info("listening", { name: "listen", addr: formatAddr(listener.addr) });
log.info("path security", {
  tls: tls
    ? (tls.ca ? "mutual" : "server")
    : "off (plaintext: keep it on loopback or a trusted network)",
});
log.info("target", { addr: `${target.host}:${target.port}`, scheduler: session.scheduler });
// Per-path rate, RTT and in-flight bytes of the live sessions, read at scrape time.
if (metricsAddr) livePathMetrics(() => [...fusion.sessions.values()].map((s) => s.status()));
// The live status page: listeners, sessions, paths, each path's share of the traffic.
const sessions = () => [...fusion.sessions.values()].map((s) => s.status());
const metrics = metricsAddr
  ? bindOrExit("metrics", metricsAddr, () =>
    serveObservability(metricsAddr, {
      service: "fusion-server",
      log,
      status: () => ({ sessions: sessions(), recent: fusion.recent }),
      providers: [listenersStatusProvider(), fusionStatusProvider(sessions)],
    }))
  : undefined;

// ---- shutdown ----
onShutdown(log, async () => {
  await server.stop(drainTimeoutMs);
  await fusion.close();
  await metrics?.shutdown();
});
