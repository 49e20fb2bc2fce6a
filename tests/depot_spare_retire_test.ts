/**
 * depot "retire": the server, which picks the standby spare a request is written on, retires
 * the ones idle for 1.25 x `spareIdleMs` itself (an `error{reason: "retired"}` frame, then the end),
 * and the local keeps its standby spares until then and replaces the retired ones. Before, the
 * local closed its spares at its own clock: a request the server wrote on a spare the local had
 * just closed went unanswered (the server asked again elsewhere), and the local logged
 * `standby spare refused frame=connect` for each one it read anyway (bursts of them after an
 * idle pause: a burst's spares were dialled together and expired together).
 */
import { BufferedReader, ControlConn, ControlReader, encodeFrame } from "../lib/control/mod.ts";
import {
  DepotLocal,
  type DepotMessage,
  depotProtocol,
  standbyRetiredReason,
} from "../lib/depot/mod.ts";
import { Logger } from "../lib/log.ts";
import { closeQuietly, dial, type Duplex, sleep, withPrefix, writeAll } from "../lib/net/mod.ts";
import { assert, assertEquals } from "./_assert.ts";
import { handServer, socksDial, startDepot, startTarget } from "./_depot.ts";
import { nextWithin, readAll, until, within } from "./_util.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** The lines of `lines` that contain `text`. */
function count(lines: readonly string[], text: string): number {
  return lines.filter((l) => l.includes(text)).length;
}

/** A standby spare the hand-driven server holds: where it writes requests, where answers come. */
interface HeldStandby {
  conn: Duplex;
  buffered: BufferedReader;
  answers: ControlReader<DepotMessage>;
}

Deno.test("depot retire: the local keeps its standby spares past spareIdleMs until the server retires them, and replaces a retired one", async () => {
  const target = startTarget();
  const sessionKey = "ef".repeat(16);
  const held: HeldStandby[] = [];
  const server = handServer({
    // A server that retires standbys itself: the local must not close them at spareIdleMs.
    welcome: {
      name: "default",
      heartbeatMs: 60_000,
      features: ["end", "udp", "open", "retire"],
      // Long enough that the steps below, past the sleep, end well before the local would take
      // a retirement for lost (4 x spareIdleMs after the spares' dial) on a loaded box.
      spareIdleMs: 1_000,
      sessionKey,
      standbyMax: 8,
    },
    onTunnel({ first, rest }) {
      if (first?.type !== "standby") return;
      assertEquals(first.sessionKey, sessionKey);
      const buffered = new BufferedReader(rest, 1024);
      held.push({ conn: rest, buffered, answers: new ControlReader(buffered, depotProtocol) });
    },
  });
  const lines: string[] = [];
  const local = new DepotLocal({
    server: { host: "127.0.0.1", port: server.controlPort },
    backoff: { initialMs: 50, maxMs: 500 },
    log: new Logger("debug", {}, (l) => void lines.push(l)),
  });
  const running = local.run();
  try {
    const hello = await within(server.welcomed, "hello and welcome");
    assert(hello.features?.includes("retire"), "the local offers retire");
    await local.waitConnected(true, 10_000);
    await until("2 standby spares at the tunnel port", () => held.length === 2);
    // 1.5 x spareIdleMs: a local expiring its spares at that age (checked every quarter of it)
    // closed and replaced both by now. (This one gives a retirement that never came four
    // times that: below.)
    await sleep(1_500);
    assertEquals(held.length, 2, "no standby spare was replaced: none expired at the local");
    // A request written on the first spare, long past spareIdleMs, is answered there.
    const key = "12".repeat(16);
    const req = { type: "connect", id: 1, key, host: "127.0.0.1", port: target.port };
    await writeAll(held[0].conn, encodeFrame({ v: depotProtocol.version, ...req }));
    const answer = await nextWithin(held[0].answers, "the answer on the spare");
    assertEquals([answer?.type, (answer as { id?: number }).id], ["tunnel", 1]);
    const tunnel = withPrefix(held[0].conn, held[0].buffered.takeBuffered());
    await writeAll(tunnel, enc.encode("Eidle"));
    await tunnel.closeWrite();
    assertEquals(dec.decode(await readAll(tunnel)), "idle");
    // Answered: its replacement is dialled.
    await until("the used spare replaced", () => held.length === 3);
    // The server retires the second: the local closes it and dials a replacement, no warning.
    await writeAll(
      held[1].conn,
      encodeFrame({
        v: depotProtocol.version,
        type: "error",
        reason: standbyRetiredReason,
        message: "idle",
      }),
    );
    assertEquals(await nextWithin(held[1].answers, "the retired spare's end"), null);
    await until("the retired spare replaced", () => held.length === 4);
    const spares = local.status().spares!;
    assertEquals([spares.ready, spares.hits, spares.misses], [2, 1, 0]);
    assertEquals(lines.filter((l) => l.includes("level=warn")), []);
    assertEquals(count(lines, "standby spare retired by the server"), 1);
    // The two held now are never retired here: at four times spareIdleMs the local takes their
    // retirement for lost (a connection that died unseen) and replaces them itself.
    await until("the unretired spares replaced", () => held.length === 6);
    assertEquals(local.status().spares!.ready, 2);
  } finally {
    await local.stop();
    await running;
    await server.close();
    await target.close();
  }
});

