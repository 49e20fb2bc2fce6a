/**
 * lib/mux: a hashicorp/yamux-compatible stream multiplexer whose streams carry seed 004's
 * structured connection state. Streams are `Duplex`es, so `relay()` works on them.
 *
 * @example
 * ```ts ignore
 * import { Session } from "./lib/mux/mod.ts";
 * const server = Session.server(await listener.accept());
 * for await (const stream of server) relay(stream, await dial("127.0.0.1", 80));
 * ```
 * @module
 */
export {
  defaultWindowBytes,
  Flag,
  FrameType,
  GoAwayCode,
  headerBytes,
  MuxError,
  type MuxErrorReason,
} from "./frame.ts";
export * from "./state.ts";
export { Stream } from "./stream.ts";
export {
  Session,
  type SessionEndReason,
  type SessionOptions,
  type SessionStats,
} from "./session.ts";
