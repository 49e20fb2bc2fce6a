import { BufferedReader, ControlReader, ControlWriter } from "../lib/control/mod.ts";
import { type DepotMessage, depotProtocol } from "../lib/depot/mod.ts";
import { Session } from "../lib/mux/mod.ts";
import { dial, type Duplex, withPrefix, writeAll } from "../lib/net/mod.ts";
import { assertEquals } from "./_assert.ts";
import { fakeLocal, socksDial, startDepot, startTarget } from "./_depot.ts";
import { nextWithin, readAll, TimedOutError, until } from "./_util.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Send one frame on `conn` and read the answer frame. */
async function handshake(
  conn: Duplex,
  msg: Parameters<ControlWriter<DepotMessage>["send"]>[0],
): Promise<{ answer: DepotMessage | null; rest: Duplex }> {
  await new ControlWriter(conn, depotProtocol).send(msg);
  const r = new BufferedReader(conn);
  const answer = await nextWithin(new ControlReader(r, depotProtocol), "the answer frame")
    .catch((err) => {
      if (err instanceof TimedOutError) throw err;
      return null; // the server closed or reset instead of answering: no answer
    });
  return { answer, rest: withPrefix(conn, r.takeBuffered()) };
}

Deno.test("depot --mux: a mux connection with a wrong token is refused", async () => {
  const depot = await startDepot({ locals: [], server: { token: "right" } });
  try {
    const conn = await dial("127.0.0.1", depot.tunnelPort);
    const { answer } = await handshake(conn, { type: "mux", token: "wrong", name: "x" });
    assertEquals((answer as { reason?: string }).reason, "unauthorized");
    assertEquals((await readAll(conn)).length, 0);
    conn.close();
  } finally {
    await depot.close();
  }
});

Deno.test("depot --mux: streams are tunnels; a bad stream is refused, the session lives on", async () => {
  const depot = await startDepot({ locals: [], server: { token: "t" } });
  const ctl = await fakeLocal(depot.controlPort, { token: "t" });
  const conn = await dial("127.0.0.1", depot.tunnelPort);
  const { answer, rest } = await handshake(conn, { type: "mux", token: "t", name: "default" });
  assertEquals(answer?.type, "muxAccepted");
  const mux = Session.client(rest, { keepaliveIntervalMs: 0 });
  try {
    const bad = await mux.open();
    const refused = await handshake(bad, {
      type: "tunnel",
      id: 99,
      key: "0".repeat(32),
    });
    assertEquals((refused.answer as { reason?: string }).reason, "unknown-request");
    bad.close();

    const client = socksDial(depot.socksPort, { host: "app.invalid", port: 80 });
    const req = await ctl.expect("connect", 60_000);
    const good = await mux.open();
    const ok = await handshake(good, { type: "tunnel", id: req.id, key: req.key });
    assertEquals(ok.answer?.type, "tunnelAccepted");
    const c = await client;
    await writeAll(c, enc.encode("up"));
    await c.closeWrite();
    assertEquals(dec.decode(await readAll(ok.rest)), "up");
    await writeAll(ok.rest, enc.encode("down"));
    await ok.rest.closeWrite();
    assertEquals(dec.decode(await readAll(c)), "down");
    c.close();
    ok.rest.close();
  } finally {
    await mux.close("internal-error");
    ctl.close();
    await depot.close();
  }
});

Deno.test("depot --mux: the control session ending ends the mux session; the local recovers", async () => {
  const target = startTarget();
  // Heartbeats far apart: the sessions end here by the replacement, never by a missed beat (at
  // 100 ms, three missed, a process stalled 300 ms on a loaded box lost the fresh local's exit
  // and the request got networkUnreachable).
  const depot = await startDepot({ locals: [{ mux: true }], server: { heartbeatMs: 60_000 } });
  try {
    const local = depot.locals[0];
    assertEquals(local.status().transport, "mux");
    // Replace the local's session with a same-name stale one, then let it go away.
    const intruder = await fakeLocal(depot.controlPort);
    await local.waitConnected(false, 60_000);
    intruder.close();
    // The replaced local waits before retrying; a fresh one with mux works meanwhile.
    await until(
      "the replaced local's mux session to end",
      () => depot.server.status().muxSessions === 0,
    );
    const fresh = await depot.addLocal({ mux: true });
    assertEquals(fresh.status().transport, "mux");
    await until("the fresh local's mux session", () => depot.server.status().muxSessions === 1);
    const c = await socksDial(depot.socksPort, { host: "127.0.0.1", port: target.port });
    await writeAll(c, enc.encode("Emux"));
    await c.closeWrite();
    assertEquals(dec.decode(await readAll(c)), "mux");
    c.close();
  } finally {
    await depot.close();
    await target.close();
  }
});
