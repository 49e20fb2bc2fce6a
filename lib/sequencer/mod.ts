/**
 * lib/sequencer: multipath frames, reorder buffer, acks/NACKs, retransmit and schedulers.
 * Pure logic (no sockets): lib/fusion drives it over real paths.
 * @module
 */
export * from "./frame.ts";
export * from "./receiver.ts";
export * from "./sender.ts";
export * from "./path.ts";
export * from "./scheduler.ts";
