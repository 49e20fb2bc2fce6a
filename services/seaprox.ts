/**
 * seaprox: static, SOCKS5 and HTTP proxy listeners given as URLs, any number at once,
 * optionally chained through an upstream SOCKS5 proxy (seed 003), and seaprox-to-seaprox
 * links: `--listen link://` accepts mux sessions from other nodes, `--via link://` carries
 * every outgoing connection as one stream over a long-lived session to such a node.
 *
 *   deno run -A services/seaprox.ts --listen socks5://127.0.0.1:1080 \
 *     --listen http://user:pass@127.0.0.1:8080 --listen static://127.0.0.1:9000?to=example.org:80
 */

import {
  bindOrExit,
  fail,
  intFlag,
  onReload,
  onShutdown,
  parseFlags,
  serviceLogger,
} from "../lib/cli.ts";
import { counter, gauge } from "../lib/stats.ts";
import { serveObservability, type StatusProvider } from "../lib/status/mod.ts";
import { formatAddr, type HostPort, parseHostPort, type Server } from "../lib/net/mod.ts";
import { hostPortFlag } from "../lib/cli.ts";
import {
  isLoopbackHost,
  listenMaybeTls,
  secretFileFlag,
  secretFromFlags,
  tlsClientFlags,
  tlsClientFromFlags,
  tlsServerFlags,
  tlsServerFromFlags,
  transportFlags,
  transportFromFlags,
} from "../lib/cli_security.ts";
import { Acl, AclError, AuthFailureLimiter } from "../lib/net/mod.ts";
import {
  dialerFor,
  type ForwardSpec,
  LinkClient,
  ListenError,
  type ListenerSpec,
  parseForwardUrl,
  parseListenUrl,
  type ProxyServer,
  ProxyUrlError,
  type Seaprox,
  serveLink,
  startSeaprox,
} from "../lib/proxy/mod.ts";

// ---- flags ----
const flags = parseFlags({
  name: "seaprox",
  summary: "static, SOCKS5 and HTTP proxy listeners by URL, optionally chained via SOCKS5",
  flags: {
    listen: {
      type: "string",
      multiple: true,
      arg: "url",
      help: "static://host:port?to=host:port | socks5://[user:pass@]host:port | " +
        "http://[user:pass@]host:port | link://host:port (accept seaprox links); " +
        "env SEAPROX_LISTEN (space-separated) if absent",
    },
    via: {
      type: "string",
      arg: "link://host:port",
      help: "carry every outgoing connection over a seaprox link to that node",
      env: "SEAPROX_VIA",
    },
    "link-token": {
      type: "string",
      arg: "secret",
      help: "shared secret of link:// peers (required with link:// or --via)",
      env: "SEAPROX_LINK_TOKEN",
    },
    "link-token-file": secretFileFlag("link token"),
    ...tlsServerFlags,
    ...tlsClientFlags,
    ...transportFlags,
    allow: {
      type: "string",
      multiple: true,
      arg: "rule",
      help: "only these destinations: CIDR, host glob, [:ports] (10.0.0.0/8:443, *.internal)",
    },
    deny: {
      type: "string",
      multiple: true,
      arg: "rule",
      help: "never these destinations (checked on resolved addresses too; deny wins)",
    },
    "allow-open": {
      type: "boolean",
      help: "allow a SOCKS5/HTTP listener without user:pass on a non-loopback address",
    },
    forward: {
      type: "string",
      arg: "socks5://[user:pass@]host:port",
      help: "send every outgoing connection through this upstream SOCKS5 proxy",
      env: "SEAPROX_FORWARD",
    },
    "prefer-ipv6": { type: "boolean", help: "try IPv6 addresses first when dialling (default)" },
    "prefer-ipv4": { type: "boolean", help: "try IPv4 addresses first when dialling" },
    "max-conns": {
      type: "string",
      arg: "n",
      default: "1024",
      help: "connections at once across all listeners; more are closed at once",
    },
    "idle-timeout": {
      type: "string",
      arg: "ms",
      default: "300000",
      help: "close a relayed connection idle this long (0 = never)",
    },
    "handshake-timeout": {
      type: "string",
      arg: "ms",
      default: "10000",
      help: "close a client that has not finished its proxy handshake by then (0 = off)",
    },
    "dial-timeout": {
      type: "string",
      arg: "ms",
      default: "10000",
      help: "give up reaching a destination after this long",
    },
    "drain-timeout": {
      type: "string",
      arg: "ms",
      default: "5000",
      help: "on SIGINT/SIGTERM, let live connections finish this long",
    },
  },
  examples: [
    "seaprox --listen socks5://127.0.0.1:1080",
    "seaprox --listen 'static://127.0.0.1:9000?to=example.org:80' --prefer-ipv4",
    "seaprox --listen http://alice:s3cret@127.0.0.1:8080 --forward socks5://10.0.0.2:1080",
  ],
});
const log = serviceLogger("seaprox", flags["log-level"]);

