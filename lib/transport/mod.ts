/**
 * lib/transport: every carrier of a byte stream behind one dial/listen shape -- TCP, TLS
 * (node:tls where client certificates or a bound local address need it), WebSocket (RFC 6455
 * framing, WebAssembly SIMD masking) and the raw HTTP upgrade -- so tunnel, depot, fusion and
 * seaprox links ride any of them and see one Duplex. Above lib/net, below mux and the
 * services' logic. See README.md.
 * @module
 */
export * from "./endpoint.ts";
export * from "./dial.ts";
export * from "./proxy.ts";
export * from "./listen.ts";
export * from "./upgrade.ts";
export * from "./tls.ts";
export * from "./websocket.ts";
export * from "./ws_adapter.ts";
export * from "./quic.ts";
