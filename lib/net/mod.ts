/**
 * lib/net: the shared network layer -- one Duplex type, a half-close-aware relay with
 * adaptive buffers, typed dial failures, a limited accept loop, a framed reader, backoff.
 * @module
 */
export * from "./duplex.ts";
export * from "./abort.ts";
export * from "./bytes.ts";
export * from "./errors.ts";
export * from "./pool.ts";
export * from "./deadline.ts";
export * from "./relay.ts";
export * from "./reader.ts";
export * from "./dial.ts";
export * from "./serve.ts";
export * from "./shed.ts";
export * from "./live_list.ts";
export * from "./id_table.ts";
export * from "./backoff.ts";
export * from "./addr.ts";
export * from "./secret.ts";
export * from "./node_socket.ts";
export * from "./ratelimit.ts";
export * from "./acl.ts";
export * from "./tap.ts";
export * from "./reset.ts";
export { libcCandidates, libcPath } from "./libc.ts";
export * from "./tcp_nodelay.ts";
export * from "./notsent_lowat.ts";
export * from "./original_dst.ts";
export * from "./worker_slot.ts";
