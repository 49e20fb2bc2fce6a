/**
 * The demo's services, in this process: each is configured by its own command and
 * `validate` ({@linkcode configure}) and built by the same constructor its script runs
 * (services/construct/), with `--metrics` becoming its live status page. Nothing here is a
 * test double; only a failed bind throws instead of exiting.
 * @module
 */

import { Logger, type LogLevel } from "../../lib/log.ts";
import type { ObservabilityServer } from "../../lib/status/serve.ts";
import { within } from "../../lib/demo/mod.ts";
import * as seaprox from "../config/seaprox.ts";
import * as depotServer from "../config/depot-server.ts";
import * as depotLocal from "../config/depot-local.ts";
import * as tunnelServer from "../config/tunnel-server.ts";
import * as tunnelClient from "../config/tunnel-client.ts";
import * as fusionServer from "../config/fusion-server.ts";
import * as fusionClient from "../config/fusion-client.ts";
import { bindOrThrow } from "../construct/bind.ts";
import { constructSeaprox } from "../construct/seaprox.ts";
import { constructDepotServer } from "../construct/depot-server.ts";
import { constructDepotLocal } from "../construct/depot-local.ts";
import { constructTunnelServer } from "../construct/tunnel-server.ts";
import { constructTunnelClient } from "../construct/tunnel-client.ts";
import { constructFusionServer } from "../construct/fusion-server.ts";
import { constructFusionClient } from "../construct/fusion-client.ts";
import { configure } from "./configure.ts";
import type { FlagDefs, ServiceCommand } from "../../lib/config/mod.ts";
import type { Validate } from "../_kit.ts";

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
/** How long a client node may take to connect before the demo gives up on it. */
const connectWaitMs = 10_000;

/** A service's command and `validate` (its services/config/<name>.ts module). */
interface ServiceConfig<S extends FlagDefs, C> {
  command: ServiceCommand<S>;
  validate: Validate<S, C>;
}

/**
 * The node's logger and its config, from `argv` (plus `--metrics` when pages are served)
 * through the service's own command and `validate`.
 */
async function setup<S extends FlagDefs, C>(
  name: string,
  service: ServiceConfig<S, C>,
  argv: string[],
  ctx: NodeContext,
) {
  const log = new Logger(ctx.level, { svc: name });
  const args = ctx.pages ? [...argv, "--metrics", "127.0.0.1:0"] : argv;
  return { log, ...await configure(service.command, service.validate, args, ctx.env, log) };
}

const pageOf = (s?: ObservabilityServer) => s && `http://127.0.0.1:${s.addr.port}/`;

/** A seaprox (services/seaprox.ts), named `name` in its log and page. */
export async function startSeaproxNode(name: string, argv: string[], ctx: NodeContext) {
  const { log, flags, cfg } = await setup(name, seaprox, argv, ctx);
  const sp = await constructSeaprox(flags, cfg, log, bindOrThrow, name);
  return {
    name,
    page: pageOf(sp.metrics),
    ports: sp.proxy.servers.map((s) => s.addr.port),
    linkPorts: sp.links.map((s) => s.addr.port),
    stop: () => sp.stop(drainMs),
  };
}

/** depot-server (services/depot-server.ts). */
export async function startDepotServerNode(argv: string[], ctx: NodeContext) {
  const { log, flags, cfg } = await setup("depot-server", depotServer, argv, ctx);
  const depot = await constructDepotServer(flags, cfg, log, bindOrThrow);
  return {
    name: "depot-server",
    page: pageOf(depot.metrics),
    addrs: depot.server.addrs,
    stop: () => depot.stop(drainMs),
  };
}

/** depot-local (services/depot-local.ts); resolves once it is connected to its server. */
export async function startDepotLocalNode(argv: string[], ctx: NodeContext) {
  const { log, flags, cfg } = await setup("depot-local", depotLocal, argv, ctx);
  const local = await constructDepotLocal(flags, cfg, log, bindOrThrow);
  await local.local.waitConnected(true, connectWaitMs).catch(async (err) => {
    await local.stop();
    throw err;
  });
  return { name: "depot-local", page: pageOf(local.metrics), stop: () => local.stop() };
}

/** tunnel-server (services/tunnel-server.ts). */
export async function startTunnelServerNode(argv: string[], ctx: NodeContext) {
  const { log, flags, cfg } = await setup("tunnel-server", tunnelServer, argv, ctx);
  const tunnel = await constructTunnelServer(flags, cfg, log, bindOrThrow);
  return {
    name: "tunnel-server",
    page: pageOf(tunnel.metrics),
    port: tunnel.front.addr.port,
    stop: () => tunnel.stop(drainMs),
  };
}

/** tunnel-client (services/tunnel-client.ts); resolves once it is connected. */
export async function startTunnelClientNode(argv: string[], ctx: NodeContext) {
  const { log, flags, cfg } = await setup("tunnel-client", tunnelClient, argv, ctx);
  let connected: () => void = () => {};
  const ready = new Promise<void>((resolve) => connected = resolve);
  const tc = await constructTunnelClient(flags, cfg, log, bindOrThrow, () => connected());
  await within(ready, connectWaitMs, "tunnel-client: not connected").catch(async (err) => {
    await tc.stop();
    throw err;
  });
  return { name: "tunnel-client", page: pageOf(tc.metrics), stop: () => tc.stop() };
}

/** fusion-server (services/fusion-server.ts). */
export async function startFusionServerNode(argv: string[], ctx: NodeContext) {
  const { log, flags, cfg } = await setup("fusion-server", fusionServer, argv, ctx);
  const fusion = await constructFusionServer(flags, cfg, log, bindOrThrow);
  return {
    name: "fusion-server",
    page: pageOf(fusion.metrics),
    port: fusion.server.addr.port,
    stop: () => fusion.stop(drainMs),
  };
}

/** fusion-client (services/fusion-client.ts). */
export async function startFusionClientNode(argv: string[], ctx: NodeContext) {
  const { log, flags, cfg } = await setup("fusion-client", fusionClient, argv, ctx);
  const fusion = await constructFusionClient(flags, cfg, log, bindOrThrow);
  return {
    name: "fusion-client",
    page: pageOf(fusion.metrics),
    port: fusion.server.addr.port,
    stop: () => fusion.stop(drainMs),
  };
}
