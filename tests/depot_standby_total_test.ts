/**
 * depot-server bounds the idle standby spares ("open") across all exits (`standbyTotal`,
 * `--standby-total`): each exit holds its share (the total over the exits connected, at least
 * 1, at most 64), announced in welcome; one past it is closed, and an exit that connects trims
 * the others' oldest to the new share. Before, every exit held 64 whatever the number of exits
 * (each an fd). Driven by hand on the locals' side, so exactly what is held is checked.
 * A `--mux` exit holds no standby spares and takes no share; an exit that leaves gives its
 * share back, and a local that announced "share" is told its new bound (`standbyShare`) each
 * time it changes (before, only the welcome said it: a remaining exit's local kept its smaller
 * share for good).
 */
import { ControlConn, ControlReader, ControlWriter } from "../lib/control/mod.ts";
import { type DepotMessage, depotProtocol } from "../lib/depot/mod.ts";
import { BufferedReader, dial } from "../lib/net/mod.ts";
import { assertEquals } from "./_assert.ts";
import { startDepot } from "./_depot.ts";
import { until, within } from "./_util.ts";

/**
 * A hand-driven local of exit `name` announcing "open" (and `features`): its control connection
 * and welcome.
 */
async function openExit(controlPort: number, name: string, features: string[] = []) {
  const ctl = new ControlConn(await dial("127.0.0.1", controlPort), depotProtocol);
  await ctl.send({
    type: "hello",
    role: "depot-local",
    token: "t",
    name,
    features: ["open", ...features],
  });
  const welcome = await ctl.expect("welcome", 60_000);
  return { ctl, sessionKey: welcome.sessionKey!, standbyMax: welcome.standbyMax };
}

/** Dial the tunnel port and announce a standby spare of exit `name`. */
async function standby(tunnelPort: number, name: string, sessionKey: string) {
  const conn = await dial("127.0.0.1", tunnelPort);
  await new ControlWriter<DepotMessage>(conn, depotProtocol).send({
    type: "standby",
    name,
    sessionKey,
  });
  return conn;
}

/** Whether the server closed `conn` (EOF; an idle standby is never written to otherwise). */
async function closedByServer(conn: Deno.TcpConn, what: string): Promise<boolean> {
  return await within(conn.read(new Uint8Array(64)), what) === null;
}

Deno.test("depot standby total: each exit holds its share of --standby-total; a new exit trims the others' oldest", async () => {
  const depot = await startDepot({ locals: [], server: { token: "t", standbyTotal: 6 } });
  const conns: Deno.TcpConn[] = [];
  const ctls: ControlConn<DepotMessage>[] = [];
  const held = (name: string) => depot.server.status().exits.find((e) => e.name === name)?.spares;
  try {
    const a = await openExit(depot.controlPort, "a");
    ctls.push(a.ctl);
    assertEquals(a.standbyMax, 6);
    const aSpares: Deno.TcpConn[] = [];
    for (let i = 0; i < 6; i++) aSpares.push(await standby(depot.tunnelPort, "a", a.sessionKey));
    conns.push(...aSpares);
    await until("exit a holds 6 standby spares", () => held("a") === 6);
    const over = await standby(depot.tunnelPort, "a", a.sessionKey);
    conns.push(over);
    assertEquals(await closedByServer(over, "the standby past a's share to be closed"), true);

    // B connects: each share is 3 now, and a's three oldest are closed.
    const b = await openExit(depot.controlPort, "b");
    ctls.push(b.ctl);
    assertEquals(b.standbyMax, 3);
    await until("exit a trimmed to 3 standby spares", () => held("a") === 3);
    for (let i = 0; i < 3; i++) {
      assertEquals(await closedByServer(aSpares[i], `a's old standby ${i} to be closed`), true);
    }
    for (let i = 0; i < 3; i++) conns.push(await standby(depot.tunnelPort, "b", b.sessionKey));
    await until("exit b holds 3 standby spares", () => held("b") === 3);
    const overB = await standby(depot.tunnelPort, "b", b.sessionKey);
    conns.push(overB);
    assertEquals(await closedByServer(overB, "the standby past b's share to be closed"), true);
    assertEquals([held("a"), held("b")], [3, 3]);
  } finally {
    for (const c of conns) c.close();
    for (const c of ctls) c.close();
    await depot.close();
  }
});

