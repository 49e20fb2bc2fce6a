/**
 * tunnel-server's flags and their validation: the one check a start, `--check-config` and a
 * reload run (host values and hosts files with their secrets, --tcp/--udp inside their port ranges, the
 * admin token, TLS files).
 * @module
 */

import { minSecretChars } from "../../lib/net/secret.ts";
import { Acl, errorMessage } from "../../lib/net/mod.ts";
import { defaultProxyProtocolFrom } from "../../lib/proxyproto/mod.ts";
import { FlagError } from "../../lib/config/mod.ts";
import { tlsServerFlags, tlsServerFromFlags } from "../../lib/cli_security.ts";
import { resolveSecret } from "../../lib/config/secret.ts";
// lib/tunnel's modules one by one, not its mod.ts: that one also loads the Hono apps (the
// embeddable front, the admin API), which a process loads only when it serves them.
import type { ClusterTls } from "../../lib/tunnel/cluster.ts";
import { HostAccess, type HostAccessSpec, parseHostAccessFlag } from "../../lib/tunnel/access.ts";
import {
  HostRewrite,
  type HostRewriteSpec,
  mergeRewriteSpecs,
  parseHostRewriteFlag,
} from "../../lib/tunnel/rewrite.ts";
import { normalizeHost } from "../../lib/tunnel/registry.ts";
import {
  parseHostSpec,
  parsePortRange,
  parseTcpSpec,
  type PortRange,
  readHostsFile,
  type TunnelConfig,
} from "../../lib/tunnel/config.ts";
import type { TlsServerConfig } from "../../lib/transport/mod.ts";
import type { ServiceFlags, ValidateContext } from "../_kit.ts";
import { clusterTlsFlags, clusterTlsFromFlags, parseRegistry } from "./cluster.ts";