Deno.test("depot retire: a local against a server without retire still replaces its spares at spareIdleMs", async () => {
  const sessionKey = "ef".repeat(16);
  let standbys = 0;
  const server = handServer({
    welcome: {
      name: "default",
      heartbeatMs: 60_000,
      features: ["end", "udp", "open"],
      spareIdleMs: 50,
      sessionKey,
      standbyMax: 8,
    },
    onTunnel({ first }) {
      if (first?.type === "standby") standbys++;
    },
  });
  const local = new DepotLocal({
    server: { host: "127.0.0.1", port: server.controlPort },
    backoff: { initialMs: 50, maxMs: 500 },
  });
  const running = local.run();
  try {
    await within(server.welcomed, "hello and welcome");
    await local.waitConnected(true, 10_000);
    // Such a server never retires them (and would cut silent connections): the local does.
    await until("the first 2 spares expired and replaced", () => standbys >= 4);
  } finally {
    await local.stop();
    await running;
    await server.close();
  }
});

/** A hand-driven local announcing `features`: its control connection and session key. */
async function handLocal(
  controlPort: number,
  features: string[],
): Promise<{ ctl: ControlConn<DepotMessage>; sessionKey: string }> {
  const ctl = new ControlConn(await dial("127.0.0.1", controlPort), depotProtocol);
  await ctl.send({ type: "hello", role: "depot-local", token: "t", name: "default", features });
  const welcome = await ctl.expect("welcome", 60_000);
  assert(welcome.features?.includes("retire"), "the server offers retire");
  return { ctl, sessionKey: welcome.sessionKey! };
}

/** Dial the tunnel port and announce a standby spare; its reader. */
async function standby(
  tunnelPort: number,
  sessionKey: string,
): Promise<{ conn: Deno.TcpConn; reader: ControlReader<DepotMessage> }> {
  const conn = await dial("127.0.0.1", tunnelPort);
  await writeAll(
    conn,
    encodeFrame({ v: depotProtocol.version, type: "standby", name: "default", sessionKey }),
  );
  return { conn, reader: new ControlReader(new BufferedReader(conn, 1024), depotProtocol) };
}

Deno.test("depot retire: the server retires an idle standby only for a local that announced retire", async () => {
  const depot = await startDepot({
    locals: [],
    server: { token: "t", spareIdleMs: 100, heartbeatMs: 60_000 },
  });
  const spares = () => depot.server.status().exits[0]?.spares;
  try {
    // Announced: retired with its reason, then closed; the server holds none.
    const retiring = await handLocal(depot.controlPort, ["open", "retire"]);
    const a = await standby(depot.tunnelPort, retiring.sessionKey);
    const retired = await nextWithin(a.reader, "the retire frame");
    assertEquals([retired?.type, (retired as { reason?: string }).reason], [
      "error",
      standbyRetiredReason,
    ]);
    assertEquals(await nextWithin(a.reader, "the end of the retired spare"), null);
    await until("the retired spare dropped", () => spares() === 0);
    a.conn.close();
    retiring.ctl.close();
    await until("the first exit gone", () => depot.server.status().exits.length === 0);
    // Not announced: held however long it waits, and the next request is written on it.
    const old = await handLocal(depot.controlPort, ["open"]);
    const b = await standby(depot.tunnelPort, old.sessionKey);
    try {
      await until("the standby held", () => spares() === 1);
      await sleep(500); // five times spareIdleMs
      assertEquals(spares(), 1);
      const client = socksDial(depot.socksPort, { host: "app.invalid", port: 80 }).catch((e) => e);
      const req = await nextWithin(b.reader, "the request on the standby");
      assertEquals(req?.type, "connect");
      b.conn.close(); // unanswered: the request goes on the control connection
      const again = await old.ctl.expect("connect", 60_000);
      await old.ctl.send({ type: "connectFailed", id: again.id, reason: "refused" });
      assertEquals((await client as { reason?: string }).reason, "refused");
    } finally {
      closeQuietly(b.conn);
      old.ctl.close();
    }
  } finally {
    await depot.close();
  }
});

Deno.test("depot retire: real peers, requests after idle pauses around spareIdleMs all go on standby spares, none asked twice", async () => {
  const target = startTarget();
  const localLines: string[] = [];
  const serverLines: string[] = [];
  const depot = await startDepot({
    server: { spareIdleMs: 100, log: new Logger("debug", {}, (l) => void serverLines.push(l)) },
    locals: [{ log: new Logger("debug", {}, (l) => void localLines.push(l)) }],
  });
  const local = depot.locals[0];
  try {
    // Retired by the server and replaced by the local, again and again while idle.
    await until("spares retired and replaced", () => {
      return count(localLines, "standby spare retired by the server") >= 4;
    });
    const before = local.status().spares!;
    let n = 0;
    for (let round = 0; round < 12; round++) {
      // Pauses from under spareIdleMs to past the retirement (125 ms), then a burst of 4.
      await sleep(60 + 10 * round);
      await Promise.all(Array.from({ length: 4 }, async () => {
        const text = `r${n++}`;
        const c = await socksDial(depot.socksPort, { host: "127.0.0.1", port: target.port });
        await writeAll(c, enc.encode(`E${text}`));
        await c.closeWrite();
        assertEquals(dec.decode(await readAll(c)), text);
        c.close();
      }));
    }
    assertEquals(local.status().failures, 0);
    assertEquals(count(serverLines, "standby spare ended unanswered"), 0, "no request asked twice");
    assertEquals(localLines.filter((l) => l.includes("level=warn")), []);
    const after = local.status().spares!;
    assertEquals(after.hits - before.hits + after.misses - before.misses, 48);
  } finally {
    await depot.close();
    await target.close();
  }
});
