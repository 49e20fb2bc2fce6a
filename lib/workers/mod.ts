/**
 * Several worker processes of one service on the same public ports (`--workers N`): the
 * supervising {@linkcode WorkerPool} and the wire between it and its workers. A worker's
 * listeners share their ports through lib/net's `sharedPortOptions()`.
 * @module
 */

export * from "./pool.ts";
export { CommandLineUnavailableError, ownCommandLine } from "./cmdline.ts";
