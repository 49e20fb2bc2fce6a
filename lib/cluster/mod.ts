/**
 * Services as clusters of instances (issue 19): the token-checked mux links between instances
 * ({@linkcode PeerLinks}), the lease refresh both clusters share ({@linkcode refreshLease}: a
 * lease is refreshed only while it is the instance's own) and depot-server's cluster
 * ({@linkcode DepotCluster}: a SOCKS client on any instance reaches an exit held by another,
 * leases in Redis).
 * @module
 */

export * from "./lease.ts";
export * from "./links.ts";
export * from "./depot.ts";
