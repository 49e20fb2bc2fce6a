/**
 * depot-server: the public side of the reverse SOCKS5 proxy (seed 001). SOCKS5 clients
 * connect here; their connections exit from wherever a depot-local runs.
 *
 *   deno run -A services/depot-server.ts --token "$DEPOT_TOKEN"
 *   curl --socks5-hostname 127.0.0.1:1080 http://intranet.example/
 */

import {
  bindOrExit,
  fail,
  hostPortFlag,
  intFlag,
  listenOrExit,
  onReload,
  onShutdown,
  parseFlags,
  serviceLogger,
} from "../lib/cli.ts";
import {
  listenMaybeTls,
  readSecretFile,
  secretFileFlag,
  secretFromFlags,
  tlsServerFlags,
  tlsServerFromFlags,
  transportFlags,
  transportFromFlags,
} from "../lib/cli_security.ts";
import {
  depotStatusProvider,
  listenersStatusProvider,
  serveObservability,
} from "../lib/status/mod.ts";
import { AuthFailureLimiter, formatAddr } from "../lib/net/mod.ts";
import {
  defaultControlPort,
  defaultSocksPort,
  defaultTunnelPort,
  DepotServer,
  exitNamePattern,
} from "../lib/depot/mod.ts";

// ---- flags ----
const flags = parseFlags({
  name: "depot-server",
  summary: "reverse SOCKS5 proxy: SOCKS clients here, connections exit at depot-local",
  flags: {
    control: {
      type: "string",
      arg: "host:port",
      default: `127.0.0.1:${defaultControlPort}`,
      env: "DEPOT_CONTROL",
      help: "control listener depot-locals dial",
    },
    socks: {
      type: "string",
      arg: "host:port",
      default: `127.0.0.1:${defaultSocksPort}`,
      env: "DEPOT_SOCKS",
      help: "SOCKS5 listener for clients",
    },
    tunnel: {
      type: "string",
      arg: "host:port",
      default: `127.0.0.1:${defaultTunnelPort}`,
      env: "DEPOT_TUNNEL",
      help: "tunnel listener (one connection per request from depot-local)",
    },
    token: {
      type: "string",
      arg: "secret",
      env: "DEPOT_TOKEN",
      help: "shared secret depot-locals must present (prefer the env variable or --token-file)",
    },
    "token-file": secretFileFlag("token (re-read on SIGHUP)"),
    ...tlsServerFlags,
    ...transportFlags,
    "default-exit": {
      type: "string",
      arg: "name",
      default: "default",
      help: "exit used by SOCKS clients that send no username",
    },
    status: {
      type: "string",
      arg: "host:port",
      env: "DEPOT_STATUS",
      help: "serve GET /status (JSON), /metrics and /healthz here (also on --metrics)",
    },
    "heartbeat-ms": {
      type: "string",
      arg: "ms",
      default: "2000",
      help: "control heartbeat interval; 3 silent intervals mean the local is dead",
    },
    "pending-timeout-ms": {
      type: "string",
      arg: "ms",
      default: "15000",
      help: "a request without tunnel by then gets reply 0x06",
    },
    "max-pending": {
      type: "string",
      arg: "n",
      default: "512",
      help: "requests waiting for their exit at once; more get reply 0x01",
    },
    "max-conns": {
      type: "string",
      arg: "n",
      default: "4096",
      help:
        "connections at once per listener (each relayed connection holds a SOCKS and a tunnel one)",
    },
    "idle-timeout-ms": {
      type: "string",
      arg: "ms",
      default: "0",
      help: "close a relayed connection idle this long (0 = never)",
    },
    "drain-timeout-ms": {
      type: "string",
      arg: "ms",
      default: "2000",
      help: "on SIGINT/SIGTERM, let live connections finish this long",
    },
  },
  examples: [
    "DEPOT_TOKEN=s3cret depot-server",
    "depot-server --socks 0.0.0.0:1080 --control 0.0.0.0:7000 --tunnel 0.0.0.0:7001 --status :7080",
    "curl --socks5-hostname 127.0.0.1:1080 http://10.0.0.5/          # via the default exit",
    "curl --proxy socks5h://office:pw@127.0.0.1:1080 http://intranet/  # via exit 'office'",
  ],
});
const log = serviceLogger("depot-server", flags["log-level"]);

