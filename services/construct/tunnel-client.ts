/**
 * tunnel-client built from its validated config: the client, running (it connects and
 * reconnects until stopped or replaced), its metrics and status page.
 * services/tunnel-client.ts runs it as a process; the demo in-process.
 * @module
 */

import type { Logger } from "../../lib/log.ts";
import { formatAddr, isLoopbackHost, joinHostPort } from "../../lib/net/mod.ts";
import { collectedCounter, gauge } from "../../lib/stats.ts";
import type { ObservabilityServer } from "../../lib/status/serve.ts";
import {
  type TunnelClientStatus,
  tunnelClientStatusProvider,
} from "../../lib/status/tunnel_client.ts";
import { TunnelClient, type TunnelClientOptions } from "../../lib/tunnel/client.ts";
import type { ServiceFlags } from "../_kit.ts";
import type { command, TunnelClientServiceConfig } from "../config/tunnel-client.ts";
import { type Bind, listenAt, observeAt } from "./bind.ts";

/** A running tunnel-client. */
export interface TunnelClientService {
  client: TunnelClient;
  metrics?: ObservabilityServer;
  /** Resolves when the client stops: stopped, or replaced by another with its identifier. */
  done: Promise<void>;
  stop(): Promise<void>;
}

/** Start tunnel-client; `onConnected` is told of each handshake (the demo waits for one). */
export async function constructTunnelClient(
  flags: ServiceFlags<typeof command.flags>,
  cfg: TunnelClientServiceConfig,
  log: Logger,
  bind: Bind,
  onConnected?: TunnelClientOptions["onConnected"],
): Promise<TunnelClientService> {
  const ac = new AbortController();
  // --inspect: every HTTP stream relayed to the local app is tapped into a bounded ring. The
  // inspector (its capture, page and server) is imported only then.
  const inspect = flags.inspect ? await import("../../lib/inspect/mod.ts") : undefined;
  const inspector = inspect
    ? new inspect.Inspector({
      maxRequests: flags["inspect-requests"],
      bodyBytes: flags["inspect-body-bytes"],
    })
    : undefined;
  const client = new TunnelClient({
    server: cfg.server,
    servers: cfg.servers,
    identifier: cfg.identifier,
    access: cfg.access,
    rewrite: cfg.rewrite,
    local: flags.local,
    allowPorts: flags["allow-port"],
    tcp: cfg.tcp,
    udp: cfg.udp,
    transport: flags.transport,
    tls: cfg.tls,
    proxy: cfg.proxy,
    heartbeatIntervalMs: flags.heartbeat,
    heartbeatTimeoutMs: flags.heartbeat * 3,
    backoff: { initialMs: 250, maxMs: flags["backoff-max"] },
    authFailExitAfter: flags["keep-trying"] ? 0 : undefined,
    subdomain: flags["random-subdomain"] ? "*" : flags.subdomain,
    healthCheck: flags["health-check"] === undefined ? undefined : {
      path: flags["health-check"],
      intervalMs: flags["health-interval"],
      timeoutMs: flags["health-timeout"],
      failures: flags["health-failures"],
    },
    log,
    signal: ac.signal,
    onConnected,
    tap: inspector?.tap,
  });
  gauge("warren_tunnel_client_connected", "1 while connected to the server", [], function () {
    this.set(client.state === "connected" ? 1 : 0);
  });
  collectedCounter("warren_tunnel_client_streams_total", "Tunnel streams served", [], () => [[
    {},
    client.streams,
  ]]);
  collectedCounter("warren_tunnel_client_connects_total", "Sessions established", [], () => [[
    {},
    client.connects,
  ]]);
  // /status and the live status page: connection state, reconnects, streams by outcome.
  const status = (): TunnelClientStatus => ({
    state: client.state,
    server: client.serverUrl,
    publicUrls: client.publicUrls,
    local: joinHostPort(flags.local.host, flags.local.port),
    rttMs: client.rttMs,
    connects: client.connects,
    streams: client.streams,
    relayed: client.relayed,
    failuresByReason: { ...client.failuresByReason },
    recentFailures: [...client.recentFailures],
    ...(flags["health-check"] === undefined
      ? {}
      : { health: client.healthy ? "healthy" : "out of rotation" } as const),
  });
  const metrics = await observeAt(bind, "metrics", flags.metrics, {
    service: "tunnel-client",
    log,
    auth: flags["status-auth"],
    status,
    providers: [tunnelClientStatusProvider(status)],
  });
  const inspectAt = flags.inspect && inspect && inspector
    ? inspect.serveInspector(await listenAt(bind, "inspect", flags.inspect), inspector, { log })
    : undefined;
  if (inspectAt) {
    const addr = formatAddr(inspectAt.addr);
    log.info("listening", { name: "inspect", addr, url: `http://${addr}/` });
  }
  if (flags.inspect && !isLoopbackHost(flags.inspect.host)) {
    log.warn("the inspector is reachable beyond this machine: it shows request headers and bodies");
  }
  log.info("starting", {
    server: [cfg.server, ...cfg.servers].join(","),
    local: joinHostPort(flags.local.host, flags.local.port),
    tcp: cfg.tcp.length,
  });
  const done = client.run();
  return {
    client,
    metrics,
    done,
    stop: async () => {
      ac.abort();
      await done;
      await metrics?.shutdown();
      await inspectAt?.stop();
    },
  };
}
