/**
 * depot-local built from its validated config: the exit, running (it dials its server and
 * reconnects forever), and `--status` / `--metrics`. services/depot-local.ts runs it as a
 * process; the demo in-process.
 * @module
 */

import type { Logger } from "../../lib/log.ts";
import { joinHostPort } from "../../lib/net/mod.ts";
import { DepotLocal } from "../../lib/depot/mod.ts";
import type { ObservabilityServer } from "../../lib/status/serve.ts";
import { depotLocalStatusProvider } from "../../lib/status/depot_local.ts";
import { listenersStatusProvider } from "../../lib/status/json.ts";
import type { ServiceFlags } from "../_kit.ts";
import type { command, DepotLocalServiceConfig } from "../config/depot-local.ts";
import { type Bind, observeAt } from "./bind.ts";

/** A running depot-local. */
export interface DepotLocalService {
  local: DepotLocal;
  status?: ObservabilityServer;
  metrics?: ObservabilityServer;
  /** Disconnect and wait for the run loop to end. */
  stop(): Promise<void>;
}

/** Start depot-local (connecting in the background); its pages are bound through `bind`. */
export async function constructDepotLocal(
  flags: ServiceFlags<typeof command.flags>,
  cfg: DepotLocalServiceConfig,
  log: Logger,
  bind: Bind,
): Promise<DepotLocalService> {
  const local = new DepotLocal({
    transport: flags.transport,
    server: flags.server,
    tunnel: flags.tunnel,
    token: flags.token ?? "",
    tls: cfg.tls,
    proxy: cfg.proxy,
    name: flags.name,
    socksPassword: cfg.socksPassword,
    dialTimeoutMs: flags["dial-timeout"],
    idleTimeoutMs: flags["idle-timeout"],
    mux: flags.mux,
    udp: !flags["no-udp"],
    spareTunnels: flags["spare-tunnels"],
    acl: cfg.acl.empty ? undefined : cfg.acl,
    backoff: { maxMs: Math.max(250, flags["backoff-max"]) },
    log,
  });
  // --status and --metrics: the same page (this exit's /status fields).
  const observed = {
    service: `depot-local ${flags.name}`,
    log,
    status: () => local.status(),
    providers: [depotLocalStatusProvider(() => local.status()), listenersStatusProvider()],
    auth: flags["status-auth"],
  };
  const status = await observeAt(bind, "status", flags.status, observed);
  const metrics = await observeAt(bind, "metrics", flags.metrics, observed);
  log.info("starting", {
    server: joinHostPort(flags.server.host, flags.server.port),
    name: flags.name,
    access: cfg.acl.empty ? "all destinations" : cfg.acl.describe(),
    tls: cfg.tls ? "on" : "off",
    udpAssociate: flags["no-udp"] ? "off" : "on",
  });
  const running = local.run();
  return {
    local,
    status,
    metrics,
    stop: async () => {
      await local.stop();
      await running;
      await status?.shutdown();
      await metrics?.shutdown();
    },
  };
}
