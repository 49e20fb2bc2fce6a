/**
 * Property-based tests of lib/control (length-prefixed JSON control messages) with the two
 * protocols built on it (depot, tunnel): every message type round-trips arbitrary field
 * values on any read split; mutated frames, arbitrary JSON and random bytes end in a
 * message or a typed ControlError; a 4 GiB length prefix is refused before allocating;
 * a ControlConn answers a violation with an `error` message and closes.
 */

import fc from "./_fc.ts";
import { assert, assertEquals } from "./_assert.ts";
import {
  BufferedReader,
  ControlConn,
  ControlError,
  ControlReader,
  encodeFrame,
  type Message,
  type Protocol,
  readFrameJson,
} from "../lib/control/mod.ts";
import { depotMaxMessageBytes, depotProtocol, failureReasons } from "../lib/depot/protocol.ts";
import { decodeMessage, maxTunnelMessageBytes, tunnelProtocol } from "../lib/tunnel/protocol.ts";
import {
  bytesArb,
  cat,
  clean,
  fuzzParams,
  mutate,
  mutationArb,
  splitArb,
  splitSource,
} from "./_fuzz.ts";
import { ChunkedSource } from "./_chunked.ts";

const id = fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER });
const key = fc.stringMatching(/^[0-9a-f]{32}$/);
const name = fc.stringMatching(/^[A-Za-z0-9._-]{1,64}$/);
const port = fc.integer({ min: 0, max: 65535 });
const text = (max: number) => fc.string({ maxLength: max, unit: "binary" });
const opt = <T>(a: fc.Arbitrary<T>) => fc.option(a, { nil: undefined });
const num = fc.double({ noNaN: true, noDefaultInfinity: true, min: -1e15, max: 1e15 });

/** Drop `undefined` fields (they do not travel in JSON). */
function defined(o: Record<string, unknown>): Record<string, unknown> {
  return JSON.parse(JSON.stringify(o));
}

const depotMessageArb: fc.Arbitrary<Record<string, unknown>> = fc.oneof(
  fc.record({
    type: fc.constant("hello"),
    role: fc.constant("depot-local"),
    token: text(1024),
    name,
    socksPassword: opt(text(255)),
    agent: opt(text(128)),
  }),
  fc.record({
    type: fc.constant("welcome"),
    name,
    heartbeatMs: fc.integer({ min: 10, max: 600_000 }),
    tunnelPort: fc.integer({ min: 1, max: 65535 }),
    features: opt(fc.array(text(32), { maxLength: 32 })),
    spareIdleMs: opt(fc.integer({ min: 10, max: 3_600_000 })),
  }),
  fc.record({
    type: fc.constant("connect"),
    id,
    key,
    host: text(255).filter((s) => s !== ""),
    port,
  }),
  fc.record({
    type: fc.constant("connectFailed"),
    id,
    reason: fc.constantFrom(...failureReasons),
    message: opt(text(512)),
  }),
  fc.record({ type: fc.constant("cancel"), id }),
  fc.record({
    type: fc.constant("tunnel"),
    id,
    key,
    boundHost: opt(text(64)),
    boundPort: opt(port),
  }),
  fc.record({ type: fc.constant("tunnelAccepted"), id }),
  fc.record({ type: fc.constant("mux"), token: text(1024), name }),
  fc.record({ type: fc.constant("muxAccepted") }),
  fc.record({ type: fc.constant("ping"), ts: num }),
  fc.record({ type: fc.constant("pong"), ts: num }),
  fc.record({
    type: fc.constant("error"),
    reason: text(64).filter((s) => s !== ""),
    message: opt(text(1024)),
    supported: opt(num),
  }),
).map(defined);

const tunnelMessageArb: fc.Arbitrary<Record<string, unknown>> = fc.oneof(
  fc.record({
    type: fc.constant("handshakeRequest"),
    client: opt(text(128)),
    tcp: opt(fc.array(fc.record({ publicPort: port }), { maxLength: 64 })),
  }),
  fc.record({
    type: fc.constant("handshakeResponse"),
    ok: fc.boolean(),
    hosts: fc.array(text(253), { maxLength: 20 }),
    tcp: fc.array(
      fc.record({ publicPort: port, ok: fc.boolean(), addr: opt(text(64)), error: opt(text(100)) }),
      { maxLength: 10 },
    ),
    error: opt(text(200)),
  }),
  fc.record({
    type: fc.constant("controlMsg"),
    action: fc.constant("RequestClientSession"),
    transportProtocol: fc.constantFrom("http", "tcp"),
    localPort: fc.stringMatching(/^\d{0,5}$/),
    requestId: text(64).filter((s) => s !== ""),
  }),
  fc.record({
    type: fc.constant("streamReply"),
    requestId: text(64).filter((s) => s !== ""),
    ok: fc.boolean(),
    reason: opt(fc.constantFrom("dial-failed", "no-such-port", "bad-request")),
    error: opt(text(200)),
  }),
  fc.record({ type: fc.constant("sessionEnd"), reason: fc.constantFrom("replaced", "shutdown") }),
).map(defined);

const protocols: [string, Protocol<Message>, fc.Arbitrary<Record<string, unknown>>, number][] = [
  ["depot", depotProtocol as Protocol<Message>, depotMessageArb, depotMaxMessageBytes],
  ["tunnel", tunnelProtocol as Protocol<Message>, tunnelMessageArb, maxTunnelMessageBytes],
];

