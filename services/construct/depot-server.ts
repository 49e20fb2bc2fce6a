/**
 * depot-server built from its validated config: control, SOCKS and tunnel listeners, the
 * exits' registry, `--status` / `--metrics`. services/depot-server.ts runs it as a process;
 * the demo in-process.
 * @module
 */

import type { Logger } from "../../lib/log.ts";
import { listenLink } from "../../lib/cli_security.ts";
import {
  AuthFailureLimiter,
  formatAddr,
  type HostPort,
  joinHostPort,
  workerOwnPort,
  workerSlot,
} from "../../lib/net/mod.ts";
// lib/cluster (and with it node:crypto's HMAC) is loaded by joinCluster, with --registry only.
import type { DepotCluster } from "../../lib/cluster/mod.ts";
import { DepotServer } from "../../lib/depot/mod.ts";
import type { ObservabilityServer } from "../../lib/status/serve.ts";
import { depotStatusProvider } from "../../lib/status/depot.ts";
import { listenersStatusProvider } from "../../lib/status/json.ts";
import { type ServiceFlags, workerSecret } from "../_kit.ts";
import type { command, DepotServerServiceConfig } from "../config/depot-server.ts";
import { type Bind, listenAt, observeAt } from "./bind.ts";

/** A running depot-server. */
export interface DepotServerService {
  server: DepotServer;
  status?: ObservabilityServer;
  metrics?: ObservabilityServer;
  stop(drainMs: number): Promise<void>;
}

/** Start depot-server; every listener is bound through `bind`. */
export async function constructDepotServer(
  flags: ServiceFlags<typeof command.flags>,
  cfg: DepotServerServiceConfig,
  log: Logger,
  bind: Bind,
): Promise<DepotServerService> {
  if (cfg.token === "") {
    log.warn("no token (--allow-open): any program reaching the control port can become an exit");
  }
  // Control and tunnel connections come from depot-locals: TLS when configured. SOCKS
  // clients are local applications and stay plaintext.
  const link = (what: string, addr: typeof flags.control, own = false) =>
    bind(what, addr, () => listenLink(addr, cfg.tls, what, log, undefined, own));
  // With --workers, a local's tunnel connections must reach the worker holding its control
  // connection: each worker has a tunnel port of its own, the one its welcome announces.
  const slot = workerSlot();
  const workers = slot && slot.count > 1 ? slot : undefined;
  const listeners = {
    control: await link("control", flags.control),
    socks: await listenAt(bind, "socks", flags.socks),
    tunnel: await link("tunnel", ownPort(flags.tunnel), workers !== undefined),
  };
  const server = new DepotServer({
    transport: flags.transport,
    token: cfg.token,
    authLimiter: new AuthFailureLimiter(),
    defaultExit: cfg.defaultExit,
    heartbeatMs: flags.heartbeat,
    pendingTimeoutMs: flags["pending-timeout"],
    maxPending: flags["max-pending"],
    standbyTotal: flags["standby-total"],
    idleTimeoutMs: flags["idle-timeout"],
    udp: { idleTimeoutMs: flags["udp-idle-timeout"] },
    maxConns: flags["max-conns"],
    log,
  });
  server.start(listeners);
  for (const [name, l] of Object.entries(listeners)) {
    log.info("listening", { name, addr: formatAddr(l.addr) });
  }
  const cluster = cfg.registry && await joinCluster(flags, cfg, server, bind, log);
  log.info("link security", {
    tls: cfg.tls
      ? (cfg.tls.ca ? "mutual" : "server")
      : "off (plaintext: keep it on loopback or a trusted network)",
  });
  // --status and --metrics: the same page; it shows exits with RTT and traffic, pending
  // requests, failures, and the listeners.
  const observed = {
    service: "depot-server",
    log,
    // In a cluster, /status also shows the exits the other instances hold.
    status: () => cluster ? { ...server.status(), cluster: cluster.view() } : server.status(),
    providers: [
      depotStatusProvider(() => server.status(), cluster ? () => cluster.view() : undefined),
      listenersStatusProvider(),
    ],
    auth: flags["status-auth"],
  };
  const status = await observeAt(bind, "status", flags.status, observed);
  const metrics = await observeAt(bind, "metrics", flags.metrics, observed);
  log.info("waiting for depot-local", { defaultExit: cfg.defaultExit });
  return {
    server,
    status,
    metrics,
    stop: async (drainMs) => {
      await cluster?.close();
      await server.stop(drainMs);
      await status?.shutdown();
      await metrics?.shutdown();
    },
  };
}

/** This worker's own port of an address given for all workers (lib/net workerOwnPort). */
function ownPort(a: HostPort): HostPort {
  return { host: a.host, port: workerOwnPort(a.port) };
}

/**
 * Join the --registry cluster: the link port (with --workers each worker's own, on loopback
 * unless --cluster-listen, with the supervisor's secret unless --cluster-token) and the
 * exits' leases.
 */
async function joinCluster(
  flags: ServiceFlags<typeof command.flags>,
  cfg: DepotServerServiceConfig,
  server: DepotServer,
  bind: Bind,
  log: Logger,
): Promise<DepotCluster> {
  const given = flags["cluster-listen"] ?? { host: "127.0.0.1", port: 0 };
  const at = ownPort(given);
  const listener = await bind(
    "cluster",
    at,
    () => listenLink(at, cfg.clusterTls?.server, "cluster", log, undefined, true),
  );
  const adv = (flags.advertise && ownPort(flags.advertise)) ??
    { host: listener.addr.hostname, port: listener.addr.port };
  const { DepotCluster } = await import("../../lib/cluster/mod.ts");
  const cluster = await DepotCluster.connect(server, {
    url: cfg.registry!.url,
    token: flags["cluster-token"] ?? workerSecret() ?? "",
    advertise: joinHostPort(adv.host, adv.port),
    heartbeatMs: flags.heartbeat,
    tls: cfg.clusterTls?.client,
    log,
  });
  cluster.listen(listener);
  log.info("registry", { kind: "redis", addr: cfg.registry!.addr, instance: cluster.instance });
  log.info("listening", { name: "cluster", addr: formatAddr(listener.addr) });
  return cluster;
}
