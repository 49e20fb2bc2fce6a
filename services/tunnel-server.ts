/**
 * tunnel-server: the HTTP virtual-host reverse tunnel (seed 002). Public requests are routed
 * by Host to the tunnel client registered for that host; clients connect over a WebSocket
 * on `/_controlPath_/` of the same port.
 *
 *   TUNNEL_ADMIN_TOKEN=… deno run -A services/tunnel-server.ts --listen 0.0.0.0:8080 \
 *     --host app.example.com=env:APP_IDENTIFIER --admin 127.0.0.1:8081
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
  serveOrExit,
  serviceLogger,
} from "../lib/cli.ts";
import {
  listenTlsOrExit,
  readSecretFile,
  refusePlaceholder,
  tlsServerFlags,
  tlsServerFromFlags,
} from "../lib/cli_security.ts";
import { serveObservability, tunnelStatusProvider } from "../lib/status/mod.ts";
import { AuthFailureLimiter, errorMessage, formatAddr } from "../lib/net/mod.ts";
import {
  createAdminApp,
  normalizeHost,
  serveTunnel,
  TcpTunnelError,
  type TcpTunnelSpecServer,
  TunnelServer,
} from "../lib/tunnel/mod.ts";

// ---- flags ----
const flags = parseFlags({
  name: "tunnel-server",
  summary: "HTTP virtual-host reverse tunnel server (clients connect on /_controlPath_/)",
  flags: {
    listen: {
      type: "string",
      arg: "host:port",
      default: "127.0.0.1:8080",
      help: "public HTTP port (and the clients' control path)",
    },
    host: {
      type: "string",
      multiple: true,
      arg: "vhost=identifier",
      help: "serve vhost by the client with this identifier; identifier may be env:VAR or " +
        "file:PATH (env TUNNEL_HOSTS: comma-separated, used when no --host)",
    },
    "hosts-file": {
      type: "string",
      arg: "path",
      help: "file of 'vhost identifier' lines (# comments)",
    },
    "tls-cert": {
      ...tlsServerFlags["tls-cert"],
      help: "serve https (and wss:// for clients) with this PEM certificate chain",
    },
    "tls-key": { ...tlsServerFlags["tls-key"], help: "PEM private key of --tls-cert" },
    "tls-client-ca": {
      ...tlsServerFlags["tls-client-ca"],
      help: "mutual TLS: every connection to --listen (public https clients and tunnel " +
        "clients) must present a certificate signed by this CA (PEM)",
    },
    admin: { type: "string", arg: "host:port", help: "serve the admin API here (needs a token)" },
    "admin-token": {
      type: "string",
      arg: "token",
      env: "TUNNEL_ADMIN_TOKEN",
      help: "bearer token of the admin API",
    },
    duplicate: {
      type: "string",
      arg: "replace|refuse",
      default: "replace",
      help: "a second client with a connected identifier replaces the first, or is refused",
    },
    "tcp-ports": {
      type: "string",
      arg: "min-max",
      help: "public TCP ports clients may ask for (TCP tunnels); none by default",
    },
    tcp: {
      type: "string",
      multiple: true,
      arg: "port[:localPort]=identifier",
      help: "server-defined TCP tunnel: open public port (inside --tcp-ports) while the client " +
        "with this identifier (env:VAR or file:PATH; no --host needed) is connected, relayed " +
        "to its localPort (default: its --local; it must allow the port)",
    },
    "tcp-host": {
      type: "string",
      arg: "addr",
      default: "127.0.0.1",
      help: "address public TCP tunnel ports bind",
    },
    "response-timeout": {
      type: "string",
      arg: "ms",
      default: "60000",
      help: "answer 504 when a client or its app sends nothing back for this long",
    },
    heartbeat: {
      type: "string",
      arg: "ms",
      default: "2000",
      help: "ping clients this often; dead after 3 missed intervals",
    },
    proto: {
      type: "string",
      arg: "http|https",
      default: "http",
      help: "X-Forwarded-Proto value (https when TLS ends in front of this server)",
    },
    "trust-forwarded": {
      type: "boolean",
      help: "keep and append to incoming X-Forwarded-* (only behind a trusted proxy)",
    },
    "max-conns": { type: "string", arg: "n", default: "4096", help: "public connections at once" },
    "drain-timeout": {
      type: "string",
      arg: "ms",
      default: "5000",
      help: "on SIGINT/SIGTERM, let live connections finish this long",
    },
  },
  examples: [
    "tunnel-server --listen 0.0.0.0:8080 --host app.example.com=env:APP_ID",
    "TUNNEL_ADMIN_TOKEN=s3cret tunnel-server --admin 127.0.0.1:8081 --tcp-ports 20000-20100",
    "tunnel-server --tcp-ports 20000-20100 --tcp 20001:5432=env:DB_ID   # a TCP-only client",
  ],
});
const log = serviceLogger("tunnel-server", flags["log-level"]);

// ---- config validation ----
/** `env:VAR`, `file:PATH` or the value itself; throws with `what` in the message. */
function secretValue(v: string, what: string): string {
  if (v.startsWith("env:")) {
    const s = Deno.env.get(v.slice(4));
    if (!s) throw new Error(`${what}: environment variable ${v.slice(4)} is not set`);
    return refusePlaceholder(s, `${what} (${v.slice(4)})`);
  }
  if (v.startsWith("file:")) {
    try {
      return readSecretFile(v.slice(5));
    } catch (err) {
      throw new Error(`${what}: cannot read ${errorMessage(err)}`);
    }
  }
  return refusePlaceholder(v, what);
}