// ---- config validation ----
const urls = flags.listen.length > 0
  ? flags.listen
  : (Deno.env.get("SEAPROX_LISTEN") ?? "").split(/\s+/).filter(Boolean);
if (urls.length === 0) fail("at least one --listen URL is required (see --help)", 2);
/** `link://host:port` → its address; the link scheme is served here, not by startSeaprox. */
const linkAddr = (url: string, flag: string): HostPort => {
  try {
    return parseHostPort(url.slice("link://".length).replace(/\/$/, ""));
  } catch {
    fail(`--${flag}: not link://host:port: ${url}`, 2);
  }
};
const linkListens = urls.filter((u) => u.startsWith("link://")).map((u) => linkAddr(u, "listen"));
const via = flags.via ? linkAddr(flags.via, "via") : undefined;
if (flags.via && !flags.via.startsWith("link://")) fail("--via must be a link:// URL", 2);
const linkToken = secretFromFlags(flags["link-token"], flags["link-token-file"], {
  flag: "link-token",
  log,
});
const linkTlsServer = tlsServerFromFlags(flags);
const linkTlsClient = tlsClientFromFlags(flags);
const linkTransport = transportFromFlags(flags);
if (linkTlsServer && linkListens.length === 0) fail("--tls-cert is for link:// listeners", 2);
if (linkTlsClient && !via) fail("--tls/--tls-ca/--tls-client-cert are for --via link://", 2);
let acl: Acl;
try {
  acl = new Acl({ allow: flags.allow, deny: flags.deny });
} catch (err) {
  if (err instanceof AclError) fail(`--allow/--deny: ${err.message}`, 2);
  throw err;
}
if ((linkListens.length > 0 || via) && !linkToken) {
  fail("--link-token (or SEAPROX_LINK_TOKEN) is required with link:// listeners or --via", 2);
}
if (via && flags.forward) fail("--via and --forward are exclusive", 2);
let listeners: ListenerSpec[];
let forward: ForwardSpec | undefined;
try {
  listeners = urls.filter((u) => !u.startsWith("link://")).map(parseListenUrl);
  forward = flags.forward ? parseForwardUrl(flags.forward) : undefined;
} catch (err) {
  if (err instanceof ProxyUrlError) fail(err.message, 2);
  throw err;
}
/** Why `spec` must not start: an unauthenticated proxy reachable from other machines. */
const openProxyProblem = (spec: ListenerSpec): string | undefined =>
  (spec.scheme === "socks5" || spec.scheme === "http") && !spec.auth &&
    !isLoopbackHost(spec.addr.host) && !flags["allow-open"]
    ? `${spec.display}: refusing an open ${spec.scheme} proxy on a non-loopback address ` +
      `(add user:pass@ to the URL, or --allow-open if that is really intended)`
    : undefined;
