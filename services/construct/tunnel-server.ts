/**
 * tunnel-server built from its validated config: the hosts, the public front (TLS when
 * configured), the admin API and the status page. services/tunnel-server.ts runs it as a
 * process; the demo in-process.
 * @module
 */

import type { Logger } from "../../lib/log.ts";
import { listenLink, listenTlsCounted } from "../../lib/cli_security.ts";
import {
  AuthFailureLimiter,
  formatAddr,
  type HostPort,
  joinHostPort,
  type Server,
  workerOwnPort,
  workerSlot,
} from "../../lib/net/mod.ts";
import { serveHttp } from "../../lib/http/mod.ts";
// lib/tunnel's modules one by one, not its mod.ts: that one also loads the Hono apps, and the
// admin API's is imported only with --admin.
import { ClusterHostRules } from "../../lib/tunnel/host_rules.ts";
import { ClusterLinks } from "../../lib/tunnel/cluster.ts";
import { type ClusterView, clusterView } from "../../lib/tunnel/cluster_view.ts";
import { normalizeHost } from "../../lib/tunnel/registry.ts";
import { RedisRegistry } from "../../lib/tunnel/redis_registry.ts";
import { serveTunnel } from "../../lib/tunnel/listen.ts";
import { SubdomainClaims } from "../../lib/tunnel/subdomains.ts";
import { TunnelServer } from "../../lib/tunnel/server.ts";
import { TunnelStateFile } from "../../lib/tunnel/state.ts";
// The server's Prometheus metrics (registered on import; lib/tunnel/mod.ts did it before).
import "../../lib/tunnel/metrics.ts";
import type { ObservabilityServer } from "../../lib/status/serve.ts";
import { tunnelStatusProvider } from "../../lib/status/tunnel.ts";
import { type ServiceFlags, workerSecret } from "../_kit.ts";
import type { command, TunnelServerServiceConfig } from "../config/tunnel-server.ts";
import { type Bind, listenAt, observeAt } from "./bind.ts";

/** A running tunnel-server. */
export interface TunnelServerService {
  server: TunnelServer;
  front: Server;
  admin?: Server;
  metrics?: ObservabilityServer;
  /** `--tcp`/`--udp` tunnels that could not be added (the service refuses to start with any). */
  failedTcp: { port: number; error: string }[];
  failedUdp: { port: number; error: string }[];
  stop(drainMs: number): Promise<void>;
}

/** The rules' digest key of a cluster without a token (digests, but no secret behind them). */
const unkeyedRulesKey = "warren-tunnel-host-rules";

/** What the plaintext-link warning of --cluster-listen names. */
const clusterFix = "--cluster-tls-cert/--cluster-tls-key (and --cluster-tls-ca for mutual TLS)";