Deno.test("depot standby total: a --mux exit (no standby spares) takes no share", async () => {
  const depot = await startDepot({
    locals: [{ name: "m", mux: true }],
    server: { token: "t", standbyTotal: 6 },
  });
  const conns: Deno.TcpConn[] = [];
  let ctl: ControlConn<DepotMessage> | undefined;
  const held = () => depot.server.status().exits.find((e) => e.name === "a")?.spares;
  try {
    await until("m's mux session", () => depot.server.status().muxSessions === 1);
    const a = await openExit(depot.controlPort, "a");
    ctl = a.ctl;
    // The old code counted m: a's share was 3.
    assertEquals(a.standbyMax, 6);
    for (let i = 0; i < 6; i++) conns.push(await standby(depot.tunnelPort, "a", a.sessionKey));
    await until("exit a holds 6 standby spares", () => held() === 6);
    const over = await standby(depot.tunnelPort, "a", a.sessionKey);
    conns.push(over);
    assertEquals(await closedByServer(over, "the standby past a's share to be closed"), true);
  } finally {
    for (const c of conns) c.close();
    ctl?.close();
    await depot.close();
  }
});

Deno.test("depot standby total: an exit that leaves gives its share back; a local that hears 'share' is told each change", async () => {
  const depot = await startDepot({ locals: [], server: { token: "t", standbyTotal: 6 } });
  const conns: Deno.TcpConn[] = [];
  const ctls: ControlConn<DepotMessage>[] = [];
  const held = (name: string) => depot.server.status().exits.find((e) => e.name === name)?.spares;
  try {
    const a = await openExit(depot.controlPort, "a", ["share"]);
    ctls.push(a.ctl);
    assertEquals(a.standbyMax, 6);
    const b = await openExit(depot.controlPort, "b");
    ctls.push(b.ctl);
    assertEquals(b.standbyMax, 3);
    const told = async (what: string) => {
      const msg = await within(a.ctl.receive(), what);
      return msg?.type === "standbyShare" ? msg.standbyMax : msg;
    };
    assertEquals(await told("a told its share of 3 as b connects"), 3);
    b.ctl.close();
    await until("b gone", () => depot.server.exitNames().join() === "a");
    assertEquals(await told("a told its share of 6 again as b leaves"), 6);
    for (let i = 0; i < 6; i++) conns.push(await standby(depot.tunnelPort, "a", a.sessionKey));
    await until("exit a holds 6 standby spares again", () => held("a") === 6);
  } finally {
    for (const c of conns) c.close();
    for (const c of ctls) c.close();
    await depot.close();
  }
});

Deno.test("depot standby total: a local's standby bound follows its share as other exits come and go", async () => {
  const depot = await startDepot({
    locals: [{ name: "a" }],
    server: { token: "t", standbyTotal: 6 },
  });
  const max = () => depot.locals[0].status().spares?.max;
  try {
    assertEquals(max(), 6);
    const b = await depot.addLocal({ name: "b" });
    await until("a's local keeps at most 3 standby spares", () => max() === 3);
    await b.stop();
    // The old local kept 3 for good: only the welcome said its bound.
    await until("a's local keeps at most 6 again", () => max() === 6);
  } finally {
    await depot.close();
  }
});

Deno.test("depot standby total: the idle standby spares take no relayed connection's place at the tunnel listener", async () => {
  // Room for 2 relayed connections per listener, and the 2 standbys beside them.
  const depot = await startDepot({
    locals: [],
    server: { token: "t", standbyTotal: 2, maxConns: 2 },
  });
  const conns: Deno.TcpConn[] = [];
  let ctl: ControlConn<DepotMessage> | undefined;
  const held = () => depot.server.status().exits.find((e) => e.name === "a")?.spares;
  try {
    const a = await openExit(depot.controlPort, "a");
    ctl = a.ctl;
    for (let i = 0; i < 2; i++) conns.push(await standby(depot.tunnelPort, "a", a.sessionKey));
    await until("exit a holds 2 standby spares", () => held() === 2);
    // Two tunnels more are served (a request's tunnel: here one naming no request, answered
    // unknown-request); the old listener held 2 in all and closed them unanswered.
    for (let i = 1; i <= 2; i++) {
      const t = await dial("127.0.0.1", depot.tunnelPort);
      conns.push(t);
      await new ControlWriter<DepotMessage>(t, depotProtocol).send({
        type: "tunnel",
        id: i,
        key: "0".repeat(32),
      });
      const answer = await within(
        new ControlReader(new BufferedReader(t), depotProtocol).read(),
        `tunnel ${i}'s answer`,
      )
        .catch((err: Error) => err.message);
      assertEquals(
        answer !== null && typeof answer === "object" && answer.type === "error"
          ? answer.reason
          : answer,
        "unknown-request",
      );
    }
  } finally {
    for (const c of conns) c.close();
    ctl?.close();
    await depot.close();
  }
});
