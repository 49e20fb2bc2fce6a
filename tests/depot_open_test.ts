/**
 * depot open-with-data (feature "open"): with --mux, the server opens a stream per request
 * whose SYN carries the `connect`; the local answers on that stream. Driven by hand on the
 * local's side (control connection and mux session), so what crosses which connection is
 * checked, and with real DepotLocals for the bytes.
 */
import { BufferedReader, ControlReader, ControlWriter } from "../lib/control/mod.ts";
import { type DepotMessage, depotProtocol } from "../lib/depot/mod.ts";
import { maxStandbyPerExit } from "../lib/depot/protocol.ts";
import { Session, type Stream } from "../lib/mux/mod.ts";
import { ControlConn } from "../lib/control/mod.ts";
import { concatBytes, dial, type Duplex, withPrefix, writeAll } from "../lib/net/mod.ts";
import { socks5Connect } from "../lib/socks5/mod.ts";
import { assert, assertEquals } from "./_assert.ts";
import { rawFrame, socksDial, startDepot, startTarget } from "./_depot.ts";
import { nextWithin, readAll, until, within } from "./_util.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A hand-driven local announcing "open": its control connection and mux session. */
async function openLocal(
  depot: { controlPort: number; tunnelPort: number },
  opts: { presentKey?: "right" | "wrong" | "none" } = {},
): Promise<{ ctl: ControlConn<DepotMessage>; mux: Session; close(): Promise<void> }> {
  const ctl = new ControlConn(await dial("127.0.0.1", depot.controlPort), depotProtocol);
  await ctl.send({
    type: "hello",
    role: "depot-local",
    token: "t",
    name: "default",
    features: ["open"],
  });
  const welcome = await ctl.expect("welcome", 60_000);
  assert(welcome.features?.includes("open"), "the server offers open");
  assertEquals(welcome.sessionKey?.length, 32);
  const key = opts.presentKey ?? "right";
  const conn = await dial("127.0.0.1", depot.tunnelPort);
  await new ControlWriter(conn, depotProtocol).send({
    type: "mux",
    token: "t",
    name: "default",
    sessionKey: key === "right" ? welcome.sessionKey : key === "wrong" ? "0".repeat(32) : undefined,
  });
  const r = new BufferedReader(conn, 1024);
  assertEquals(
    (await nextWithin(new ControlReader(r, depotProtocol), "the server's muxAccepted"))?.type,
    "muxAccepted",
  );
  const mux = Session.client(withPrefix(conn, r.takeBuffered()), { keepaliveIntervalMs: 0 });
  return {
    ctl,
    mux,
    async close() {
      await mux.close("internal-error");
      ctl.close();
    },
  };
}

/** The first frame of a stream the server opened, and the stream after it. */
async function firstFrame(s: Stream): Promise<{ msg: DepotMessage | null; rest: Duplex }> {
  const r = new BufferedReader(s, 1024);
  const msg = await nextWithin(
    new ControlReader(r, depotProtocol),
    "the first frame of the stream",
  );
  return { msg, rest: withPrefix(s, r.takeBuffered()) };
}

Deno.test("depot open: the request rides in the SYN of a stream the server opens, answered on it", async () => {
  const depot = await startDepot({ locals: [], server: { token: "t" } });
  const local = await openLocal(depot);
  const side = controlSide(local.ctl);
  try {
    const client = socksDial(depot.socksPort, { host: "app.invalid", port: 8080 });
    const stream = await local.mux.accept();
    assert(stream !== null);
    const { msg, rest } = await firstFrame(stream);
    assertEquals(msg?.type, "connect");
    const req = msg as Extract<DepotMessage, { type: "connect" }>;
    assertEquals([req.host, req.port], ["app.invalid", 8080]);
    await new ControlWriter(rest, depotProtocol).send({
      type: "tunnel",
      id: req.id,
      key: req.key,
      boundHost: "192.0.2.7",
      boundPort: 4321,
    });
    const c = await client;
    // Half-close both ways, either direction first.
    await writeAll(c, enc.encode("up"));
    await c.closeWrite();
    assertEquals(dec.decode(await readAll(rest)), "up");
    await writeAll(rest, enc.encode("down"));
    await rest.closeWrite();
    assertEquals(dec.decode(await readAll(c)), "down");
    c.close();
    rest.close();
    await side.sync();
    assertEquals(side.got, [], "nothing of the request on the control connection");
  } finally {
    await local.close();
    await side.close();
    await depot.close();
  }
});

