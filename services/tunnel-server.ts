/**
 * tunnel-server: the HTTP virtual-host reverse tunnel (seed 002). Public requests are routed
 * by Host to the tunnel client registered for that host; clients connect over a WebSocket
 * on `/_controlPath_/` of the same port.
 *
 *   TUNNEL_ADMIN_TOKEN=… deno run -A services/tunnel-server.ts --listen 0.0.0.0:8080 \
 *     --host app.example.com=env:APP_IDENTIFIER --admin 127.0.0.1:8081
 */

import {
  fail,
  hostPortFlag,
  intFlag,
  listenOrExit,
  onShutdown,
  parseFlags,
  serviceLogger,
} from "../lib/cli.ts";
import { serveMetrics } from "../lib/metrics.ts";
import { errorMessage, formatAddr } from "../lib/net/mod.ts";
import { createAdminApp, normalizeHost, serveTunnel, TunnelServer } from "../lib/tunnel/mod.ts";

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
      type: "string",
      arg: "path",
      help: "serve https (and wss:// for clients) with this PEM certificate chain",
    },
    "tls-key": { type: "string", arg: "path", help: "PEM private key of --tls-cert" },
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
  ],
});
const log = serviceLogger("tunnel-server", flags["log-level"]);

// ---- config validation ----
function secretValue(v: string, what: string): string {
  if (v.startsWith("env:")) {
    const s = Deno.env.get(v.slice(4));
    if (!s) fail(`${what}: environment variable ${v.slice(4)} is not set`, 2);
    return s;
  }
  if (v.startsWith("file:")) {
    try {
      return Deno.readTextFileSync(v.slice(5)).trim();
    } catch (err) {
      fail(`${what}: cannot read ${v.slice(5)}: ${errorMessage(err)}`, 2);
    }
  }
  return v;
}

const hostSpecs: [string, string][] = [];
const rawHosts = flags.host.length > 0
  ? flags.host
  : (Deno.env.get("TUNNEL_HOSTS") ?? "").split(",").map((s) => s.trim()).filter(Boolean);
for (const spec of rawHosts) {
  const eq = spec.indexOf("=");
  if (eq <= 0) {
    fail(`--host must be vhost=identifier, got ${JSON.stringify(spec.split("=")[0])}`, 2);
  }
  const vhost = spec.slice(0, eq);
  if (!normalizeHost(vhost)) fail(`--host: bad host name ${JSON.stringify(vhost)}`, 2);
  hostSpecs.push([vhost, secretValue(spec.slice(eq + 1), `--host ${vhost}`)]);
}
if (flags["hosts-file"]) {
  let text = "";
  try {
    text = Deno.readTextFileSync(flags["hosts-file"]);
  } catch (err) {
    fail(`--hosts-file: ${errorMessage(err)}`, 2);
  }
  for (const line of text.split("\n")) {
    const t = line.trim();
    if (!t || t.startsWith("#")) continue;
    const [vhost, identifier] = t.split(/\s+/);
    if (!identifier || !normalizeHost(vhost)) fail(`--hosts-file: bad line for ${vhost}`, 2);
    hostSpecs.push([vhost, identifier]);
  }
}
for (const [vhost, identifier] of hostSpecs) {
  if (identifier.length < 8) fail(`--host ${vhost}: identifier must be at least 8 characters`, 2);
}
const listenAddr = hostPortFlag("listen", flags.listen!);
if (!!flags["tls-cert"] !== !!flags["tls-key"]) fail("--tls-cert and --tls-key go together", 2);
let tls: { cert: string; key: string } | undefined;
if (flags["tls-cert"]) {
  try {
    tls = {
      cert: Deno.readTextFileSync(flags["tls-cert"]),
      key: Deno.readTextFileSync(flags["tls-key"]!),
    };
  } catch (err) {
    fail(`--tls-cert/--tls-key: ${errorMessage(err)}`, 2);
  }
}
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
  log,
});
for (const [vhost, identifier] of hostSpecs) await server.addHost(vhost, identifier);

let listener: Deno.TcpListener | Deno.TlsListener;
if (tls) {
  try {
    listener = Deno.listenTls({ hostname: listenAddr.host, port: listenAddr.port, ...tls });
  } catch (err) {
    if (err instanceof Deno.errors.AddrInUse) {
      fail(`http: address ${listenAddr.host}:${listenAddr.port} is already in use`);
    }
    fail(
      `http: cannot listen with TLS on ${listenAddr.host}:${listenAddr.port}: ${errorMessage(err)}`,
    );
  }
} else {
  listener = listenOrExit(listenAddr, "http");
}
let admin: Deno.HttpServer<Deno.NetAddr> | undefined;
if (adminAddr) {
  const app = createAdminApp(server, { token: flags["admin-token"]! });
  try {
    admin = Deno.serve({
      hostname: adminAddr.host,
      port: adminAddr.port,
      onListen: (a) => log.info("listening", { name: "admin", addr: `${a.hostname}:${a.port}` }),
    }, app.fetch);
  } catch (err) {
    listener.close();
    if (err instanceof Deno.errors.AddrInUse) {
      fail(`admin: address ${adminAddr.host}:${adminAddr.port} is already in use`);
    }
    fail(`admin: ${errorMessage(err)}`);
  }
}
const metrics = metricsAddr
  ? serveMetrics(metricsAddr.host, metricsAddr.port, log, {
    "/status": async () =>
      Response.json({ hosts: await server.status(), clients: server.clients() }),
  })
  : undefined;

// ---- run ----
const front = serveTunnel(listener, server, {
  maxConns,
  proto: tls ? "https" : flags.proto as "http" | "https",
  trustForwarded: flags["trust-forwarded"],
  log,
});
log.info("listening", { name: "http", addr: formatAddr(listener.addr) });
log.info("hosts", { count: hostSpecs.length, tcpPorts: flags["tcp-ports"] ?? "none" });

// ---- shutdown ----
onShutdown(log, async () => {
  await server.close();
  await front.stop(drainMs);
  await admin?.shutdown();
  await metrics?.shutdown();
});
