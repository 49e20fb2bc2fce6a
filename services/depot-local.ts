/**
 * depot-local: the exit side of the reverse SOCKS5 proxy (seed 001). Dials depot-server's
 * control port (reconnecting forever) and opens, for each SOCKS request, the connection to
 * the target from here plus a tunnel connection back to the server.
 *
 *   DEPOT_TOKEN=s3cret deno run -A services/depot-local.ts --server depot.example:7000
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
import { serveObservability } from "../lib/status/mod.ts";
import {
  secretFileFlag,
  secretFromFlags,
  tlsClientFlags,
  tlsClientFromFlags,
  transportFlags,
  transportFromFlags,
} from "../lib/cli_security.ts";
import { Acl, AclError } from "../lib/net/mod.ts";
import { defaultControlPort, DepotLocal, exitNamePattern } from "../lib/depot/mod.ts";

// ---- flags ----
const flags = parseFlags({
  name: "depot-local",
  summary: "exit of the depot reverse SOCKS5 proxy: dials depot-server, connects from here",
  flags: {
    server: {
      type: "string",
      arg: "host:port",
      default: `127.0.0.1:${defaultControlPort}`,
      env: "DEPOT_SERVER",
      help: "depot-server control address",
    },
    tunnel: {
      type: "string",
      arg: "host:port",
      env: "DEPOT_TUNNEL_ADDR",
      help: "tunnel address (default: the --server host and the port the server announces)",
    },
    token: {
      type: "string",
      arg: "secret",
      env: "DEPOT_TOKEN",
      help: "shared secret of the server (prefer the env variable or --token-file)",
    },
    "token-file": secretFileFlag("token"),
    ...tlsClientFlags,
    ...transportFlags,
    name: {
      type: "string",
      arg: "name",
      default: "default",
      env: "DEPOT_NAME",
      help: "exit name; SOCKS clients choose this exit with it as username",
    },
    "socks-password": {
      type: "string",
      arg: "secret",
      env: "DEPOT_SOCKS_PASSWORD",
      help: "password SOCKS clients of this exit must send (username = --name)",
    },
    "dial-timeout-ms": {
      type: "string",
      arg: "ms",
      default: "10000",
      help: "give up reaching a target (or the server) after this long",
    },
    "idle-timeout-ms": {
      type: "string",
      arg: "ms",
      default: "0",
      help: "close a relayed connection idle this long (0 = never)",
    },
    "max-backoff-ms": {
      type: "string",
      arg: "ms",
      default: "30000",
      help: "longest wait between reconnect attempts",
    },
    allow: {
      type: "string",
      multiple: true,
      arg: "rule",
      help: "only these destinations: host glob, CIDR, [:port|lo-hi|list] (e.g. " +
        "'*.corp.example:443', '10.0.0.0/8'); others get SOCKS reply 0x02 (default: all; " +
        "env DEPOT_ALLOW, space-separated)",
    },
    deny: {
      type: "string",
      multiple: true,
      arg: "rule",
      help: "never these destinations, checked on resolved addresses too (e.g. 169.254.0.0/16); " +
        "deny wins (env DEPOT_DENY, space-separated)",
    },
    "spare-tunnels": {
      type: "string",
      arg: "n",
      default: "2",
      help: "tunnel connections kept pre-dialled (skips a TCP handshake per request; 0 = off)",
    },
    mux: {
      type: "boolean",
      env: "DEPOT_MUX",
      help: "carry all tunnels as streams of one yamux session (one tunnel connection)",
    },
    status: {
      type: "string",
      arg: "host:port",
      env: "DEPOT_LOCAL_STATUS",
      help: "serve GET /status (JSON), /metrics and /healthz here (also on --metrics)",
    },
  },
  examples: [
    "DEPOT_TOKEN=s3cret depot-local --server depot.example:7000",
    "depot-local --server depot.example:7000 --name office --socks-password pw",
    "depot-local --server depot.example:7000 --mux   # one tunnel connection, streams in it",
  ],
});
const log = serviceLogger("depot-local", flags["log-level"]);

// ---- config validation ----
const serverAddr = hostPortFlag("server", flags.server!);
const tunnelAddr = flags.tunnel ? hostPortFlag("tunnel", flags.tunnel) : undefined;
const statusAddr = flags.status ? hostPortFlag("status", flags.status) : undefined;
const metricsAddr = flags.metrics ? hostPortFlag("metrics", flags.metrics) : undefined;
const name = flags.name!;
if (!exitNamePattern.test(name)) fail(`--name must match ${exitNamePattern}`, 2);
const dialTimeoutMs = intFlag("dial-timeout-ms", flags["dial-timeout-ms"], 10_000);
const idleTimeoutMs = intFlag("idle-timeout-ms", flags["idle-timeout-ms"], 0);
const maxBackoffMs = intFlag("max-backoff-ms", flags["max-backoff-ms"], 30_000);
const allowPatterns = flags.allow.length > 0
  ? flags.allow
  : (Deno.env.get("DEPOT_ALLOW") ?? "").split(/\s+/).filter(Boolean);
const denyPatterns = flags.deny.length > 0
  ? flags.deny
  : (Deno.env.get("DEPOT_DENY") ?? "").split(/\s+/).filter(Boolean);
let acl: Acl;
try {
  acl = new Acl({ allow: allowPatterns, deny: denyPatterns });
} catch (err) {
  if (err instanceof AclError) fail(`--allow/--deny: ${err.message}`, 2);
  throw err;
}
const tls = tlsClientFromFlags(flags);
const spareTunnels = intFlag("spare-tunnels", flags["spare-tunnels"], 2);
const socksPassword = flags["socks-password"];
if (socksPassword !== undefined && new TextEncoder().encode(socksPassword).length > 255) {
  fail("--socks-password is longer than 255 bytes (SOCKS5 limit)", 2);
}

// ---- wiring ----
const local = new DepotLocal({
  transport: transportFromFlags(flags),
  server: serverAddr,
  tunnel: tunnelAddr,
  token: secretFromFlags(flags.token, flags["token-file"], { flag: "token", log }) ?? "",
  tls,
  name,
  socksPassword,
  dialTimeoutMs,
  idleTimeoutMs,
  mux: flags.mux,
  spareTunnels,
  acl: acl.empty ? undefined : acl,
  backoff: { maxMs: Math.max(250, maxBackoffMs) },
  log,
});
// --status and --metrics: the same listener (the page shows this exit's /status fields).
const observed = { service: `depot-local ${name}`, log, status: () => local.status() };
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
log.info("starting", {
  server: flags.server,
  name,
  access: acl.empty ? "all destinations" : acl.describe(),
  tls: tls ? "on" : "off",
});
const running = local.run();

// ---- shutdown ----
onShutdown(log, async () => {
  await local.stop();
  await running;
  await statusServer?.shutdown();
  await metrics?.shutdown();
});
