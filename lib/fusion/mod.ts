/**
 * lib/fusion: multipath sessions (seed 000) over lib/sequencer -- the session Duplex, the
 * client that opens paths, the server that joins them and dials the target.
 * @module
 */
export * from "./session.ts";
export * from "./client.ts";
export * from "./server.ts";
export * from "./handshake.ts";
export * from "./dial_path.ts";
export * from "./metrics.ts";
