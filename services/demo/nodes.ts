/**
 * The demo's services, in this process: each is configured by its own command and
 * `validate` ({@linkcode configure}) and wired from the same lib constructors, options and
 * defaults as its script in services/ (keep them in step), with `--metrics` becoming its
 * live status page. Nothing here is a test double.
 * @module
 */

import { Logger, type LogLevel } from "../../lib/log.ts";
import { listenLink } from "../../lib/cli_security.ts";
import { AuthFailureLimiter, type HostPort, serve, type Server } from "../../lib/net/mod.ts";
import {
  dialerFor,
  directDialer,
  SeaproxStats,
  serveLink,
  startChain,
  startSeaprox,
} from "../../lib/proxy/mod.ts";
import { DepotLocal, DepotServer } from "../../lib/depot/mod.ts";
import { serveTunnel, TunnelClient, TunnelServer } from "../../lib/tunnel/mod.ts";
import { FusionClient, FusionServer, livePathMetrics } from "../../lib/fusion/mod.ts";
import {
  depotStatusProvider,
  fusionStatusProvider,
  listenersStatusProvider,
  type ObservabilityOptions,
  type ObservabilityServer,
  seaproxStatusJson,
  seaproxStatusProvider,
  serveObservability,
  tunnelStatusProvider,
} from "../../lib/status/mod.ts";
import * as seaproxConfig from "../config/seaprox.ts";
import * as depotServerConfig from "../config/depot-server.ts";
import * as depotLocalConfig from "../config/depot-local.ts";
import * as tunnelServerConfig from "../config/tunnel-server.ts";
import * as tunnelClientConfig from "../config/tunnel-client.ts";
import * as fusionServerConfig from "../config/fusion-server.ts";
import * as fusionClientConfig from "../config/fusion-client.ts";
import { configure } from "./configure.ts";

/** One running service of the demo. */
export interface DemoNode {
  name: string;
  /** Its live status page (`--serve` only). */
  page?: string;
  stop(): Promise<void>;
}

/** What every node is started with. */
export interface NodeContext {
  level: LogLevel;
  /** Serve each node's status page (`--metrics 127.0.0.1:0`). */
  pages: boolean;
  /** The environment the nodes read their secrets from. */
  env: Record<string, string>;
}

/** How long a node's connections may finish when the demo stops. */
const drainMs = 200;

const pageArgs = (ctx: NodeContext) => ctx.pages ? ["--metrics", "127.0.0.1:0"] : [];

function observe(
  addr: HostPort | undefined,
  opts: ObservabilityOptions,
): { server?: ObservabilityServer; page?: string } {
  if (!addr) return {};
  const server = serveObservability(addr, opts);
  return { server, page: `http://127.0.0.1:${server.addr.port}/` };
}

/** A seaprox node (services/seaprox.ts): proxy listeners, link listeners, its hop chain. */
export async function startSeaproxNode(name: string, args: string[], ctx: NodeContext) {
  const log = new Logger(ctx.level, { svc: name });
  const { flags, cfg } = await configure(
    seaproxConfig.command,
    seaproxConfig.validate,
    [...args, ...pageArgs(ctx)],
    ctx.env,
    log,
  );
  const chain = cfg.hops.length > 0
    ? startChain(cfg.hops, {
      base: directDialer({ prefer: cfg.prefer, timeoutMs: flags["dial-timeout"] }),
      link: {
        token: flags["link-token"] ?? "",
        tls: cfg.tlsClient,
        transport: flags.transport,
        log: log.child({ link: cfg.hops.find((h) => h.scheme === "link")?.display }),
      },
    })
    : undefined;
  const stats = new SeaproxStats();
  const shared = {
    acl: cfg.acl,
    dialer: chain?.dial,
    prefer: cfg.prefer,
    maxConns: flags["max-conns"],
    dialTimeoutMs: flags["dial-timeout"],
  };
  const proxy = await startSeaprox({
    ...shared,
    listeners: cfg.listeners,
    allowOpen: flags["allow-open"],
    idleTimeoutMs: flags["idle-timeout"],
    handshakeTimeoutMs: flags["handshake-timeout"],
    log,
    hooks: stats.hooks,
  });
  const linkLimiter = new AuthFailureLimiter();
  const links: Server[] = [];
  for (const addr of cfg.linkListens) {
    links.push(serveLink(await listenLink(addr, cfg.tlsServer, "link listener", log), {
      maxConns: shared.maxConns,
      dialTimeoutMs: shared.dialTimeoutMs,
      transport: flags.transport,
      token: flags["link-token"]!,
      authLimiter: linkLimiter,
      dialer: dialerFor({ ...shared, listeners: [] }),
      idleTimeoutMs: flags["idle-timeout"],
      log: log.child({ listener: "link" }),
    }));
  }
  const status = { proxy, links, stats, maxConns: flags["max-conns"], startedMs: Date.now() };
  const obs = observe(flags.metrics, {
    service: name,
    log,
    status: () => seaproxStatusJson(status),
    providers: [seaproxStatusProvider(status)],
  });
  return {
    name,
    page: obs.page,
    ports: proxy.servers.map((s) => s.addr.port),
    linkPorts: links.map((s) => s.addr.port),
    stop: async () => {
      await Promise.all([proxy.stop(drainMs), ...links.map((s) => s.stop(drainMs))]);
      await chain?.close();
      await obs.server?.shutdown();
    },
  };
}

