/**
 * WsConn's message-level API (readMessage / sendMessage / sendCloseFrame), used by the
 * embeddable front's WebSocket pass-through: round trips on every split, fragments with
 * control frames between them, truncated and random input.
 */
import { assert, assertEquals } from "./_assert.ts";
import { ChunkedSource, splits } from "./_chunked.ts";
import { ProtocolError } from "../lib/net/mod.ts";
import { encodeFrameHeader, Opcode, WsConn, type WsMessage } from "../lib/transport/mod.ts";
import { concatBytes } from "../lib/net/bytes.ts";

const enc = new TextEncoder();

/** What a client-role WsConn writes for `send`, as bytes. */
async function clientBytes(send: (ws: WsConn) => Promise<void>): Promise<Uint8Array> {
  const sink = new ChunkedSource(new Uint8Array(0), 1);
  await send(new WsConn(sink, { role: "client" }));
  return sink.output();
}

/** Unmasked (server → client) frame bytes. */
function frame(opcode: number, payload: Uint8Array, fin = true): Uint8Array {
  const head = new Uint8Array(14);
  const hl = encodeFrameHeader(head, fin, opcode, payload.length);
  const out = new Uint8Array(hl + payload.length);
  out.set(head.subarray(0, hl));
  out.set(payload, hl);
  return out;
}

const concat = concatBytes;

async function readAllMessages(ws: WsConn, maxBytes = 8 << 20): Promise<WsMessage[]> {
  const out: WsMessage[] = [];
  while (true) {
    const m = await ws.readMessage(maxBytes);
    if (m === null) return out;
    out.push(m);
    if (m.type === "close") return out;
  }
}

const big = (() => {
  const b = new Uint8Array(3 * 1024 * 1024 + 7);
  for (let i = 0; i < b.length; i++) b[i] = (i * 31 + (i >> 11)) & 0xff;
  return b;
})();

for (const [name, split] of splits) {
  Deno.test(`ws messages: masked round trip, 3 MiB fragmented, close with reason (${name})`, async () => {
    const wire = await clientBytes(async (ws) => {
      await ws.sendMessage("text", enc.encode("héllo ✓"));
      await ws.sendMessage("binary", new Uint8Array([0, 255, 7]));
      await ws.sendMessage("text", new Uint8Array(0));
      await ws.sendMessage("binary", big);
      await ws.sendCloseFrame(4001, "bye now");
    });
    const src = new ChunkedSource(wire, split);
    const got = await readAllMessages(new WsConn(src, { role: "server" }));
    assertEquals(got.length, 5);
    assertEquals(got[0], { type: "text", data: enc.encode("héllo ✓") });
    assertEquals(got[1], { type: "binary", data: new Uint8Array([0, 255, 7]) });
    assertEquals(got[2], { type: "text", data: new Uint8Array(0) });
    const g3 = got[3] as { type: string; data: Uint8Array };
    assertEquals(g3.type, "binary");
    assertEquals(g3.data.length, big.length);
    assert(g3.data.every((b, i) => b === big[i]), "3 MiB message differs");
    assertEquals(got[4], { type: "close", code: 4001, reason: "bye now" });
    // The Close was answered with the same code (unmasked: server role).
    assertEquals([...src.output()], [0x88, 2, 4001 >> 8, 4001 & 0xff]);
  });

  Deno.test(`ws messages: fragments with a ping and a pong between them (${name})`, async () => {
    const wire = concat(
      frame(Opcode.text, enc.encode("ab"), false),
      frame(Opcode.ping, enc.encode("p")),
      frame(Opcode.continuation, enc.encode("cd"), false),
      frame(Opcode.pong, enc.encode("x")),
      frame(Opcode.continuation, enc.encode("e"), true),
      frame(Opcode.close, new Uint8Array(0)),
    );
    const src = new ChunkedSource(wire, split);
    const got = await readAllMessages(new WsConn(src, { role: "client" }));
    assertEquals(got, [
      { type: "text", data: enc.encode("abcde") },
      { type: "close", code: undefined, reason: "" },
    ]);
    // A pong for the ping, then a Close without status answering the one without status.
    const out = src.output();
    assertEquals([out[0], out[1] & 0x7f], [0x80 | Opcode.pong, 1]);
    assertEquals([out[7], out[8] & 0x7f], [0x80 | Opcode.close, 0]);
  });
}

Deno.test("ws messages: protocol violations are ProtocolErrors with a reason", async () => {
  const cases: [string, Uint8Array, number, string][] = [
    ["stray continuation", frame(Opcode.continuation, enc.encode("x")), 100, "ws-protocol"],
    [
      "new message mid-message",
      concat(frame(Opcode.text, enc.encode("a"), false), frame(Opcode.binary, enc.encode("b"))),
      100,
      "ws-protocol",
    ],
    [
      "too large across fragments",
      concat(frame(Opcode.binary, new Uint8Array(60), false), frame(0, new Uint8Array(60))),
      100,
      "too-large",
    ],
    ["1-byte close", frame(Opcode.close, new Uint8Array([3])), 100, "ws-protocol"],
    ["unknown opcode", frame(0x3, new Uint8Array(0)), 100, "ws-protocol"],
    [
      "masked frame from a server",
      await clientBytes((ws) => ws.sendMessage("text", enc.encode("m"))),
      100,
      "ws-protocol",
    ],
  ];
  for (const [what, wire, max, reason] of cases) {
    const ws = new WsConn(new ChunkedSource(wire, 3), { role: "client" });
    try {
      await readAllMessages(ws, max);
      throw new Error(`${what}: no error`);
    } catch (err) {
      assert(err instanceof ProtocolError, `${what}: ${err}`);
      assertEquals(err.reason, reason, what);
    }
  }
});

Deno.test("ws messages: every truncation ends in EOF or a ProtocolError, random input never crashes", async () => {
  const wire = concat(
    frame(Opcode.text, enc.encode("hello"), false),
    frame(Opcode.ping, enc.encode("p")),
    frame(Opcode.continuation, new Uint8Array(300), true),
    frame(Opcode.binary, new Uint8Array(70_000)),
    frame(Opcode.close, new Uint8Array([0x03, 0xe8, 0x6f, 0x6b])),
  );
  for (let cut = 0; cut < wire.length; cut += cut < 400 ? 1 : 997) {
    const ws = new WsConn(new ChunkedSource(wire.subarray(0, cut), 7), { role: "client" });
    try {
      const got = await readAllMessages(ws);
      // Only a cut at a message boundary ends cleanly.
      assert(
        got.every((m) => m.type !== "close"),
        `cut ${cut}: close read from a truncated stream`,
      );
    } catch (err) {
      assert(err instanceof ProtocolError, `cut ${cut}: ${err}`);
    }
  }
  for (let i = 0; i < 300; i++) {
    const junk = crypto.getRandomValues(new Uint8Array(1 + Math.floor(Math.random() * 200)));
    const ws = new WsConn(new ChunkedSource(junk, 5), { role: i % 2 ? "client" : "server" });
    try {
      await readAllMessages(ws, 1 << 16);
    } catch (err) {
      assert(err instanceof ProtocolError, `random input ${i}: ${err}`);
    }
  }
});
