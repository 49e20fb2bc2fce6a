/**
 * warren: network tunnels and proxies for Deno — the public library surface.
 * Each service in `services/` is a thin script over these modules.
 * @module
 */
export * from "./lib/net/mod.ts";
export * from "./lib/transport/mod.ts";
export * from "./lib/log.ts";
export * from "./lib/socks5/mod.ts";
export * from "./lib/proxyproto/mod.ts";
export * from "./lib/http/mod.ts";
export * from "./lib/proxy/mod.ts";
export * from "./lib/sequencer/mod.ts";
export * from "./lib/fusion/mod.ts";
export * from "./lib/control/mod.ts";
export * from "./lib/depot/mod.ts";
export * from "./lib/mux/mod.ts";
export * from "./lib/tunnel/mod.ts";
export * from "./lib/inspect/mod.ts";
export * from "./lib/status/mod.ts";
export * from "./lib/config/mod.ts";