for (const [label, proto, arb, maxBytes] of protocols) {
  Deno.test(`fuzz control: every ${label} message round-trips on any split`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(arb, { minLength: 1, maxLength: 4 }), splitArb, async (msgs, s) => {
        const frames = msgs.map((m) => {
          try {
            return encodeFrame({ v: proto.version, ...m }, maxBytes);
          } catch (err) {
            // Binary strings escape to up to 6 bytes each; an over-limit frame is refused
            // at encode time, which is the defined behaviour.
            if (err instanceof ControlError && err.reason === "too-large") return null;
            throw err;
          }
        });
        const wanted = msgs.filter((_, i) => frames[i] !== null);
        const reader = new ControlReader(
          new BufferedReader(splitSource(cat(...frames.filter((f) => f !== null)), s)),
          proto,
          { maxMessageBytes: maxBytes },
        );
        for (const m of wanted) {
          const out = await clean(() => reader.read());
          assertEquals(out.kind, "ok", out.kind === "error" ? out.error.message : "");
          if (out.kind === "ok") {
            assertEquals(out.value as unknown, { v: proto.version, ...m } as unknown);
          }
        }
        assertEquals((await clean(() => reader.read())).kind, "ok"); // clean EOF: null
      }),
      fuzzParams(300),
    );
  });

  Deno.test(`fuzz control: mutated ${label} frames end in a message or a ControlError`, async () => {
    await fc.assert(
      fc.asyncProperty(arb, mutationArb, splitArb, async (m, muts, s) => {
        let frame: Uint8Array;
        try {
          frame = encodeFrame({ v: proto.version, ...m }, maxBytes);
        } catch {
          return; // over the limit at encode time (see above)
        }
        const reader = new ControlReader(
          new BufferedReader(splitSource(mutate(frame, muts), s)),
          proto,
          { maxMessageBytes: maxBytes },
        );
        for (let i = 0; i < 3; i++) {
          const out = await clean(() => reader.read());
          if (out.kind === "error") {
            assert(out.error instanceof ControlError, `${out.error.name}: ${out.error.message}`);
            break;
          }
          if (out.value === null) break;
        }
      }),
      fuzzParams(500),
    );
  });
}

Deno.test("fuzz control: any JSON value in a frame is a message or a typed ControlError", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        fc.jsonValue(),
        fc.dictionary(fc.string(), fc.jsonValue()).map((d) => ({ v: 1, type: "connect", ...d })),
        fc.record({ v: fc.jsonValue(), type: fc.jsonValue(), id: fc.jsonValue() }),
      ),
      fc.constantFrom(depotProtocol as Protocol<Message>, tunnelProtocol as Protocol<Message>),
      async (value, proto) => {
        const out = await clean(() => proto.check(value));
        if (out.kind === "error") assert(out.error instanceof ControlError);
        // decodeMessage (the tunnel's whole-frame decoder) agrees with the reader.
        const body = new TextEncoder().encode(JSON.stringify(value) ?? "null");
        const frame = cat(new Uint8Array(4), body);
        new DataView(frame.buffer).setUint32(0, body.length);
        const d = await clean(() => decodeMessage(frame));
        if (d.kind === "error") assert(d.error instanceof ControlError);
      },
    ),
    fuzzParams(500),
  );
});

Deno.test("fuzz control: random bytes end in a message, EOF or a ControlError", async () => {
  await fc.assert(
    fc.asyncProperty(bytesArb, splitArb, async (input, s) => {
      const reader = new ControlReader(new BufferedReader(splitSource(input, s)), depotProtocol);
      const out = await clean(() => reader.read());
      if (out.kind === "error") assert(out.error instanceof ControlError);
      await clean(() => decodeMessage(input));
    }),
    fuzzParams(300),
  );
});

Deno.test("fuzz control: a 4 GiB length prefix is refused before any body byte is buffered", async () => {
  for (const len of [0xffff_ffff, 0x8000_0000, depotMaxMessageBytes + 1]) {
    const head = new Uint8Array(4);
    new DataView(head.buffer).setUint32(0, len);
    // The source would deliver a few body bytes; the reader must not wait for or hold them.
    const src = new ChunkedSource(cat(head, new Uint8Array(100)), 4);
    const r = new BufferedReader(src, 16);
    const before = Deno.memoryUsage().rss;
    const out = await clean(() => readFrameJson(r, depotMaxMessageBytes));
    assertEquals(out.kind, "error");
    if (out.kind === "error") assertEquals(out.error.reason, "too-large");
    assertEquals(r.buffered, 0, "body bytes were read before the length was checked");
    assert(Deno.memoryUsage().rss - before < 64 * 1024 * 1024);
  }
});

Deno.test("fuzz control: a ControlConn answers violations with an error message and closes", async () => {
  await fc.assert(
    fc.asyncProperty(depotMessageArb, mutationArb, async (m, muts) => {
      let frame: Uint8Array;
      try {
        frame = encodeFrame({ v: 1, ...m }, depotMaxMessageBytes);
      } catch {
        return;
      }
      const src = new ChunkedSource(mutate(frame, muts), 7);
      const conn = new ControlConn(src, depotProtocol, { maxMessageBytes: depotMaxMessageBytes });
      const out = await clean(async () => {
        while ((await conn.receive()) !== null) { /* read until EOF or violation */ }
      });
      if (out.kind === "error") {
        assert(out.error instanceof ControlError);
        assert(src.closed, "connection not closed after a violation");
        if (out.error.reason !== "truncated" && src.written.length > 0) {
          // The reply is itself a well-formed `error` frame.
          const reply = await readFrameJson(new BufferedReader(new ChunkedSource(src.output(), 9)));
          assertEquals((reply?.json as { type: string }).type, "error");
        }
      }
      conn.close();
    }),
    fuzzParams(200),
  );
});
