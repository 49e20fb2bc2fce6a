/**
 * lib/proxy: the seaprox model -- a connection with source and destination sides and
 * states, proxy types as small handshake modules (static, SOCKS5, HTTP), a Dialer seam
 * (direct, SOCKS5 chaining), listener URLs, and the shared accept/dial/relay loop.
 * @module
 */
export * from "./state.ts";
export * from "./connection.ts";
export * from "./dialer.ts";
export * from "./url.ts";
export * from "./proxy_type.ts";
export * from "./static.ts";
export * from "./redir.ts";
export * from "./server.ts";
export * from "./socks5.ts";
export * from "./socks5_udp.ts";
export * from "./chain.ts";
export * from "./http.ts";
export * from "./seaprox.ts";
export * from "./link.ts";
export * from "./link_quic.ts";
export * from "./metrics.ts";
export * from "./udp_link.ts";
export * from "./udp_chain.ts";
export * from "./udp_quic.ts";
