/**
 * lib/tunnel: the HTTP virtual-host reverse tunnel of seed 002 (ngrok-like, self-hosted).
 * A server routes public requests by Host to connected clients over a yamux session
 * carried by a WebSocket; clients relay them to their local app. See README.md.
 * @module
 */
export * from "./registry.ts";
export * from "./protocol.ts";
export * from "./server.ts";
export * from "./client_conn.ts";
export * from "./group.ts";
export * from "./health.ts";
export * from "./health_log.ts";
export * from "./tunnel_stream.ts";
export * from "./port_tunnels.ts";
export * from "./tcp_ports.ts";
export * from "./udp_ports.ts";
export * from "./udp_client.ts";
export * from "./refusals.ts";
export * from "./stats.ts";
import "./metrics.ts";
export * from "./forward.ts";
export * from "./front_http.ts";
export * from "./app.ts";
export type { WebSocketLimits } from "./ws_passthrough.ts";
export * from "./admin.ts";
export * from "./client.ts";
export * from "./listen.ts";
export * from "./config.ts";
export * from "./state.ts";
export * from "./subdomains.ts";
export * from "./access.ts";
export * from "./redis_registry.ts";
export * from "./host_rules.ts";
export * from "./cluster.ts";
export * from "./cluster_view.ts";
export * from "./rewrite.ts";