/**
 * The vhost → identifier pairs of `--host` (or TUNNEL_HOSTS) and `--hosts-file`; throws with
 * the offending flag named (at start the service exits 2, on reload the old hosts stay).
 */
function readHostSpecs(f: { host: string[]; "hosts-file"?: string }): [string, string][] {
  const specs: [string, string][] = [];
  const rawHosts = f.host.length > 0
    ? f.host
    : (Deno.env.get("TUNNEL_HOSTS") ?? "").split(",").map((s) => s.trim()).filter(Boolean);
  for (const spec of rawHosts) {
    const eq = spec.indexOf("=");
    if (eq <= 0) {
      throw new Error(
        `--host must be vhost=identifier, got ${JSON.stringify(spec.split("=")[0])}`,
      );
    }
    const vhost = spec.slice(0, eq);
    if (!normalizeHost(vhost)) throw new Error(`--host: bad host name ${JSON.stringify(vhost)}`);
    specs.push([vhost, secretValue(spec.slice(eq + 1), `--host ${vhost}`)]);
  }
  if (f["hosts-file"]) {
    let text = "";
    try {
      text = Deno.readTextFileSync(f["hosts-file"]);
    } catch (err) {
      throw new Error(`--hosts-file: ${errorMessage(err)}`);
    }
    for (const line of text.split("\n")) {
      const t = line.trim();
      if (!t || t.startsWith("#")) continue;
      const [vhost, identifier] = t.split(/\s+/);
      if (!identifier || !normalizeHost(vhost)) {
        throw new Error(`--hosts-file: bad line for ${vhost}`);
      }
      specs.push([vhost, refusePlaceholder(identifier, `--hosts-file ${vhost}`)]);
    }
  }
  for (const [vhost, identifier] of specs) {
    if (identifier.length < 8) {
      throw new Error(`--host ${vhost}: identifier must be at least 8 characters`);
    }
  }
  return specs;
}

let hostSpecs: [string, string][] = [];
try {
  hostSpecs = readHostSpecs(flags);
} catch (err) {
  fail(errorMessage(err), 2);
}
/** `--tcp port[:localPort]=identifier` values; throws naming the offending one. */
function readTcpSpecs(
  f: { tcp: string[] },
  range: { min: number; max: number } | undefined,
): TcpTunnelSpecServer[] {
  return f.tcp.map((spec) => {
    const m = /^(\d{1,5})(?::(\d{1,5}))?=(.+)$/.exec(spec);
    const publicPort = m ? Number(m[1]) : NaN;
    const localPort = m?.[2] !== undefined ? Number(m[2]) : undefined;
    if (!m || publicPort < 1 || publicPort > 65535 || (localPort ?? 1) < 1 || localPort! > 65535) {
      throw new Error(`--tcp must be port[:localPort]=identifier, got ${spec.split("=")[0]}`);
    }
    if (!range || publicPort < range.min || publicPort > range.max) {
      throw new Error(`--tcp ${publicPort}: outside --tcp-ports ${flags["tcp-ports"] ?? "(none)"}`);
    }
    const identifier = secretValue(m[3], `--tcp ${publicPort}`);
    return { publicPort, identifier, localPort };
  });
}

const listenAddr = hostPortFlag("listen", flags.listen!);
const tls = tlsServerFromFlags(flags);
const adminAddr = flags.admin ? hostPortFlag("admin", flags.admin) : undefined;
if (adminAddr && !flags["admin-token"]) {
  fail("--admin needs --admin-token (or TUNNEL_ADMIN_TOKEN)", 2);
}
const duplicate = flags.duplicate;
if (duplicate !== "replace" && duplicate !== "refuse") {
  fail("--duplicate must be replace or refuse", 2);
}
let tcpPorts: { min: number; max: number } | undefined;
if (flags["tcp-ports"]) {
  const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(flags["tcp-ports"]);
  const min = m ? Number(m[1]) : NaN;
  const max = m ? Number(m[2] ?? m[1]) : NaN;
  if (!m || min < 1 || max > 65535 || min > max) fail("--tcp-ports must be min-max", 2);
  tcpPorts = { min, max };
}
let tcpSpecs: TcpTunnelSpecServer[] = [];
try {
  tcpSpecs = readTcpSpecs(flags, tcpPorts);
} catch (err) {
  fail(errorMessage(err), 2);
}
if (flags.proto !== "http" && flags.proto !== "https") fail("--proto must be http or https", 2);
const responseTimeoutMs = intFlag("response-timeout", flags["response-timeout"], 60_000);
const heartbeatMs = intFlag("heartbeat", flags.heartbeat, 2_000);
if (heartbeatMs < 100) fail("--heartbeat must be at least 100 ms", 2);
const maxConns = intFlag("max-conns", flags["max-conns"], 4096);
const drainMs = intFlag("drain-timeout", flags["drain-timeout"], 5_000);
const metricsAddr = flags.metrics ? hostPortFlag("metrics", flags.metrics) : undefined;