/** depot-server (services/depot-server.ts): SOCKS5 here, exits at depot-locals. */
export async function startDepotServerNode(args: string[], ctx: NodeContext) {
  const log = new Logger(ctx.level, { svc: "depot-server" });
  const { flags, cfg } = await configure(
    depotServerConfig.command,
    depotServerConfig.validate,
    [...args, ...pageArgs(ctx)],
    ctx.env,
    log,
  );
  const listen = (a: HostPort) => Deno.listen({ hostname: a.host, port: a.port });
  const listeners = {
    control: await listenLink(flags.control, cfg.tls, "control", log),
    socks: listen(flags.socks),
    tunnel: await listenLink(flags.tunnel, cfg.tls, "tunnel", log),
  };
  const server = new DepotServer({
    transport: flags.transport,
    token: cfg.token,
    authLimiter: new AuthFailureLimiter(),
    defaultExit: cfg.defaultExit,
    heartbeatMs: flags.heartbeat,
    pendingTimeoutMs: flags["pending-timeout"],
    maxPending: flags["max-pending"],
    idleTimeoutMs: flags["idle-timeout"],
    maxConns: flags["max-conns"],
    log,
  });
  server.start(listeners);
  const obs = observe(flags.metrics, {
    service: "depot-server",
    log,
    status: () => server.status(),
    providers: [depotStatusProvider(() => server.status()), listenersStatusProvider()],
  });
  return {
    name: "depot-server",
    page: obs.page,
    addrs: server.addrs,
    stop: async () => {
      await server.stop(drainMs);
      await obs.server?.shutdown();
    },
  };
}

/** depot-local (services/depot-local.ts); resolves once it is connected to its server. */
export async function startDepotLocalNode(args: string[], ctx: NodeContext) {
  const log = new Logger(ctx.level, { svc: "depot-local" });
  const { flags, cfg } = await configure(
    depotLocalConfig.command,
    depotLocalConfig.validate,
    [...args, ...pageArgs(ctx)],
    ctx.env,
    log,
  );
  const local = new DepotLocal({
    transport: flags.transport,
    server: flags.server,
    tunnel: flags.tunnel,
    token: flags.token ?? "",
    tls: cfg.tls,
    name: flags.name,
    socksPassword: cfg.socksPassword,
    dialTimeoutMs: flags["dial-timeout"],
    idleTimeoutMs: flags["idle-timeout"],
    mux: flags.mux,
    spareTunnels: flags["spare-tunnels"],
    acl: cfg.acl.empty ? undefined : cfg.acl,
    backoff: { maxMs: Math.max(250, flags["backoff-max"]) },
    log,
  });
  const obs = observe(flags.metrics, {
    service: `depot-local ${flags.name}`,
    log,
    status: () => local.status(),
  });
  const running = local.run();
  const stop = async () => {
    await local.stop();
    await running;
    await obs.server?.shutdown();
  };
  await local.waitConnected(true).catch(async (err) => {
    await stop();
    throw err;
  });
  return { name: "depot-local", page: obs.page, stop };
}

/** tunnel-server (services/tunnel-server.ts): the public HTTP front and its hosts. */
export async function startTunnelServerNode(args: string[], ctx: NodeContext) {
  const log = new Logger(ctx.level, { svc: "tunnel-server" });
  const { flags, cfg } = await configure(
    tunnelServerConfig.command,
    tunnelServerConfig.validate,
    [...args, ...pageArgs(ctx)],
    ctx.env,
    log,
  );
  const server = new TunnelServer({
    duplicate: flags.duplicate,
    tcpPorts: cfg.tcpPorts,
    tcpHost: flags["tcp-host"],
    responseTimeoutMs: flags["response-timeout"],
    heartbeatIntervalMs: flags.heartbeat,
    heartbeatTimeoutMs: flags.heartbeat * 3,
    authLimiter: new AuthFailureLimiter({ burst: 10, perMinute: 30 }),
    log,
  });
  await server.applyConfig(cfg.routes);
  const listener = Deno.listen({ hostname: flags.listen.host, port: flags.listen.port });
  const front = serveTunnel(listener, server, {
    maxConns: flags["max-conns"],
    proto: flags.proto,
    trustForwarded: flags["trust-forwarded"],
    log,
  });
  const obs = observe(flags.metrics, {
    service: "tunnel-server",
    log,
    status: async () => ({ hosts: await server.status(), clients: server.clients() }),
    providers: [tunnelStatusProvider(() => server.status(), () => server.clients())],
  });
  return {
    name: "tunnel-server",
    page: obs.page,
    port: front.addr.port,
    stop: async () => {
      await server.close();
      await front.stop(drainMs);
      await obs.server?.shutdown();
    },
  };
}

