/**
 * lib/mux: a hashicorp/yamux-compatible stream multiplexer whose streams carry seed 004's
 * structured connection state. Streams are `Duplex`es, so `relay()` works on them.
 *
 * @example
 * ```ts
 * import { Session } from "./mod.ts";
 * import { dial, relay } from "../net/mod.ts";
 * const origin = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => new Response("hi"));
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const client = Session.client(await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }));
 * const server = Session.server(await listener.accept());
 * // Every stream the client opens is relayed to the origin.
 * const serving = (async () => {
 *   for await (const stream of server) relay(stream, await dial("127.0.0.1", origin.addr.port));
 * })();
 * const s = await client.open({
 *   data: new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
 * });
 * const buf = new Uint8Array(4096);
 * let text = "";
 * for (let n = await s.read(buf); n !== null; n = await s.read(buf)) {
 *   text += new TextDecoder().decode(buf.subarray(0, n));
 * }
 * console.assert(text.endsWith("hi"));
 * s.close();
 * await client.close();
 * await serving;
 * await server.close();
 * listener.close();
 * await origin.shutdown();
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
  defaultNotSentLowatBytes,
  Session,
  type SessionEndReason,
  type SessionOptions,
  type SessionStats,
} from "./session.ts";