for (const spec of listeners) {
  const problem = openProxyProblem(spec);
  if (problem) fail(problem, 2);
}
if (flags["prefer-ipv6"] && flags["prefer-ipv4"]) {
  fail("--prefer-ipv6 and --prefer-ipv4 are exclusive", 2);
}
const maxConns = intFlag("max-conns", flags["max-conns"], 1024);
if (maxConns < 1) fail("--max-conns must be at least 1", 2);
const idleTimeoutMs = intFlag("idle-timeout", flags["idle-timeout"], 300_000);
const handshakeTimeoutMs = intFlag("handshake-timeout", flags["handshake-timeout"], 10_000);
const dialTimeoutMs = intFlag("dial-timeout", flags["dial-timeout"], 10_000);
const drainTimeoutMs = intFlag("drain-timeout", flags["drain-timeout"], 5_000);
const metricsAddr = flags.metrics ? hostPortFlag("metrics", flags.metrics) : undefined;

// ---- metrics ----
const connsTotal = counter("seaprox_connections_total", "connections accepted", ["listener"]);
const connsActive = gauge("seaprox_connections_active", "connections open now");
const bytesIn = counter("seaprox_bytes_in_total", "bytes from clients to destinations");
const bytesOut = counter("seaprox_bytes_out_total", "bytes from destinations to clients");
const errorsTotal = counter("seaprox_errors_total", "connections that ended badly", ["reason"]);
const okEnds = new Set(["done", "idle", "closed"]);
/** Bytes of finished connections (live ones are added from their snapshots for the page). */
const closedBytes = { up: 0, down: 0 };

// ---- wiring and run ----
const link = via && linkToken
  ? new LinkClient({
    addr: via,
    token: linkToken,
    tls: linkTlsClient,
    transport: linkTransport,
    log: log.child({ link: flags.via }),
  })
  : undefined;
let proxy: Seaprox;
try {
  proxy = await startSeaprox({
    listeners,
    forward,
    dialer: link?.dial,
    acl,
    allowOpen: flags["allow-open"],
    prefer: flags["prefer-ipv4"] ? "ipv4" : "ipv6",
    maxConns,
    idleTimeoutMs,
    handshakeTimeoutMs,
    dialTimeoutMs,
    log,
    hooks: {
      onOpen: (c) => {
        connsTotal.inc({ listener: c.scheme });
        connsActive.inc();
      },
      onClose: (r) => {
        if (r.end === "limit") {
          connsTotal.inc({ listener: r.scheme });
        } else {
          connsActive.dec();
        }
        bytesIn.inc(r.bytesUp);
        bytesOut.inc(r.bytesDown);
        closedBytes.up += r.bytesUp;
        closedBytes.down += r.bytesDown;
        if (!okEnds.has(r.end)) {
          errorsTotal.inc({ reason: r.failure ? `${r.end}:${r.failure}` : r.end });
        }
      },
    },
  });
} catch (err) {
  if (err instanceof ListenError) fail(err.message, 1);
  throw err;
}
if (forward) log.info("forwarding via upstream", { upstream: forward.display });
if (via) {
  log.info("outgoing connections via link", {
    link: flags.via,
    tls: linkTlsClient ? "on" : "off",
  });
}
if (!acl.empty) log.info("destination access control", { acl: acl.describe() });
// Link listeners dial destinations themselves, directly or through --forward (ACL applies).
const linkLimiter = new AuthFailureLimiter();
const linkServers: Server[] = [];
for (const addr of linkListens) {
  const l = await listenMaybeTls(addr, linkTlsServer, "link listener", log);
  log.info("listening", {
    name: "link",
    addr: formatAddr(l.addr),
    tls: linkTlsServer ? (linkTlsServer.ca ? "mutual" : "server") : "off",
  });
  linkServers.push(serveLink(l, {
    token: linkToken!,
    authLimiter: linkLimiter,
    dialer: dialerFor({
      listeners: [],
      acl,
      forward,
      prefer: flags["prefer-ipv4"] ? "ipv4" : "ipv6",
      dialTimeoutMs,
    }),
    dialTimeoutMs,
    idleTimeoutMs,
    maxConns,
    transport: linkTransport,
    log: log.child({ listener: "link" }),
  }));
}
const startedMs = Date.now();
const metrics = metricsAddr
  ? bindOrExit("metrics", metricsAddr, () =>
    serveObservability(metricsAddr, {
      service: "seaprox",
      log,
      // Live connections with both sides' states and byte counts (no secrets: users only).
      status: () => ({
        uptimeMs: Date.now() - startedMs,
        maxConns,
        listeners: proxy.servers.map((s, i) => ({
          url: proxy.specs[i].display,
          addr: formatAddr(s.addr),
          ...s.server.stats,
        })),
        connections: proxy.table.list().map((c) => c.snapshot()),
      }),
      providers: [statusProvider()],
    }))
  : undefined;

