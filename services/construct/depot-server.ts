/**
 * depot-server built from its validated config: control, SOCKS and tunnel listeners, the
 * exits' registry, `--status` / `--metrics`. services/depot-server.ts runs it as a process;
 * the demo in-process.
 * @module
 */

import type { Logger } from "../../lib/log.ts";
import { listenLink } from "../../lib/cli_security.ts";
import { AuthFailureLimiter, formatAddr } from "../../lib/net/mod.ts";
import { DepotServer } from "../../lib/depot/mod.ts";
import {
  depotStatusProvider,
  listenersStatusProvider,
  type ObservabilityServer,
} from "../../lib/status/mod.ts";
import type { ServiceFlags } from "../_kit.ts";
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
  const link = (what: string, addr: typeof flags.control) =>
    bind(what, addr, () => listenLink(addr, cfg.tls, what, log));
  const listeners = {
    control: await link("control", flags.control),
    socks: await listenAt(bind, "socks", flags.socks),
    tunnel: await link("tunnel", flags.tunnel),
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
    udp: { idleTimeoutMs: flags["udp-idle-timeout"] },
    maxConns: flags["max-conns"],
    log,
  });
  server.start(listeners);
  for (const [name, l] of Object.entries(listeners)) {
    log.info("listening", { name, addr: formatAddr(l.addr) });
  }
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
    status: () => server.status(),
    providers: [depotStatusProvider(() => server.status()), listenersStatusProvider()],
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
      await server.stop(drainMs);
      await status?.shutdown();
      await metrics?.shutdown();
    },
  };
}
