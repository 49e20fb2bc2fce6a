/**
 * Services as clusters of instances (issue 19): the token-checked mux links between instances
 * ({@linkcode PeerLinks}) and depot-server's cluster ({@linkcode DepotCluster}: a SOCKS client
 * on any instance reaches an exit held by another, leases in Redis).
 * @module
 */

export * from "./lease.ts";
export * from "./links.ts";
export * from "./depot.ts";
