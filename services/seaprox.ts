/**
 * seaprox: static, SOCKS5 (and SOCKS4/4a) and HTTP proxy listeners given as URLs, any number
 * at once, optionally through a chain of hops (`--forward` repeated: SOCKS5, HTTP CONNECT and
 * seaprox links mixed, in order; seed 003), and seaprox-to-seaprox links: `--listen link://`
 * accepts mux sessions from other nodes, a `link://` hop carries every outgoing connection as
 * one stream over a long-lived session to such a node.
 *
 *   deno run -A services/seaprox.ts --listen socks5://127.0.0.1:1080 \
 *     --listen http://user:pass@127.0.0.1:8080 --listen static://127.0.0.1:9000?to=example.org:80
 */

import { bindOrExit, fail, listenLinkOrExit, onShutdown, startService } from "./_kit.ts";
import { command, validate } from "./config/seaprox.ts";
import { AuthFailureLimiter, formatAddr, type Server } from "../lib/net/mod.ts";
import {
  dialerFor,
  directDialer,
  ListenError,
  SeaproxStats,
  serveLink,
  startChain,
  startSeaprox,
} from "../lib/proxy/mod.ts";
import { seaproxStatusJson, seaproxStatusProvider, serveObservability } from "../lib/status/mod.ts";

// ---- flags, config validation (the same for --check-config and reloads) ----
const { cfg, flags, log, onReload } = await startService(command, validate);

// ---- wiring and run ----
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
}).catch((err) => err instanceof ListenError ? fail(err.message, 1) : Promise.reject(err));
if (chain) {
  log.info("outgoing connections via", {
    chain: cfg.hops.map((h) => h.display).join(" -> "),
    tls: cfg.tlsClient ? "on" : "off",
  });
}
if (!cfg.acl.empty) log.info("destination access control", { acl: cfg.acl.describe() });
// Link listeners dial destinations themselves, directly or through the chain (ACL applies).
const linkLimiter = new AuthFailureLimiter();
const links: Server[] = [];
for (const addr of cfg.linkListens) {
  const l = await listenLinkOrExit(addr, cfg.tlsServer, "link listener", log);
  log.info("listening", {
    name: "link",
    addr: formatAddr(l.addr),
    tls: cfg.tlsServer ? (cfg.tlsServer.ca ? "mutual" : "server") : "off",
  });
  links.push(serveLink(l, {
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
const metrics = flags.metrics &&
  await bindOrExit("metrics", flags.metrics, () =>
    serveObservability(flags.metrics!, {
      service: "seaprox",
      log,
      auth: flags["status-auth"],
      status: () => seaproxStatusJson(status),
      providers: [seaproxStatusProvider(status)],
    }));

// ---- reload (SIGHUP) ----
// Proxy listeners follow the URLs (connections of a removed one go on until they end); link
// listeners and the other keys need a restart.
onReload(async (next) => {
  if (next.listeners.length === 0 && links.length === 0) throw new Error("no listener left");
  await proxy.reconcile(next.urls);
});

// ---- shutdown ----
onShutdown(log, async () => {
  const drainMs = flags["drain-timeout"];
  await Promise.all([proxy.stop(drainMs), ...links.map((s) => s.stop(drainMs))]);
  await chain?.close();
  if (metrics) await metrics.shutdown();
});