Deno.test("depot open: connectFailed on the stream is the client's reply code", async () => {
  const depot = await startDepot({ locals: [], server: { token: "t" } });
  const local = await openLocal(depot);
  try {
    const conn = await dial("127.0.0.1", depot.socksPort);
    const answer = socks5Connect(conn, { host: "127.0.0.1", port: 9 }).catch((e) => e);
    const stream = (await local.mux.accept())!;
    const { msg, rest } = await firstFrame(stream);
    const id = (msg as { id: number }).id;
    await new ControlWriter(rest, depotProtocol).send({
      type: "connectFailed",
      id,
      reason: "refused",
    });
    const err = await answer;
    assertEquals((err as { reason?: string }).reason, "refused");
    conn.close();
    rest.close();
  } finally {
    await local.close();
    await depot.close();
  }
});

Deno.test("depot open: an answer split over frames, with bytes behind it; a broken answer, a FIN or a reset fails only its request", async () => {
  const depot = await startDepot({ locals: [], server: { token: "t" } });
  const local = await openLocal(depot);
  /** A SOCKS request, the stream the server opened for it, and its connect frame read off. */
  const request = async () => {
    const client = socksDial(depot.socksPort, { host: "app.invalid", port: 80 });
    client.catch(() => {}); // the failing cases await it below
    const stream = (await within(local.mux.accept(), "the request's stream"))!;
    const { msg, rest } = await firstFrame(stream);
    const req = msg as Extract<DepotMessage, { type: "connect" }>;
    assertEquals(req.type, "connect");
    return { client, stream, rest, req };
  };
  const failure = async (c: Promise<unknown>) =>
    ((await within(c.then(() => "granted", (e) => e), "the reply")) as { reason?: string })
      .reason;
  try {
    // The answer in three frames: its first 5 bytes, the rest with bytes behind it, then more.
    const a = await request();
    const answer = rawFrame(JSON.stringify({ v: 1, type: "tunnel", id: a.req.id, key: a.req.key }));
    await writeAll(a.rest, answer.subarray(0, 5));
    await writeAll(a.rest, concatBytes(answer.subarray(5), enc.encode("early,")));
    await writeAll(a.rest, enc.encode("later"));
    await a.rest.closeWrite();
    const c = await within(a.client, "the split answer's reply");
    await writeAll(c, enc.encode("up"));
    await c.closeWrite();
    assertEquals(dec.decode(await readAll(c)), "early,later");
    assertEquals(dec.decode(await readAll(a.rest)), "up");
    c.close();
    a.rest.close();

    // A first frame that does not decode, a FIN, a reset: each fails its own request.
    const broken = await request();
    await writeAll(broken.rest, rawFrame("{not json"));
    assertEquals(await failure(broken.client), "network-unreachable");
    const ended = await request();
    await ended.rest.closeWrite();
    assertEquals(await failure(ended.client), "other");
    const reset = await request();
    reset.stream.reset();
    assertEquals(await failure(reset.client), "network-unreachable");
    for (const r of [broken, ended, reset]) r.rest.close();

    // The session serves on.
    const after = await request();
    await new ControlWriter(after.rest, depotProtocol).send({
      type: "tunnel",
      id: after.req.id,
      key: after.req.key,
    });
    const c2 = await within(after.client, "the reply after the failures");
    await c2.closeWrite();
    await after.rest.closeWrite();
    assertEquals((await readAll(c2)).length, 0);
    c2.close();
    after.rest.close();
  } finally {
    await local.close();
    await depot.close();
  }
});

Deno.test("depot open: a stream unanswered in time is reset, the client gets 0x06", async () => {
  const depot = await startDepot({ locals: [], server: { token: "t", pendingTimeoutMs: 300 } });
  const local = await openLocal(depot);
  try {
    const conn = await dial("127.0.0.1", depot.socksPort);
    const answer = socks5Connect(conn, { host: "127.0.0.1", port: 9 }).catch((e) => e);
    const stream = (await local.mux.accept())!;
    const { msg, rest } = await firstFrame(stream);
    assertEquals(msg?.type, "connect");
    assertEquals((await answer as { reason?: string }).reason, "timeout");
    // The server gave the stream up: reading it ends (reset), it carries nothing more.
    const left = await readAll(rest).catch(() => new Uint8Array(0));
    assertEquals(left.length, 0);
    conn.close();
    rest.close();
  } finally {
    await local.close();
    await depot.close();
  }
});