// ---- wiring ----
const server = new TunnelServer({
  duplicate,
  tcpPorts,
  tcpHost: flags["tcp-host"],
  responseTimeoutMs,
  heartbeatIntervalMs: heartbeatMs,
  heartbeatTimeoutMs: heartbeatMs * 3,
  authLimiter: new AuthFailureLimiter({ burst: 10, perMinute: 30 }),
  log,
});
for (const [vhost, identifier] of hostSpecs) await server.addHost(vhost, identifier);
for (const spec of tcpSpecs) {
  try {
    server.addTcpTunnel(spec);
  } catch (err) {
    fail(`--tcp ${spec.publicPort}: ${errorMessage(err)}`, err instanceof TcpTunnelError ? 2 : 1);
  }
}

// With --tls-client-ca the listener is node:tls and hands out only connections whose client
// certificate chains to that CA; failed handshakes are logged (warn) and never reach the front.
const listener: Deno.Listener<Deno.Conn, Deno.NetAddr> = tls
  ? await listenTlsOrExit(listenAddr, tls, "http", log)
  : listenOrExit(listenAddr, "http");
const admin = adminAddr
  ? serveOrExit(
    adminAddr,
    "admin",
    log,
    createAdminApp(server, {
      token: flags["admin-token"]!,
      authLimiter: new AuthFailureLimiter(),
    }).fetch,
  )
  : undefined;
// The live status page: hosts and their clients, requests, bytes, client RTT.
const metrics = metricsAddr
  ? bindOrExit("metrics", metricsAddr, () =>
    serveObservability(metricsAddr, {
      service: "tunnel-server",
      log,
      status: async () => ({ hosts: await server.status(), clients: server.clients() }),
      providers: [tunnelStatusProvider(() => server.status(), () => server.clients())],
    }))
  : undefined;

// ---- run ----
const front = serveTunnel(listener, server, {
  maxConns,
  proto: tls ? "https" : flags.proto as "http" | "https",
  trustForwarded: flags["trust-forwarded"],
  log,
});
log.info("listening", { name: "http", addr: formatAddr(listener.addr) });
log.info("hosts", {
  count: hostSpecs.length,
  tcpPorts: flags["tcp-ports"] ?? "none",
  tls: tls ? (tls.ca ? "mutual" : "server") : "off",
});

// ---- reload (SIGHUP) ----
// Hosts and identifiers from flags/config change live (hosts added through the admin API are
// left alone); connected clients and their streams stay.
const configHosts = new Map<string, string>(hostSpecs.map(([h, id]) => [normalizeHost(h)!, id]));
const configTcp = new Map<number, TcpTunnelSpecServer>(tcpSpecs.map((t) => [t.publicPort, t]));
onReload<typeof flags>(async (next) => {
  const nextHosts = readHostSpecs(next);
  const wanted = new Map(nextHosts.map(([h, id]) => [normalizeHost(h)!, id]));
  // Validated before anything changes: a bad --tcp keeps the old hosts and tunnels.
  const nextTcp = new Map(readTcpSpecs(next, tcpPorts).map((t) => [t.publicPort, t]));
  for (const [host, id] of configHosts) {
    if (wanted.get(host) === id) continue;
    await server.removeHost(host);
    configHosts.delete(host);
  }
  for (const [host, id] of wanted) {
    if (configHosts.get(host) === id) continue;
    await server.addHost(host, id);
    configHosts.set(host, id);
  }
  log.info("hosts", { count: configHosts.size });
  // --tcp tunnels from flags/config: removed, changed and new ones (admin ones stay).
  for (const [port, t] of configTcp) {
    const n = nextTcp.get(port);
    if (n && n.identifier === t.identifier && n.localPort === t.localPort) continue;
    await server.removeTcpTunnel(port);
    configTcp.delete(port);
  }
  for (const [port, t] of nextTcp) {
    if (configTcp.has(port)) continue;
    try {
      server.addTcpTunnel(t);
      configTcp.set(port, t);
    } catch (err) {
      log.warn("tcp tunnel not added", { port, error: errorMessage(err) });
    }
  }
});

// ---- shutdown ----
onShutdown(log, async () => {
  await server.close();
  await front.stop(drainMs);
  await admin?.shutdown();
  await metrics?.shutdown();
});