/** tunnel-client (services/tunnel-client.ts); resolves once it is connected. */
export async function startTunnelClientNode(args: string[], ctx: NodeContext) {
  const log = new Logger(ctx.level, { svc: "tunnel-client" });
  const { flags, cfg } = await configure(
    tunnelClientConfig.command,
    tunnelClientConfig.validate,
    [...args, ...pageArgs(ctx)],
    ctx.env,
    log,
  );
  const ac = new AbortController();
  let connected: () => void = () => {};
  const ready = new Promise<void>((resolve) => connected = resolve);
  const client = new TunnelClient({
    server: cfg.server,
    identifier: cfg.identifier,
    local: flags.local,
    allowPorts: flags["allow-port"],
    tcp: cfg.tcp,
    transport: flags.transport,
    tls: cfg.tls,
    heartbeatIntervalMs: flags.heartbeat,
    heartbeatTimeoutMs: flags.heartbeat * 3,
    backoff: { initialMs: 250, maxMs: flags["backoff-max"] },
    log,
    signal: ac.signal,
    onConnected: () => connected(),
  });
  const obs = observe(flags.metrics, {
    service: "tunnel-client",
    log,
    status: () => ({ state: client.state, connects: client.connects, streams: client.streams }),
  });
  const done = client.run();
  const stop = async () => {
    ac.abort();
    await done;
    await obs.server?.shutdown();
  };
  await withDeadline(ready, connectWaitMs, "tunnel-client: not connected").catch(async (err) => {
    await stop();
    throw err;
  });
  return { name: "tunnel-client", page: obs.page, stop };
}

/** fusion-server (services/fusion-server.ts): joins paths, one target connection each. */
export async function startFusionServerNode(args: string[], ctx: NodeContext) {
  const log = new Logger(ctx.level, { svc: "fusion-server" });
  const { flags, cfg } = await configure(
    fusionServerConfig.command,
    fusionServerConfig.validate,
    [...args, ...pageArgs(ctx)],
    ctx.env,
    log,
  );
  const fusion = new FusionServer({
    transport: flags.transport,
    token: cfg.token,
    target: flags.target,
    ...cfg.session,
    maxSessions: flags["max-sessions"],
    maxPathsPerSession: flags["max-paths"],
    authLimiter: new AuthFailureLimiter(),
    log,
  });
  const listener = await listenLink(flags.listen, cfg.tls, "listen", log);
  const server = serve(listener, fusion.handle, {
    maxConns: flags["max-sessions"] * flags["max-paths"],
    log,
    handshakeTimeoutMs: 10_000,
  });
  const sessions = () => [...fusion.sessions.values()].map((s) => s.status());
  if (flags.metrics) livePathMetrics(sessions);
  const obs = observe(flags.metrics, {
    service: "fusion-server",
    log,
    status: () => ({ sessions: sessions(), recent: fusion.recent }),
    providers: [listenersStatusProvider(), fusionStatusProvider(sessions)],
  });
  return {
    name: "fusion-server",
    page: obs.page,
    port: server.addr.port,
    stop: async () => {
      await server.stop(drainMs);
      await fusion.close();
      await obs.server?.shutdown();
    },
  };
}

/** fusion-client (services/fusion-client.ts): each accepted connection over every path. */
export async function startFusionClientNode(args: string[], ctx: NodeContext) {
  const log = new Logger(ctx.level, { svc: "fusion-client" });
  const { flags, cfg } = await configure(
    fusionClientConfig.command,
    fusionClientConfig.validate,
    [...args, ...pageArgs(ctx)],
    ctx.env,
    log,
  );
  const client = new FusionClient({
    transport: flags.transport,
    paths: cfg.paths,
    token: cfg.token,
    tls: cfg.tls,
    ...cfg.session,
    log,
  });
  const listener = Deno.listen({ hostname: flags.listen.host, port: flags.listen.port });
  const server = serve(listener, client.handle, {
    maxConns: flags["max-conns"],
    log,
    handshakeTimeoutMs: 0,
  });
  const sessions = () => [...client.sessions].map((s) => s.status());
  if (flags.metrics) livePathMetrics(sessions);
  const obs = observe(flags.metrics, {
    service: "fusion-client",
    log,
    status: () => ({ sessions: sessions(), recent: client.recent }),
    providers: [fusionStatusProvider(sessions)],
  });
  return {
    name: "fusion-client",
    page: obs.page,
    port: server.addr.port,
    stop: async () => {
      await server.stop(drainMs);
      await client.close();
      await obs.server?.shutdown();
    },
  };
}

/** How long a client node may take to connect before the demo gives up on it. */
const connectWaitMs = 10_000;

/** `p`, or a rejection with `message` after `ms`. */
function withDeadline<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${message} within ${ms} ms`)), ms);
  });
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}