for (const presentKey of ["wrong", "none"] as const) {
  Deno.test(`depot open: a mux session with ${presentKey} session key gets no requests`, async () => {
    const depot = await startDepot({ locals: [], server: { token: "t" } });
    const local = await openLocal(depot, { presentKey });
    try {
      const client = socksDial(depot.socksPort, { host: "app.invalid", port: 80 });
      // The request goes the old way: a connect on the control connection.
      const req = await local.ctl.expect("connect", 60_000);
      assertEquals(req.host, "app.invalid");
      const accepted = await Promise.race([
        local.mux.accept(),
        new Promise((r) => setTimeout(() => r("none"), 200)),
      ]);
      assertEquals(accepted, "none");
      await local.ctl.send({ type: "connectFailed", id: req.id, reason: "refused" });
      assertEquals((await client.catch((e) => e) as { reason?: string }).reason, "refused");
    } finally {
      await local.close();
      await depot.close();
    }
  });
}

Deno.test("depot open: real --mux locals relay byte-exact over server-opened streams", async () => {
  const target = startTarget();
  const depot = await startDepot({ locals: [{ mux: true }] });
  try {
    // Concurrent echoes and one 8 MiB download, each checked.
    const echo = async (i: number) => {
      const c = await socksDial(depot.socksPort, { host: "127.0.0.1", port: target.port });
      const body = `E${"x".repeat(i * 100)}`;
      await writeAll(c, enc.encode(body));
      await c.closeWrite();
      assertEquals(dec.decode(await readAll(c)), body.slice(1));
      c.close();
    };
    await Promise.all(Array.from({ length: 20 }, (_, i) => echo(i)));
    const bytes = 8 << 20;
    const c = await socksDial(depot.socksPort, { host: "127.0.0.1", port: target.port });
    await writeAll(c, enc.encode(`D${bytes}\n`));
    assertEquals((await readAll(c)).length, bytes);
    c.close();
    assertEquals(depot.server.status().muxSessions, 1);
  } finally {
    await depot.close();
    await target.close();
  }
});

/** A hand-driven local with "open" (and `features`) and its standby spares. */
async function standbyLocal(
  depot: { controlPort: number; tunnelPort: number },
  features: string[] = ["open"],
): Promise<{ ctl: ControlConn<DepotMessage>; sessionKey: string; standbyMax?: number }> {
  const ctl = new ControlConn(await dial("127.0.0.1", depot.controlPort), depotProtocol);
  await ctl.send({ type: "hello", role: "depot-local", token: "t", name: "default", features });
  const welcome = await ctl.expect("welcome", 60_000);
  return { ctl, sessionKey: welcome.sessionKey!, standbyMax: welcome.standbyMax };
}

/** Dial the tunnel port and announce a standby spare. */
async function standby(tunnelPort: number, sessionKey: string): Promise<Deno.TcpConn> {
  const conn = await dial("127.0.0.1", tunnelPort);
  await new ControlWriter(conn, depotProtocol).send({
    type: "standby",
    name: "default",
    sessionKey,
  });
  return conn;
}

/**
 * The hand-driven local's end of its control connection, read in the background: it answers
 * the server's pings (so a slow run never has the exit dropped as silent) and keeps the other
 * messages in `got`. `sync()` is a round trip: the server answers a ping in the loop that
 * handles `end`, after every frame sent before it, so once its pong is here the server has
 * handled those frames, and every frame it sent before has arrived.
 */
function controlSide(ctl: ControlConn<DepotMessage>): {
  got: string[];
  sync(): Promise<void>;
  close(): Promise<void>;
} {
  const got: string[] = [];
  const pongs = new Map<number, () => void>();
  let nextTs = 1;
  const loop = (async () => {
    try {
      for (let m = await ctl.reader.read(); m !== null; m = await ctl.reader.read()) {
        if (m.type === "ping") await ctl.send({ type: "pong", ts: m.ts });
        else if (m.type === "pong") pongs.get(m.ts)?.();
        else got.push(m.type);
      }
    } catch {
      // Closed by close() at the end of the test; what arrived before is in `got`.
    }
  })();
  return {
    got,
    async sync() {
      const ts = nextTs++;
      const pong = new Promise<void>((r) => pongs.set(ts, r));
      await ctl.send({ type: "ping", ts });
      await within(pong, "the server's pong");
    },
    async close() {
      ctl.close();
      await loop;
    },
  };
}

