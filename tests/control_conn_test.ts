import {
  BufferedReader,
  ControlConn,
  ControlError,
  ControlReader,
  defineMessage,
  defineProtocol,
  encodeFrame,
  str,
} from "../lib/control/mod.ts";
import { closeQuietly, writeAll } from "../lib/net/mod.ts";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { rawFrame, tcpPair } from "./_depot.ts";
import { nextWithin, readAll, until, within } from "./_util.ts";

const hello = defineMessage("hello", { token: str() });
const welcome = defineMessage("welcome", { name: str() });
const proto = defineProtocol("test", 1, [hello, welcome]);
/** An expect() whose message or error comes at once: its timeout is for a hang, not timing. */
const expectMs = 30_000;

/** Send `bytes` raw to a ControlConn; return what it answered and how receive() ended. */
async function violate(bytes: Uint8Array): Promise<{ answer: unknown[]; err: Error }> {
  const [raw, b] = await tcpPair();
  const conn = new ControlConn(b, proto);
  try {
    await writeAll(raw, bytes);
    const err = await assertRejects(within(conn.receive(), "receive() to fail"));
    const reader = new ControlReader(new BufferedReader(raw), proto);
    const answer: unknown[] = [];
    const next = () => nextWithin(reader, "the ControlConn's answer or its close");
    for (let m = await next(); m !== null; m = await next()) answer.push(m);
    return { answer, err };
  } finally {
    conn.close();
    closeQuietly(raw);
  }
}

Deno.test("control conn answers an unknown type with an error message and closes", async () => {
  const { answer, err } = await violate(rawFrame('{"v":1,"type":"launch"}'));
  assert(err instanceof ControlError && err.reason === "unknown-type");
  assertEquals((answer[0] as { reason: string }).reason, "unknown-type");
  assertEquals(answer.length, 1);
});

Deno.test("control conn answers an unknown version with bad-version and closes", async () => {
  const { answer, err } = await violate(rawFrame('{"v":99,"type":"hello","token":"t"}'));
  assert(err instanceof ControlError && err.reason === "bad-version");
  assertEquals((answer[0] as { reason: string }).reason, "bad-version");
  assertEquals((answer[0] as { supported?: number }).supported, 1);
});

Deno.test("control conn answers schema violations and oversize frames", async () => {
  const s = await violate(rawFrame('{"v":1,"type":"hello","token":5}'));
  assertEquals((s.answer[0] as { reason: string }).reason, "schema");
  const big = await violate(rawFrame("", 1 << 30));
  assert(big.err instanceof ControlError && big.err.reason === "too-large");
  assertEquals((big.answer[0] as { reason: string }).reason, "too-large");
});

Deno.test("control conn: garbage (HTTP request) gets an error, never a crash", async () => {
  const { err } = await violate(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  assert(err instanceof ControlError);
});

Deno.test("control conn: truncated frame then EOF closes without reply", async () => {
  const [raw, b] = await tcpPair();
  const conn = new ControlConn(b, proto);
  await writeAll(raw, encodeFrame({ v: 1, type: "hello", token: "abc" }).subarray(0, 9));
  await raw.closeWrite();
  const err = await assertRejects(within(conn.receive(), "receive() to fail"));
  assert(err instanceof ControlError && err.reason === "truncated");
  assertEquals((await readAll(raw)).length, 0);
  raw.close();
});

Deno.test("control conn exchanges messages, answers pings and measures RTT", async () => {
  const [a, b] = await tcpPair();
  const ca = new ControlConn(a, proto);
  const cb = new ControlConn(b, proto);
  try {
    const got = cb.expect("hello", expectMs);
    await ca.send({ type: "hello", token: "tok" });
    assertEquals((await got).token, "tok");
    // Pings every 20 ms; the silence bound is far away, so a busy machine that delays a pong
    // cannot end the connection before the RTT and the exchange below are checked.
    ca.startHeartbeat({ intervalMs: 20, deadAfterMs: 60_000 });
    const readB = (async () => {
      while ((await cb.receive()) !== null);
    })().catch(() => {});
    const readA = ca.receive().catch(() => null);
    await until("the first pong (rtt measured)", () => ca.rttMs !== undefined);
    assert(ca.rttMs !== undefined && ca.rttMs >= 0, "rtt measured");
    await cb.send({ type: "welcome", name: "w" });
    assertEquals((await within(readA, "the welcome at a"))?.type, "welcome");
    ca.close();
    await within(readB, "b's reads to end at a's close");
  } finally {
    ca.close();
    cb.close();
  }
});

Deno.test("control conn heartbeat closes a silent peer within deadAfterMs", async () => {
  const [a, b] = await tcpPair();
  const ca = new ControlConn(a, proto);
  try {
    ca.startHeartbeat({ intervalMs: 30, deadAfterMs: 150 });
    const t0 = performance.now();
    // b never reads or answers: a stalled peer.
    const err = await assertRejects(within(ca.receive(), "the heartbeat to end receive()"));
    assert(err instanceof ControlError && err.reason === "timeout", String(err));
    assert(performance.now() - t0 >= 100);
    assert(ca.signal.aborted);
  } finally {
    ca.close();
    b.close();
  }
});

Deno.test("control conn expect: remote error, unexpected type, timeout", async () => {
  {
    const [a, b] = await tcpPair();
    const ca = new ControlConn(a, proto);
    const cb = new ControlConn(b, proto);
    const p = ca.expect("welcome", expectMs);
    await cb.fail("unauthorized", "bad token");
    const err = await assertRejects(p);
    assertEquals((err as { reason?: string }).reason, "unauthorized");
    assertEquals(err.name, "RemoteError");
    ca.close();
  }
  {
    const [a, b] = await tcpPair();
    const ca = new ControlConn(a, proto);
    const cb = new ControlConn(b, proto);
    const p = ca.expect("welcome", expectMs);
    await cb.send({ type: "hello", token: "x" });
    const err = await assertRejects(p);
    assert(err instanceof ControlError && err.reason === "unexpected");
    const e2 = await assertRejects(cb.expect("welcome", expectMs));
    assertEquals((e2 as { reason?: string }).reason, "unexpected");
    cb.close();
  }
  {
    const [a, b] = await tcpPair();
    const ca = new ControlConn(a, proto);
    const err = await assertRejects(ca.expect("welcome", 50));
    assert(err instanceof ControlError && err.reason === "timeout");
    b.close();
  }
});
