/**
 * lib/depot: the reverse SOCKS5 proxy of seed 001 -- `DepotServer` (SOCKS front, control and
 * tunnel ports, exit registry) and `DepotLocal` (dials in, exits requests where it runs).
 * See README.md for the protocol.
 * @module
 */
export * from "./protocol.ts";
export * from "./server.ts";
export * from "./local.ts";
export { acceptDepotSocks, type DepotSocksOptions } from "./socks_front.ts";
export * from "./open.ts";
export { type HandedAssociationEnd, passAssociation } from "./udp.ts";