Deno.test("depot open: a request is written on a standby spare and answered there; end{id} may come first", async () => {
  const depot = await startDepot({ locals: [], server: { token: "t", heartbeatMs: 200 } });
  const local = await standbyLocal(depot, ["open", "end"]);
  const spare = await standby(depot.tunnelPort, local.sessionKey);
  const side = controlSide(local.ctl);
  try {
    await until("the standby held", () => depot.server.status().exits[0]?.spares === 1);
    const client = socksDial(depot.socksPort, { host: "app.invalid", port: 8080 });
    const { msg, rest } = await firstFrame(spare as unknown as Stream);
    assertEquals(msg?.type, "connect");
    const req = msg as Extract<DepotMessage, { type: "connect" }>;
    // The local relays at once: its end{id} (control connection) may overtake the answer.
    await local.ctl.send({ type: "end", id: req.id });
    await side.sync(); // the server has taken the end before the answer
    await new ControlWriter(rest, depotProtocol).send({ type: "tunnel", id: req.id, key: req.key });
    await writeAll(rest, enc.encode("down"));
    await rest.closeWrite();
    const c = await client;
    // A clean end: the confirmed FIN reaches the client as a FIN, not a reset.
    assertEquals(dec.decode(await readAll(c)), "down");
    await writeAll(c, enc.encode("up"));
    await c.closeWrite();
    assertEquals(dec.decode(await readAll(rest)), "up");
    c.close();
    await side.sync();
    assertEquals(side.got, [], "nothing of the request on the control connection");
  } finally {
    spare.close();
    await side.close();
    await depot.close();
  }
});

Deno.test("depot open: a fresh tunnel naming a request written on a standby spare is refused; the spare's answer still counts", async () => {
  const depot = await startDepot({ locals: [], server: { token: "t" } });
  const local = await standbyLocal(depot);
  const spare = await standby(depot.tunnelPort, local.sessionKey);
  const side = controlSide(local.ctl);
  let fresh: Deno.TcpConn | undefined;
  try {
    await until("the standby held", () => depot.server.status().exits[0]?.spares === 1);
    const client = socksDial(depot.socksPort, { host: "app.invalid", port: 8080 });
    const { msg, rest } = await firstFrame(spare as unknown as Stream);
    const req = msg as Extract<DepotMessage, { type: "connect" }>;
    assertEquals(req.type, "connect");
    // Its id and key named on a new tunnel connection, as a control-path request's would be.
    fresh = await dial("127.0.0.1", depot.tunnelPort);
    await new ControlWriter(fresh, depotProtocol).send({
      type: "tunnel",
      id: req.id,
      key: req.key,
    });
    const refusal = await nextWithin(
      new ControlReader(new BufferedReader(fresh, 1024), depotProtocol),
      "the server's answer to the fresh tunnel",
    );
    assertEquals(refusal?.type, "error");
    assertEquals((refusal as { reason?: string }).reason, "unknown-request");
    // The request is still pending on its spare, answered there.
    await new ControlWriter(rest, depotProtocol).send({ type: "tunnel", id: req.id, key: req.key });
    await writeAll(rest, enc.encode("down"));
    await rest.closeWrite();
    const c = await client;
    assertEquals(dec.decode(await readAll(c)), "down");
    c.close();
  } finally {
    fresh?.close();
    spare.close();
    await side.close();
    await depot.close();
  }
});

Deno.test("depot open: welcome announces standbyMax; the server holds that many standby spares and closes one more", async () => {
  const depot = await startDepot({ locals: [], server: { token: "t" } });
  const local = await standbyLocal(depot);
  const spares: Deno.TcpConn[] = [];
  try {
    // 16 before the field: under 32 concurrent clients a fifth of the requests found none.
    assertEquals(local.standbyMax, maxStandbyPerExit);
    assert(maxStandbyPerExit >= 64, "room for a burst of 32 concurrent requests and refills");
    for (let i = 0; i <= maxStandbyPerExit; i++) {
      spares.push(await standby(depot.tunnelPort, local.sessionKey));
    }
    // Idle standbys get nothing from the server: the one past the bound is closed (EOF).
    const buf = new Uint8Array(64);
    const closed = await within(
      Promise.race(spares.map((c, i) => c.read(buf).then((n) => ({ i, n })))),
      "the standby past standbyMax to be closed",
    );
    assertEquals(closed.n, null);
    const held = () => depot.server.status().exits[0]?.spares;
    await until(`${maxStandbyPerExit} standby spares held`, () => held() === maxStandbyPerExit);
  } finally {
    for (const c of spares) c.close();
    local.ctl.close();
    await depot.close();
  }
});

