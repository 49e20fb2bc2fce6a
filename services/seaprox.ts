/**
 * seaprox: static, SOCKS5 (and SOCKS4/4a), HTTP and redir (transparent, behind an iptables
 * REDIRECT rule; needs --allow-ffi) proxy listeners given as URLs, any number
 * at once, optionally through a chain of hops (`--forward` repeated: SOCKS5, HTTP CONNECT and
 * seaprox links mixed, in order; seed 003), and seaprox-to-seaprox links: `--listen link://`
 * accepts mux sessions from other nodes, a `link://` hop carries every outgoing connection as
 * one stream over a long-lived session to such a node.
 *
 *   deno run -A services/seaprox.ts --listen socks5://127.0.0.1:1080 \
 *     --listen http://user:pass@127.0.0.1:8080 --listen static://127.0.0.1:9000?to=example.org:80
 */

import { bindOrExit, fail, logFdLimits, onShutdown, startService } from "./_kit.ts";
import { command, validate } from "./config/seaprox.ts";
import { constructSeaprox } from "./construct/seaprox.ts";
import { ListenError } from "../lib/proxy/mod.ts";

// ---- flags, config validation (the same for --check-config and reloads) ----
const { cfg, flags, log, onReload } = await startService(command, validate);

// ---- wiring and run (services/construct/seaprox.ts) ----
const sp = await constructSeaprox(flags, cfg, log, bindOrExit)
  .catch((err) => err instanceof ListenError ? fail(err.message, 1) : Promise.reject(err));

// ---- reload (SIGHUP) ----
// Proxy listeners follow the URLs (connections of a removed one go on until they end); link
// listeners and the other keys need a restart.
onReload(async (next) => {
  if (next.listeners.length === 0 && sp.links.length === 0 && sp.udp.length === 0) {
    throw new Error("no listener left");
  }
  await sp.proxy.reconcile(next.urls);
});

// ---- open-file limits (logged once listening: a busy port still exits with one line) ----
// --max-conns client connections, each with its upstream one.
logFdLimits(log, 2 * flags["max-conns"]);

// ---- shutdown ----
onShutdown(log, () => sp.stop(flags["drain-timeout"]));
