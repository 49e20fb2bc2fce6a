/**
 * tunnel-client: makes a local web app (and optionally local TCP services) reachable
 * through a tunnel-server. Connects to the server's `/_controlPath_/`, reconnects forever
 * with backoff, and relays every request the server sends to the local app.
 *
 *   TUNNEL_IDENTIFIER=… deno run -A services/tunnel-client.ts \
 *     --server http://tunnel.example.com:8080 --local 127.0.0.1:3000
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
import { readSecretFile, refusePlaceholderOrExit, tlsClientFlags } from "../lib/cli_security.ts";
import { gauge } from "../lib/stats.ts";
import { serveObservability } from "../lib/status/mod.ts";
import { errorMessage } from "../lib/net/mod.ts";
import { loadTlsClientConfig, type TlsClientConfig } from "../lib/transport/mod.ts";
import { type TcpTunnelSpec, type Transport, TunnelClient } from "../lib/tunnel/mod.ts";

// ---- flags ----
const flags = parseFlags({
  name: "tunnel-client",
  summary: "expose a local app through a tunnel-server",
  flags: {
    server: {
      type: "string",
      arg: "url",
      env: "TUNNEL_SERVER",
      help: "tunnel server base URL (http://, https://, ws://, wss://)",
    },
    local: {
      type: "string",
      arg: "host:port",
      default: "127.0.0.1:80",
      help: "local app that receives the requests",
    },
    identifier: {
      type: "string",
      arg: "secret",
      env: "TUNNEL_IDENTIFIER",
      help: "this client's secret identifier (prefer the env variable: argv shows in ps)",
    },
    "identifier-file": { type: "string", arg: "path", help: "read the identifier from a file" },
    "allow-port": {
      type: "string",
      multiple: true,
      arg: "port",
      help: "a Host header naming this port is sent to local-host:port (default: --local)",
    },
    tcp: {
      type: "string",
      multiple: true,
      arg: "public_port=host:port",
      help: "TCP tunnel: the server's public port relayed to this local address",
    },
    transport: {
      type: "string",
      arg: "auto|websocket|raw",
      default: "auto",
      help: "raw (HTTP Upgrade, no framing: fastest), websocket (any proxy, both server " +
        "fronts), or auto: raw, falling back to websocket when refused on the way",
    },
    "ca-file": {
      type: "string",
      arg: "path",
      help: "extra CA certificate (PEM) to trust for an https/wss server (same as --tls-ca)",
    },
    "tls-ca": {
      ...tlsClientFlags["tls-ca"],
      help: "trust this CA (PEM) for an https/wss server's certificate",
    },
    "tls-server-name": tlsClientFlags["tls-server-name"],
    "tls-client-cert": {
      ...tlsClientFlags["tls-client-cert"],
      help: "present this client certificate to an https/wss server that requires one " +
        "(tunnel-server --tls-client-ca); needs --tls-client-key",
    },
    "tls-client-key": tlsClientFlags["tls-client-key"],
    heartbeat: {
      type: "string",
      arg: "ms",
      default: "2000",
      help: "ping the server this often; reconnect after 3 missed intervals",
    },
    "backoff-max": {
      type: "string",
      arg: "ms",
      default: "30000",
      help: "longest wait between reconnection attempts",
    },
  },
  examples: [
    "TUNNEL_IDENTIFIER=s3cret tunnel-client --server http://tunnel.example.com --local 127.0.0.1:3000",
    "tunnel-client --server https://t.example.com --identifier-file ~/.tunnel-id --tcp 20022=127.0.0.1:22",
    "tunnel-client --server wss://t.example.com --tls-ca ca.pem --tls-client-cert me.pem --tls-client-key me.key",
  ],
});
const log = serviceLogger("tunnel-client", flags["log-level"]);

// ---- config validation ----
if (!flags.server) fail("--server is required (or TUNNEL_SERVER)", 2);
try {
  const u = new URL(flags.server.includes("://") ? flags.server : `http://${flags.server}`);
  if (!["http:", "https:", "ws:", "wss:"].includes(u.protocol)) throw new Error("scheme");
} catch {
  fail(`--server must be an http(s):// or ws(s):// URL`, 2);
}
let identifier = flags.identifier;
if (flags["identifier-file"]) {
  try {
    identifier = readSecretFile(flags["identifier-file"]);
  } catch (err) {
    fail(`--identifier-file: ${errorMessage(err)}`, 2);
  }
}
if (!identifier) fail("--identifier, --identifier-file or TUNNEL_IDENTIFIER is required", 2);
refusePlaceholderOrExit(identifier, "--identifier");
const local = hostPortFlag("local", flags.local!);
const allowPorts = flags["allow-port"].map((p) => {
  const n = Number(p);
  if (!Number.isInteger(n) || n < 1 || n > 65535) fail(`--allow-port: bad port ${p}`, 2);
  return n;
});
const tcp: TcpTunnelSpec[] = flags.tcp.map((spec) => {
  const m = /^(\d{1,5})=(.+)$/.exec(spec);
  if (!m || Number(m[1]) < 1 || Number(m[1]) > 65535) {
    fail(`--tcp must be public_port=host:port, got ${spec}`, 2);
  }
  return { publicPort: Number(m[1]), local: hostPortFlag("tcp", m[2]) };
});
if (!["auto", "websocket", "raw"].includes(flags.transport!)) {
  fail("--transport must be auto, websocket or raw", 2);
}
if (flags["ca-file"] && flags["tls-ca"]) fail("give --ca-file or --tls-ca, not both", 2);
// TLS itself follows the URL scheme (https/wss); these flags only say whom to trust and
// which client certificate to present.
let tls: TlsClientConfig | undefined;
if (
  flags["tls-ca"] || flags["ca-file"] || flags["tls-server-name"] || flags["tls-client-cert"] ||
  flags["tls-client-key"]
) {
  try {
    tls = loadTlsClientConfig({
      caFile: flags["tls-ca"] ?? flags["ca-file"],
      serverName: flags["tls-server-name"],
      certFile: flags["tls-client-cert"],
      keyFile: flags["tls-client-key"],
    });
  } catch (err) {
    fail(`TLS: ${errorMessage(err)}`, 2);
  }
}
if (tls && !/^(https|wss):/i.test(flags.server)) {
  fail("--ca-file/--tls-* flags need an https:// or wss:// --server", 2);
}
const heartbeatMs = intFlag("heartbeat", flags.heartbeat, 2_000);
if (heartbeatMs < 100) fail("--heartbeat must be at least 100 ms", 2);
const backoffMaxMs = intFlag("backoff-max", flags["backoff-max"], 30_000);
const metricsAddr = flags.metrics ? hostPortFlag("metrics", flags.metrics) : undefined;

// ---- wiring ----
const ac = new AbortController();
const client = new TunnelClient({
  server: flags.server,
  identifier,
  local,
  allowPorts,
  tcp,
  transport: flags.transport as Transport,
  tls,
  heartbeatIntervalMs: heartbeatMs,
  heartbeatTimeoutMs: heartbeatMs * 3,
  backoff: { initialMs: 250, maxMs: backoffMaxMs },
  log,
  signal: ac.signal,
});
gauge("warren_tunnel_client_connected", "1 while connected to the server", [], function () {
  this.set(client.state === "connected" ? 1 : 0);
});
gauge("warren_tunnel_client_streams_total", "tunnel streams served", [], function () {
  this.set(client.streams);
});
// /status and the live status page: connection state, reconnects, streams served.
const metrics = metricsAddr
  ? bindOrExit("metrics", metricsAddr, () =>
    serveObservability(metricsAddr, {
      service: "tunnel-client",
      log,
      status: () => ({ state: client.state, connects: client.connects, streams: client.streams }),
    }))
  : undefined;

// ---- run and shutdown ----
onShutdown(log, async () => {
  ac.abort();
  await done;
  await metrics?.shutdown();
});
log.info("starting", { server: flags.server, local: flags.local, tcp: tcp.length });
const done = client.run();
await done;
await metrics?.shutdown();
if (client.replaced) {
  log.error("exiting: another client with the same identifier took over");
  Deno.exit(3);
}