Deno.test("depot open: a standby spare unanswered in time is reset, the client gets 0x06; the next request takes another", async () => {
  const depot = await startDepot({
    locals: [],
    server: { token: "t", pendingTimeoutMs: 300, heartbeatMs: 200 },
  });
  const local = await standbyLocal(depot, ["open", "end"]);
  const first = await standby(depot.tunnelPort, local.sessionKey);
  try {
    await until("the standby held", () => depot.server.status().exits[0]?.spares === 1);
    const conn = await dial("127.0.0.1", depot.socksPort);
    const answer = socks5Connect(conn, { host: "127.0.0.1", port: 9 }).catch((e) => e);
    const { msg, rest } = await firstFrame(first as unknown as Stream);
    assertEquals(msg?.type, "connect");
    assertEquals((await answer as { reason?: string }).reason, "timeout");
    // Given up: the spare is reset and carries nothing more; the request is no longer pending.
    const left = await readAll(rest).catch(() => new Uint8Array(0));
    assertEquals(left.length, 0);
    assertEquals(depot.server.pendingCount, 0);
    conn.close();
    // A late answer on it changes nothing; a new standby serves the next request byte-exact.
    const second = await standby(depot.tunnelPort, local.sessionKey);
    await until("the second standby held", () => depot.server.status().exits[0]?.spares === 1);
    const client = socksDial(depot.socksPort, { host: "app.invalid", port: 8080 });
    const got = await firstFrame(second as unknown as Stream);
    const req = got.msg as Extract<DepotMessage, { type: "connect" }>;
    assertEquals(req.type, "connect");
    await new ControlWriter(got.rest, depotProtocol).send({
      type: "tunnel",
      id: req.id,
      key: req.key,
    });
    await writeAll(got.rest, enc.encode("late-free"));
    await got.rest.closeWrite();
    await local.ctl.send({ type: "end", id: req.id });
    const c = await client;
    assertEquals(dec.decode(await readAll(c)), "late-free");
    c.close();
    second.close();
  } finally {
    first.close();
    local.ctl.close();
    await depot.close();
  }
});

Deno.test("depot open: a standby spare with a wrong session key is refused; a closed one is skipped", async () => {
  const depot = await startDepot({ locals: [], server: { token: "t" } });
  const local = await standbyLocal(depot);
  const wrong = await standby(depot.tunnelPort, "0".repeat(32));
  const closing = await standby(depot.tunnelPort, local.sessionKey);
  try {
    const r = new BufferedReader(wrong, 1024);
    const refusal = await nextWithin(
      new ControlReader(r, depotProtocol),
      "the refusal of the spare",
    );
    assertEquals((refusal as { reason?: string }).reason, "bad-key");
    const held = () => depot.server.status().exits[0]?.spares;
    await until("the standby held", () => held() === 1);
    closing.close(); // the local replaced it: the server must not count on it
    await until("the closed standby dropped", () => held() === 0);
    const client = socksDial(depot.socksPort, { host: "app.invalid", port: 80 });
    // No usable spare: the request goes the old way, on the control connection.
    const req = await local.ctl.expect("connect", 60_000);
    await local.ctl.send({ type: "connectFailed", id: req.id, reason: "refused" });
    assertEquals((await client.catch((e) => e) as { reason?: string }).reason, "refused");
  } finally {
    wrong.close();
    local.ctl.close();
    await depot.close();
  }
});

Deno.test("depot open: real locals with standby spares relay byte-exact, sequential and concurrent", async () => {
  const target = startTarget();
  const depot = await startDepot({ locals: [{}] });
  try {
    for (let i = 0; i < 30; i++) {
      const c = await socksDial(depot.socksPort, { host: "127.0.0.1", port: target.port });
      await writeAll(c, enc.encode(`E${i}`));
      await c.closeWrite();
      assertEquals(dec.decode(await readAll(c)), String(i));
      c.close();
    }
    const bytes = 8 << 20;
    await Promise.all(Array.from({ length: 4 }, async () => {
      const c = await socksDial(depot.socksPort, { host: "127.0.0.1", port: target.port });
      await writeAll(c, enc.encode(`D${bytes}\n`));
      assertEquals((await readAll(c)).length, bytes);
      c.close();
    }));
    assert(depot.locals[0].status().spares!.hits >= 30, "requests were served by standby spares");
  } finally {
    await depot.close();
    await target.close();
  }
});