/** The live status page: listeners, connections, and connection/byte-rate charts. */
function statusProvider(): StatusProvider {
  return () => {
    const conns = proxy.table.list().map((c) => c.snapshot());
    const up = closedBytes.up + conns.reduce((s, c) => s + c.bytesUp, 0);
    const down = closedBytes.down + conns.reduce((s, c) => s + c.bytesDown, 0);
    return {
      tables: [{
        title: "listeners",
        columns: ["url", "addr", "active", "total", "rejected"],
        rows: [
          ...proxy.servers.map((s, i) => [
            proxy.specs[i].display,
            formatAddr(s.addr),
            s.server.stats.active,
            s.server.stats.total,
            s.server.stats.rejected,
          ]),
          ...linkServers.map((
            s,
          ) => ["link://", formatAddr(s.addr), s.stats.active, s.stats.total, s.stats.rejected]),
        ],
      }, {
        title: "connections",
        columns: ["id", "scheme", "from → to", "up bytes", "down bytes", "age s"],
        rows: conns.slice(0, 200).map((c) => [
          c.id,
          c.scheme,
          c.description,
          c.bytesUp,
          c.bytesDown,
          Math.round(c.ageMs / 1000),
        ]),
      }],
      series: [
        { chart: "connections", name: "active", value: conns.length },
        { chart: "bytes/s", name: "in (client→dest)", value: up, kind: "rate" },
        { chart: "bytes/s", name: "out (dest→client)", value: down, kind: "rate" },
      ],
    };
  };
}

// ---- reload (SIGHUP) ----
// Proxy listeners given by URL are added and removed; connections of a removed listener go
// on until they end. Link listeners and the other flags need a restart.
const listenUrl = new Map<ProxyServer, string>(
  proxy.servers.map((s, i) => [s, urls.filter((u) => !u.startsWith("link://"))[i]]),
);
onReload<typeof flags>(async (next) => {
  const nextUrls = next.listen.length > 0
    ? next.listen
    : (Deno.env.get("SEAPROX_LISTEN") ?? "").split(/\s+/).filter(Boolean);
  const wanted = nextUrls.filter((u) => !u.startsWith("link://"));
  if (wanted.length === 0 && linkServers.length === 0) throw new Error("no listener left");
  const specs = new Map<string, ListenerSpec>();
  for (const u of wanted) specs.set(u, parseListenUrl(u)); // throws ProxyUrlError: refused
  for (const spec of specs.values()) {
    const problem = openProxyProblem(spec);
    if (problem) throw new Error(problem);
  }
  const current = new Set(listenUrl.values());
  const added: ProxyServer[] = [];
  try {
    for (const [u, spec] of specs) {
      if (current.has(u)) continue;
      const server = await proxy.add(spec);
      listenUrl.set(server, u);
      added.push(server);
    }
  } catch (err) {
    // All or nothing: undo what this reload bound.
    for (const s of added) {
      listenUrl.delete(s);
      await proxy.remove(s, 0);
    }
    throw err;
  }
  for (const [server, u] of [...listenUrl]) {
    if (specs.has(u)) continue;
    listenUrl.delete(server);
    await proxy.remove(server);
  }
});

// ---- shutdown ----
onShutdown(log, async () => {
  await Promise.all([
    proxy.stop(drainTimeoutMs),
    ...linkServers.map((s) => s.stop(drainTimeoutMs)),
  ]);
  await link?.close();
  await metrics?.shutdown();
});
