/**
 * seaprox built from its validated config: proxy listeners, link listeners, the chain of
 * hops (`--forward` / `--via`), the status page. services/seaprox.ts runs it as a process; the demo in-process.
 * @module
 */

import type { Logger } from "../../lib/log.ts";
import { listenQuic } from "../../lib/transport/mod.ts";
import { listenLink } from "../../lib/cli_security.ts";
import { AuthFailureLimiter, formatAddr, joinHostPort, type Server } from "../../lib/net/mod.ts";
import {
  dialerFor,
  nameCheckedUdp,
  quicLinkAlpn,
  type Seaprox,
  seaproxChain,
  SeaproxStats,
  serveLink,
  serveQuicLink,
  startSeaprox,
} from "../../lib/proxy/mod.ts";
import type { ObservabilityServer } from "../../lib/status/serve.ts";
import { seaproxStatusJson, seaproxStatusProvider } from "../../lib/status/seaprox.ts";
import { directUdpOpener, startUdpForward, type UdpForward } from "../../lib/udp/mod.ts";
import type { ServiceFlags } from "../_kit.ts";
import type { command, SeaproxServiceConfig } from "../config/seaprox.ts";
import { type Bind, observeAt } from "./bind.ts";

/** A running seaprox. */
export interface SeaproxService {
  proxy: Seaprox;
  /** The link:// listeners. */
  links: Server[];
  /** The udp:// forwards. */
  udp: UdpForward[];
  metrics?: ObservabilityServer;
  /** Stop listening, let connections finish `drainMs`, close the chain. */
  stop(drainMs: number): Promise<void>;
}

/**
 * Start seaprox. Rejects with lib/proxy `ListenError` when a proxy listener cannot bind;
 * link and metrics listeners go through `bind`.
 */
export async function constructSeaprox(
  flags: ServiceFlags<typeof command.flags>,
  cfg: SeaproxServiceConfig,
  log: Logger,
  bind: Bind,
  service = "seaprox",
): Promise<SeaproxService> {
  const chain = seaproxChain(cfg.hops, {
    prefer: cfg.prefer,
    dialTimeoutMs: flags["dial-timeout"],
    proxy: cfg.proxy,
    link: {
      token: flags["link-token"] ?? "",
      tls: cfg.tlsClient,
      transport: flags.transport,
      log: log.child({
        link: cfg.hops.find((h) => h.scheme === "link" || h.scheme === "quic")?.display,
      }),
    },
  });
  const stats = new SeaproxStats();
  // How datagrams leave this node: through the chain (names checked here, the far end
  // resolves) or from here (every resolved address checked).
  const udpOut = chain
    ? (cfg.acl.empty ? chain.udp : nameCheckedUdp(cfg.acl, chain.udp))
    : directUdpOpener({ acl: cfg.acl, prefer: cfg.prefer });
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
    udp: chain && { open: chain.udp, refusal: chain.udpRefusal },
    proxyProtocolFrom: cfg.proxyProtocolFrom,
    allowOpen: flags["allow-open"],
    idleTimeoutMs: flags["idle-timeout"],
    handshakeTimeoutMs: flags["handshake-timeout"],
    log,
    hooks: stats.hooks,
  });
  if (chain) {
    log.info("outgoing connections via", {
      chain: cfg.hops.map((h) => h.display).join(" -> "),
      tls: cfg.tlsClient ? "on" : "off",
    });
  }
  if (!cfg.acl.empty) log.info("destination access control", { acl: cfg.acl.describe() });
  // Link listeners dial destinations themselves, directly or through the chain (ACL applies).
  const linkLimiter = new AuthFailureLimiter();
  // What a link listener of either transport (TCP, QUIC) is given; each its own dialer.
  const linkOptions = (listener: string) => ({
    maxConns: shared.maxConns,
    dialTimeoutMs: shared.dialTimeoutMs,
    token: flags["link-token"]!,
    authLimiter: linkLimiter,
    dialer: dialerFor({ ...shared, listeners: [] }),
    udp: udpOut,
    udpRefusal: chain?.udpRefusal,
    idleTimeoutMs: flags["idle-timeout"],
    handshakeTimeoutMs: flags["handshake-timeout"],
    log: log.child({ listener }),
  });
  const links: Server[] = [];
  for (const addr of cfg.linkListens) {
    const l = await bind(
      "link listener",
      addr,
      () => listenLink(addr, cfg.tlsServer, "link listener", log),
    );
    log.info("listening", {
      name: "link",
      addr: formatAddr(l.addr),
      tls: cfg.tlsServer ? (cfg.tlsServer.ca ? "mutual" : "server") : "off",
    });
    links.push(serveLink(l, { ...linkOptions("link"), transport: flags.transport }));
  }
  const udp: UdpForward[] = [];
  for (const spec of cfg.udpListens) {
    const name = udp.length === 0 ? "udp" : `udp-${udp.length + 1}`;
    const fwd = await bind("udp listener", spec.addr, () =>
      startUdpForward({
        listen: spec.addr,
        to: spec.to,
        maxFlows: spec.maxFlows,
        acl: cfg.acl,
        prefer: cfg.prefer,
        open: chain && udpOut,
        log: log.child({ listener: name }),
      }));
    udp.push(fwd);
    log.info("listening", {
      name,
      addr: joinHostPort(fwd.addr.host, fwd.addr.port),
      to: joinHostPort(fwd.target.host, fwd.target.port),
      maxFlows: fwd.flows.maxFlows,
      idleTimeoutMs: fwd.flows.idleTimeoutMs,
    });
  }
  for (const addr of cfg.quicListens) {
    const ep = await bind(
      "quic link listener",
      addr,
      () => listenQuic(addr, cfg.tlsServer!, { alpn: quicLinkAlpn }),
    );
    log.info("listening", { name: "quic", addr: formatAddr(ep.addr), tls: "server" });
    links.push(serveQuicLink(ep, linkOptions("quic")));
  }
  const status = { proxy, links, stats, maxConns: flags["max-conns"], startedMs: Date.now() };
  const metrics = await observeAt(bind, "metrics", flags.metrics, {
    service,
    log,
    auth: flags["status-auth"],
    status: () => seaproxStatusJson(status),
    providers: [seaproxStatusProvider(status)],
  });
  return {
    proxy,
    links,
    udp,
    metrics,
    stop: async (drainMs) => {
      for (const f of udp) f.stop();
      await Promise.all([proxy.stop(drainMs), ...links.map((s) => s.stop(drainMs))]);
      await chain?.close();
      await metrics?.shutdown();
    },
  };
}
