/**
 * A session turns Nagle off on its transport (or the socket it wraps): it coalesces frames
 * itself, and with Nagle a header written just before a large payload waits for the peer's
 * ACK (warren sending to Go yamux ran at a third of the speed).
 */
import { assertEquals } from "./_assert.ts";
import { Session } from "../lib/mux/mod.ts";
import type { Duplex } from "../lib/net/mod.ts";

/** A transport that never delivers anything and records setNoDelay calls. */
function fakeTransport(): Duplex & { noDelayCalls: boolean[]; inner?: unknown } {
  let wake: ((n: number | null) => void) | undefined;
  const calls: boolean[] = [];
  return {
    noDelayCalls: calls,
    read: () => new Promise((r) => wake = r),
    write: (p) => Promise.resolve(p.length),
    closeWrite: () => Promise.resolve(),
    close: () => wake?.(null),
    setNoDelay: (on: boolean) => calls.push(on),
  } as Duplex & { noDelayCalls: boolean[]; setNoDelay(on: boolean): void };
}

Deno.test("mux: a session sets TCP_NODELAY on its transport, also through a wrapper", async () => {
  const direct = fakeTransport();
  const s1 = Session.client(direct, { keepaliveIntervalMs: 0 });
  assertEquals(direct.noDelayCalls, [true]);
  await s1.close();

  // A wrapper (withPrefix, a TLS or WebSocket layer) exposing the socket as `inner`.
  const socket = fakeTransport();
  const wrapper: Duplex & { inner: unknown } = {
    inner: socket,
    read: (p) => socket.read(p),
    write: (p) => socket.write(p),
    closeWrite: () => socket.closeWrite(),
    close: () => socket.close(),
  };
  const s2 = Session.server(wrapper, { keepaliveIntervalMs: 0 });
  assertEquals(socket.noDelayCalls, [true]);
  await s2.close();
});