/** tunnel-server's command line. */
export const command = {
  name: "tunnel-server",
  summary: "HTTP virtual-host reverse tunnel server (clients connect on /_controlPath_/)",
  flags: {
    listen: {
      kind: "hostport",
      arg: "host:port",
      default: "127.0.0.1:8080",
      help: "public HTTP port (and the clients' control path)",
    },
    host: {
      kind: "string",
      multiple: true,
      arg: "vhost=identifier",
      env: "TUNNEL_HOSTS",
      envSeparator: "comma",
      live: true,
      help: "serve vhost by the client with this identifier; identifier may be env:VAR or " +
        "file:PATH (TUNNEL_HOSTS: comma-separated)",
    },
    "hosts-file": {
      kind: "string",
      arg: "path",
      live: true,
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
    admin: { kind: "hostport", arg: "host:port", help: "serve the admin API here (needs a token)" },
    "admin-token": {
      kind: "secret",
      min: minSecretChars,
      arg: "token",
      env: "TUNNEL_ADMIN_TOKEN",
      help: "bearer token of the admin API",
    },
    domain: {
      kind: "string",
      arg: "name",
      help: "clients with an --account-token may claim name.<domain> (tunnel-client " +
        "--subdomain) or get a random free one",
    },
    "account-token": {
      kind: "string",
      multiple: true,
      arg: "token",
      env: "TUNNEL_ACCOUNT_TOKENS",
      envSeparator: "comma",
      help: "a token that may claim subdomains under --domain (env:VAR or file:PATH; one " +
        "token may hold several names)",
    },
    "subdomain-grace": {
      kind: "duration",
      default: "60s",
      help: "a claimed subdomain stays reserved for its token this long after its client left",
    },
    "host-access": {
      kind: "string",
      multiple: true,
      arg: "vhost=rule",
      help: "access rule of vhost checked before a request reaches its client (401/403): " +
        "basic:user:password, bearer:token (env:VAR or file:PATH) or allow:cidr; repeat to " +
        "combine (any credential passes, the source must be allowed)",
    },
    "host-rewrite": {
      kind: "string",
      multiple: true,
      arg: "vhost=rule",
      help: "header rewrite of vhost: host:HOST[:PORT] (the Host its app sees), " +
        "req-set|req-add|res-set|res-add:Name:value, req-remove|res-remove:Name; repeat to " +
        "combine (framing and hop-by-hop headers cannot be changed)",
    },
    "access-log": {
      kind: "choice",
      choices: ["off", "info"],
      arg: "off|info",
      default: "off",
      help: "one 'access' line per request (host, method, path without query, status, bytes " +
        "in/out, ms, request id, client fingerprint); responses are then parsed on the way out",
    },
    "idle-streams": {
      kind: "int",
      min: 0,
      arg: "n",
      default: "128",
      help: "tunnel streams kept open to each client, host and local port after their public " +
        "connection ended, for later public connections (no new stream or app connection " +
        "each); 0 = a new stream for every public connection",
    },
    "idle-stream-timeout": {
      kind: "duration",
      default: "4s",
      help: "a kept tunnel stream unused for this long is closed (keep it below the apps' " +
        "keep-alive timeouts)",
    },
    "state-file": {
      kind: "string",
      arg: "path",
      help: "keep hosts, TCP tunnels and access rules added through the admin API, and " +
        "subdomain claims, in this file (JSON, mode 0600: it holds identifiers), written " +
        "atomically on each change, loaded at start (with --registry, Redis keeps the rules)",
    },
    duplicate: {
      kind: "choice",
      choices: ["replace", "refuse", "balance"],
      arg: "replace|refuse|balance",
      default: "replace",
      help: "a second client with a connected identifier replaces the first, is refused, or " +
        "(balance) joins it in a group: requests are spread over the group's healthy clients",
    },
    balance: {
      kind: "choice",
      choices: ["round-robin", "least-streams"],
      arg: "round-robin|least-streams",
      default: "round-robin",
      help: "with --duplicate balance: each new tunnel stream (a public connection per host) " +
        "goes to the next client in turn, or to the one with the fewest open streams",
    },
    "tcp-ports": {
      kind: "string",
      arg: "min-max",
      help: "public TCP ports clients may ask for (TCP tunnels); none by default",
    },
    tcp: {
      kind: "string",
      multiple: true,
      arg: "port[:localPort]=identifier",
      live: true,
      help: "server-defined TCP tunnel: open public port (inside --tcp-ports) while the client " +
        "with this identifier (env:VAR or file:PATH; no --host needed) is connected, relayed " +
        "to its localPort (default: its --local; it must allow the port)",
    },
    "tcp-host": {
      kind: "string",
      arg: "addr",
      default: "127.0.0.1",
      help: "address public TCP tunnel ports bind",
    },
    "udp-ports": {
      kind: "string",
      arg: "min-max",
      help: "public UDP ports clients may ask for (UDP tunnels); none by default",
    },
    udp: {
      kind: "string",
      multiple: true,
      arg: "port[:localPort]=identifier",
      live: true,
      help: "server-defined UDP tunnel: open public port (inside --udp-ports) while the client " +
        "with this identifier is connected; each peer's datagrams go to its localPort " +
        "(default: its first --udp service; it must allow the port)",
    },
    "udp-host": {
      kind: "string",
      arg: "addr",
      default: "127.0.0.1",
      help: "address public UDP tunnel ports bind",
    },
    "udp-idle-timeout": {
      kind: "duration",
      default: "60s",
      help: "a UDP peer flow without a datagram either way for this long is closed",
    },
    "udp-max-flows": {
      kind: "int",
      min: 1,
      arg: "n",
      default: "1024",
      help: "peer flows per public UDP port (at the bound the least recently active is closed)",
    },
    "udp-max-queued": {
      kind: "int",
      min: 65536,
      arg: "bytes",
      default: String(4 * 1024 * 1024),
      help: "bytes waiting to be sent per public UDP port (more are dropped and counted)",
    },
    "response-timeout": {
      kind: "duration",
      default: "60s",
      help: "answer 504 when a client or its app sends nothing back for this long",
    },
    heartbeat: {
      kind: "duration",
      min: 100,
      default: "2s",
      help: "ping clients this often; dead after 3 missed intervals",
    },
    proto: {
      kind: "choice",
      choices: ["http", "https"],
      arg: "http|https",
      default: "http",
      help: "X-Forwarded-Proto value (https when TLS ends in front of this server)",
    },
    "trust-forwarded": {
      kind: "boolean",
      help: "keep and append to incoming X-Forwarded-* (only behind a trusted proxy)",
    },
    "proxy-protocol": {
      kind: "boolean",
      help: "the public port expects a PROXY header (v1/v2, haproxy send-proxy) on every " +
        "connection and takes the client address from it (plain TCP only)",
    },
    "tcp-send-proxy": {
      kind: "choice",
      choices: ["0", "1", "2"],
      arg: "0|1|2",
      default: "0",
      help: "send a PROXY header of this version first on every TCP tunnel connection " +
        "(the app behind the client learns the public client; 0 = off)",
    },
    "proxy-protocol-from": {
      kind: "string",
      multiple: true,
      arg: "cidr",
      help: "balancers whose PROXY headers are taken (default: loopback); others are closed",
    },
    registry: {
      kind: "string",
      arg: "redis://[:password@]host:port[/db]",
      env: "TUNNEL_REGISTRY",
      help: "keep hosts and which instance holds each client in this Redis, shared by the " +
        "instances of a cluster (rediss:// for TLS; a password is safer in TUNNEL_REGISTRY); " +
        "default: in memory",
    },
    "cluster-listen": {
      kind: "hostport",
      arg: "host:port",
      help: "take links from the other instances of a --registry cluster here (they hand it " +
        "requests for the clients this instance holds)",
    },
    advertise: {
      kind: "hostport",
      arg: "host:port",
      help: "where the other instances reach --cluster-listen (default: its bound address)",
    },
    "cluster-token": {
      kind: "secret",
      min: minSecretChars,
      arg: "token",
      env: "TUNNEL_CLUSTER_TOKEN",
      help: "shared secret of the cluster's links (every instance the same)",
    },
    ...clusterTlsFlags,
    "max-conns": { kind: "int", arg: "n", default: "4096", help: "public connections at once" },
    workers: {
      kind: "int",
      min: 1,
      max: 64,
      arg: "n",
      default: "1",
      env: "TUNNEL_WORKERS",
      help: "run n worker processes on the same ports (SO_REUSEPORT, Linux), each an instance " +
        "of the --registry cluster: a request reaching a worker that does not hold its client " +
        "is handed to the one that does over a local link (own port and token unless " +
        "--cluster-listen/--cluster-token: then worker i takes port+i-1; so it does of " +
        "--metrics/--status)",
    },
    "drain-timeout": {
      kind: "duration",
      default: "5s",
      help: "on SIGINT/SIGTERM, let live connections finish this long",
    },
  },
  examples: [
    "tunnel-server --listen 0.0.0.0:8080 --host app.example.com=env:APP_ID",
    "TUNNEL_ADMIN_TOKEN=s3cret tunnel-server --admin 127.0.0.1:8081 --tcp-ports 20000-20100",
    "tunnel-server --tcp-ports 20000-20100 --tcp 20001:5432=env:DB_ID   # a TCP-only client",
    "tunnel-server --udp-ports 20000-20100 --udp 20053:53=env:DNS_ID    # a UDP-only client",
  ],
} as const;

/** What tunnel-server runs with, beyond the typed flags. */
export interface TunnelServerServiceConfig {
  tls?: TlsServerConfig;
  tcpPorts?: PortRange;
  udpPorts?: PortRange;
  /** Hosts and TCP/UDP tunnels the config defines (TunnelServer.applyConfig). */
  routes: TunnelConfig;
  /** Tokens that may claim subdomains under --domain (resolved secrets). */
  accountTokens: string[];
  /** Access rules by host (--host-access). */
  access: Map<string, HostAccessSpec>;
  /** Header rewrites by host (--host-rewrite). */
  rewrites: Map<string, HostRewriteSpec>;
  /** `--proxy-protocol`: who may send PROXY headers (an allow list); undefined: off. */
  proxyProtocolFrom?: Acl;
  /** `--registry`: the Redis URL, and its address without the password for the log. */
  registry?: { url: string; addr: string };
  /** `--cluster-tls-*`: TLS on the links between instances. */
  clusterTls?: ClusterTls;
}

/**
 * `--workers` > 1: the workers are the instances of a cluster, so they need the shared
 * registry; each binds the public ports at a named port; the state file would have N writers
 * and a server-defined UDP port cannot be shared (each worker would hold its own flows).
 */
function checkWorkers(f: ServiceFlags<typeof command.flags>, registry: boolean): void {
  if (!registry) {
    throw new FlagError(
      "workers",
      "--workers needs --registry redis://\u2026 (the workers share which one holds each client)",
    );
  }
  if (f["state-file"]) {
    throw new FlagError("workers", "--workers: --state-file would have one writer per worker");
  }
  if (f.udp.length > 0) {
    throw new FlagError("workers", "--workers: --udp tunnels run in one process");
  }
  if ([f.listen, f.admin].some((a) => a?.port === 0)) {
    throw new FlagError("workers", "--workers: port 0 would give each worker its own port");
  }
}

/** tunnel-server's config from its flags; throws to refuse. */
export function validate(
  f: ServiceFlags<typeof command.flags>,
  ctx: ValidateContext,
): TunnelServerServiceConfig {
  if (f.admin && !f["admin-token"]) {
    throw new FlagError("admin-token", "--admin needs --admin-token (or TUNNEL_ADMIN_TOKEN)");
  }
  const tcpPorts = f["tcp-ports"]
    ? parsePortRange(f["tcp-ports"], ctx.where("tcp-ports"))
    : undefined;
  const udpPorts = f["udp-ports"]
    ? parsePortRange(f["udp-ports"], ctx.where("udp-ports"))
    : undefined;
  const routes: TunnelConfig = { hosts: new Map(), tcp: new Map(), udp: new Map() };
  for (const [host, id] of f.host.map((h) => parseHostSpec(h, ctx.where("host")))) {
    routes.hosts.set(host, id);
  }
  routes.origins = new Map();
  for (const [host, id] of f["hosts-file"] ? readHostsFile(f["hosts-file"]) : []) {
    routes.hosts.set(host, id);
    routes.origins.set(host, "file");
  }
  for (const t of f.tcp) {
    const spec = parseTcpSpec(t, tcpPorts, ctx.where("tcp"));
    routes.tcp.set(spec.publicPort, spec);
  }
  for (const t of f.udp) {
    const spec = parseTcpSpec(t, udpPorts, ctx.where("udp"), undefined, "udp");
    routes.udp!.set(spec.publicPort, spec);
  }
  const tls = tlsServerFromFlags(f);
  let proxyProtocolFrom: Acl | undefined;
  if (f["proxy-protocol"]) {
    if (tls) {
      throw new FlagError(
        "proxy-protocol",
        "--proxy-protocol is for a plain-TCP public port (the header comes before TLS)",
      );
    }
    const from = f["proxy-protocol-from"];
    try {
      proxyProtocolFrom = new Acl({ allow: from.length > 0 ? from : defaultProxyProtocolFrom });
    } catch (err) {
      throw new FlagError("proxy-protocol-from", `--proxy-protocol-from: ${errorMessage(err)}`);
    }
  } else if (f["proxy-protocol-from"].length > 0) {
    throw new FlagError("proxy-protocol-from", "--proxy-protocol-from needs --proxy-protocol");
  }
  const accountTokens = f["account-token"].map((t) => resolveSecret(t));
  if (accountTokens.some((t) => t.length < minSecretChars)) {
    throw new FlagError("account-token", `account tokens need ${minSecretChars}+ characters`);
  }
  if (f.domain !== undefined && !normalizeHost(f.domain)) {
    throw new FlagError("domain", `--domain must be a host name, got ${f.domain}`);
  }
  if (accountTokens.length > 0 && f.domain === undefined) {
    throw new FlagError("domain", "--account-token needs --domain");
  }
  const access = new Map<string, HostAccessSpec>();
  for (const v of f["host-access"]) {
    let host: string, rule: HostAccessSpec;
    try {
      [host, rule] = parseHostAccessFlag(v);
      const kind = Object.keys(rule)[0] as keyof HostAccessSpec;
      const value = rule[kind]![0];
      rule = { [kind]: [/^(env|file):/.test(value) ? resolveSecret(value) : value] };
      const spec = access.get(host) ?? {};
      spec[kind] = [...spec[kind] ?? [], ...rule[kind]!];
      new HostAccess(spec); // checked now: a bad rule refuses the start
      access.set(host, spec);
    } catch (err) {
      throw new FlagError("host-access", `${ctx.where("host-access")}: ${errorMessage(err)}`);
    }
  }
  const rewrites = new Map<string, HostRewriteSpec>();
  for (const v of f["host-rewrite"]) {
    try {
      const [host, rule] = parseHostRewriteFlag(v);
      const spec = mergeRewriteSpecs(rewrites.get(host) ?? {}, rule);
      new HostRewrite(spec); // checked now: a bad rule refuses the start
      rewrites.set(host, spec);
    } catch (err) {
      throw new FlagError("host-rewrite", `${ctx.where("host-rewrite")}: ${errorMessage(err)}`);
    }
  }
  const registry = f.registry ? parseRegistry(f.registry) : undefined;
  if ((f["cluster-listen"] || f["cluster-token"]) && !registry) {
    throw new FlagError("cluster-listen", "--cluster-listen/--cluster-token need --registry");
  }
  if ((f["cluster-listen"] || f.advertise) && !f["cluster-token"]) {
    throw new FlagError("cluster-token", "--cluster-listen needs --cluster-token");
  }
  if (f.workers > 1) checkWorkers(f, registry !== undefined);
  const clusterTls = clusterTlsFromFlags(f);
  if (clusterTls && !f["cluster-token"]) {
    throw new FlagError("cluster-tls-cert", "--cluster-tls-cert needs --cluster-token");
  }
  return {
    tls,
    tcpPorts,
    udpPorts,
    routes,
    proxyProtocolFrom,
    accountTokens,
    access,
    rewrites,
    registry,
    clusterTls,
  };
}