// ---- config validation ----
const controlAddr = hostPortFlag("control", flags.control!);
const socksAddr = hostPortFlag("socks", flags.socks!);
const tunnelAddr = hostPortFlag("tunnel", flags.tunnel!);
const statusAddr = flags.status ? hostPortFlag("status", flags.status) : undefined;
const metricsAddr = flags.metrics ? hostPortFlag("metrics", flags.metrics) : undefined;
const defaultExit = flags["default-exit"]!;
if (!exitNamePattern.test(defaultExit)) fail(`--default-exit must match ${exitNamePattern}`, 2);
const heartbeatMs = intFlag("heartbeat-ms", flags["heartbeat-ms"], 2000);
if (heartbeatMs < 10) fail("--heartbeat-ms must be at least 10", 2);
const pendingTimeoutMs = intFlag("pending-timeout-ms", flags["pending-timeout-ms"], 15_000);
const maxPending = intFlag("max-pending", flags["max-pending"], 512);
if (maxPending < 1) fail("--max-pending must be at least 1", 2);
const idleTimeoutMs = intFlag("idle-timeout-ms", flags["idle-timeout-ms"], 0);
const maxConns = intFlag("max-conns", flags["max-conns"], 4096);
if (maxConns < 1) fail("--max-conns must be at least 1", 2);
const drainTimeoutMs = intFlag("drain-timeout-ms", flags["drain-timeout-ms"], 2000);
const token = secretFromFlags(flags.token, flags["token-file"], { flag: "token", log }) ?? "";
const tls = tlsServerFromFlags(flags);
if (token === "") {
  log.warn("no --token / DEPOT_TOKEN: any program reaching the control port can become an exit");
}

// ---- wiring ----
// Control and tunnel connections come from depot-locals: TLS when configured. SOCKS clients
// are local applications and stay plaintext.
const listeners = {
  control: await listenMaybeTls(controlAddr, tls, "control", log),
  socks: listenOrExit(socksAddr, "socks"),
  tunnel: await listenMaybeTls(tunnelAddr, tls, "tunnel", log),
};
const server = new DepotServer({
  transport: transportFromFlags(flags),
  token,
  authLimiter: new AuthFailureLimiter(),
  defaultExit,
  heartbeatMs,
  pendingTimeoutMs,
  maxPending,
  idleTimeoutMs,
  maxConns,
  log,
});
server.start(listeners);
for (const [name, l] of Object.entries(listeners)) {
  log.info("listening", { name, addr: formatAddr(l.addr) });
}
log.info("link security", {
  tls: tls
    ? (tls.ca ? "mutual" : "server")
    : "off (plaintext: keep it on loopback or a trusted network)",
});
// --status and --metrics: the same listener; the page shows exits with RTT and traffic,
// pending requests, failures, and the listeners.
const observed = {
  service: "depot-server",
  log,
  status: () => server.status(),
  providers: [depotStatusProvider(() => server.status()), listenersStatusProvider()],
};
const statusServer = statusAddr
  ? bindOrExit(
    "status",
    statusAddr,
    () => serveObservability(statusAddr, { ...observed, name: "status" }),
  )
  : undefined;
const metrics = metricsAddr
  ? bindOrExit("metrics", metricsAddr, () => serveObservability(metricsAddr, observed))
  : undefined;
log.info("waiting for depot-local", { defaultExit });

// ---- reload (SIGHUP) ----
// The token (next hellos) and the default exit change live; connected locals stay.
onReload<typeof flags>((next) => {
  const nextExit = next["default-exit"]!;
  if (!exitNamePattern.test(nextExit)) {
    throw new Error(`default-exit must match ${exitNamePattern}`);
  }
  // A token file is re-read, so rotating it is: write the file, SIGHUP.
  const nextToken = next["token-file"] ? readSecretFile(next["token-file"]) : next.token ?? "";
  server.reconfigure({ token: nextToken, defaultExit: nextExit });
  log.info("depot config applied", {
    defaultExit: nextExit,
    token: nextToken === "" ? "none" : "set",
  });
});

// ---- shutdown ----
onShutdown(log, async () => {
  await server.stop(drainTimeoutMs);
  await statusServer?.shutdown();
  await metrics?.shutdown();
});