/** Start tunnel-server; its listeners are bound through `bind`. */
export async function constructTunnelServer(
  flags: ServiceFlags<typeof command.flags>,
  cfg: TunnelServerServiceConfig,
  log: Logger,
  bind: Bind,
): Promise<TunnelServerService> {
  // With --workers each worker is an instance of the cluster, with a link port of its own (a
  // peer must reach the very worker it means) and, unless told otherwise, on loopback with
  // the supervisor's secret for a token.
  const slot = workerSlot();
  const workers = slot && slot.count > 1 ? slot : undefined;
  const given = flags["cluster-listen"] ?? (workers ? { host: "127.0.0.1", port: 0 } : undefined);
  const at = given && ownPort(given);
  const clusterL = at &&
    await bind(
      "cluster",
      at,
      () => listenLink(at, cfg.clusterTls?.server, "cluster", log, clusterFix, true),
    );
  const adv = (flags.advertise && ownPort(flags.advertise)) ??
    clusterL?.addr;
  const registry = cfg.registry && await RedisRegistry.connect({
    url: cfg.registry.url,
    leaseMs: flags.heartbeat * 3,
    advertise: adv && ("host" in adv ? joinHostPort(adv.host, adv.port) : formatAddr(adv)),
    log,
  });
  if (cfg.registry) log.info("registry", { kind: "redis", addr: cfg.registry.addr });
  const token = flags["cluster-token"] ?? (workers && workerSecret());
  if (registry && !token) {
    log.warn("no --cluster-token: the host rules' credentials are kept in redis unkeyed");
  }
  // The hosts' access rules and rewrites are the cluster's: every instance applies them.
  const rules = registry &&
    await ClusterHostRules.start(registry, { key: token || unkeyedRulesKey, log });
  const server = new TunnelServer({
    registry,
    duplicate: flags.duplicate,
    balance: flags.balance,
    tcpPorts: cfg.tcpPorts,
    tcpHost: flags["tcp-host"],
    tcpSendProxyProtocol: ({ "0": undefined, "1": 1, "2": 2 } as const)[flags["tcp-send-proxy"]],
    udpPorts: cfg.udpPorts,
    udpHost: flags["udp-host"],
    udpLimits: {
      idleTimeoutMs: flags["udp-idle-timeout"],
      maxFlows: flags["udp-max-flows"],
      maxQueuedBytes: flags["udp-max-queued"],
    },
    responseTimeoutMs: flags["response-timeout"],
    heartbeatIntervalMs: flags.heartbeat,
    heartbeatTimeoutMs: flags.heartbeat * 3,
    authLimiter: new AuthFailureLimiter({ burst: 10, perMinute: 30 }),
    log,
    rules,
    subdomains: flags.domain === undefined ? undefined : new SubdomainClaims({
      domain: normalizeHost(flags.domain),
      tokens: cfg.accountTokens,
      graceMs: flags["subdomain-grace"],
    }),
  });
  const cluster = registry && token
    ? new ClusterLinks(server, registry, { token, log, tls: cfg.clusterTls })
    : undefined;
  cluster?.attach();
  if (clusterL) {
    log.info("listening", { name: "cluster", addr: formatAddr(cluster!.listen(clusterL).addr) });
  }
  const { failedTcp, failedUdp } = await server.applyConfig(cfg.routes);
  // After the flags' routes, which win over a state entry for the same host or port.
  const state = flags["state-file"]
    ? new TunnelStateFile(flags["state-file"], server, log)
    : undefined;
  // In a cluster a flag's rule is written to Redis at start, for every instance (README).
  for (const [host, spec] of cfg.access) await server.setAccess(host, spec, "flag");
  for (const [host, spec] of cfg.rewrites) await server.setRewrite(host, spec, "flag");
  await state?.load();
  if (state) {
    server.onClaimsChange = () =>
      void state.save().catch(() => {
        // Logged by save ("state file not written"); the claim itself stays in force.
      });
  }
  // With --tls-client-ca the listener is node:tls and hands out only connections whose client
  // certificate chains to that CA; failed handshakes are logged (warn), never reach the front.
  const listener = cfg.tls
    ? await bind("http", flags.listen, () => listenTlsCounted(flags.listen, cfg.tls!, "http", log))
    : await listenAt(bind, "http", flags.listen);
  let admin: Server | undefined;
  if (flags.admin) {
    const { createAdminApp } = await import("../../lib/tunnel/admin.ts");
    const app = createAdminApp(server, {
      token: flags["admin-token"]!,
      authLimiter: new AuthFailureLimiter(),
      onChange: state && (() => state.save()),
    });
    admin = serveHttp(await listenAt(bind, "admin", flags.admin), app.fetch, {
      log: log.child({ listener: "admin" }),
    });
    log.info("listening", { name: "admin", addr: formatAddr(admin.addr) });
  }
  // The live status page: hosts and their clients, requests, bytes, client RTT.
  const metrics = await observeAt(bind, "metrics", flags.metrics, {
    service: "tunnel-server",
    log,
    auth: flags["status-auth"],
    status: async () => ({
      ...clusterJson(await clusterView(server)),
      unknownHosts: {
        requests: server.stats.unknownHostRequests,
        recent: server.stats.recentUnknownHosts(),
      },
    }),
    providers: [
      tunnelStatusProvider(
        () => clusterView(server),
        () => server.stats.outcomes(),
        () => server.stats.recentUnknownHosts(),
      ),
    ],
  });
  const front = serveTunnel(listener, server, {
    maxConns: flags["max-conns"],
    proto: cfg.tls ? "https" : flags.proto,
    trustForwarded: flags["trust-forwarded"],
    accessLog: flags["access-log"] === "info",
    idleStreams: flags["idle-streams"],
    idleStreamMs: flags["idle-stream-timeout"],
    acceptProxyProtocol: cfg.proxyProtocolFrom &&
      ((ip) => cfg.proxyProtocolFrom!.check({ host: ip, port: 0 }).allowed),
    log,
  });
  log.info("listening", { name: "http", addr: formatAddr(listener.addr) });
  log.info("hosts", {
    count: cfg.routes.hosts.size,
    tcpPorts: flags["tcp-ports"] ?? "none",
    udpPorts: flags["udp-ports"] ?? "none",
    tls: cfg.tls ? (cfg.tls.ca ? "mutual" : "server") : "off",
  });
  return {
    server,
    front,
    admin,
    metrics,
    failedTcp,
    failedUdp,
    stop: async (drainMs) => {
      await server.close();
      await state?.settled();
      await cluster?.close();
      await rules?.close();
      await registry?.close();
      await front.stop(drainMs);
      await admin?.stop();
      await metrics?.shutdown();
    },
  };
}

/** This worker's own port of an address given for all workers (lib/net workerOwnPort). */
function ownPort(a: HostPort): HostPort {
  return { host: a.host, port: workerOwnPort(a.port) };
}

/** The status JSON's hosts, clients and ports, and in a cluster its instances. */
function clusterJson(
  v: ClusterView,
):
  & Pick<ClusterView, "hosts" | "clients" | "ports">
  & { cluster?: Omit<ClusterView, "hosts" | "clients" | "ports"> } {
  const { hosts, clients, ports, instance, instances, registryError } = v;
  return {
    hosts,
    clients,
    ports,
    ...(instance === undefined ? {} : { cluster: { instance, instances, registryError } }),
  };
}
