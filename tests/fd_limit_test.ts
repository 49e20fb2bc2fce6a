/**
 * Services out of file descriptors (EMFILE; the limit lowered on the running process with
 * prlimit). seaprox's and depot-server's SOCKS accept loops log the shortage once, retry every
 * `acceptRetryMs` (never a spin: the failed accepts of a streak are bounded by its length over
 * the pause, read off the service's own log), keep relaying what they hold, and serve again
 * once fds are free. depot-server out of fds closes its idle standby spares (up to 64 per
 * exit, an fd each) but the 2 newest of each exit, so SOCKS clients get in. depot-local refuses
 * the requests it cannot dial at once (0x01 at the client, never a hang), warns that it is out
 * of fds (before: one info line per request, reason "other"), keeps its session and live
 * relays, and serves again once the limit is raised.
 */

import { assert, assertEquals } from "./_assert.ts";
import { portFor } from "./_seaprox.ts";
import {
  listenLocal,
  portOf,
  type ServiceProcess,
  setFdLimit,
  startService,
  until,
  within,
} from "./_util.ts";
import { startDepotLocalService, startDepotServerService } from "./_depot.ts";
import {
  acceptRetryMs,
  BufferedReader,
  closeQuietly,
  dial,
  type Duplex,
  withPrefix,
  writeAll,
} from "../lib/net/mod.ts";
import { ControlConn, ControlWriter } from "../lib/control/mod.ts";
import { type DepotMessage, depotProtocol } from "../lib/depot/mod.ts";
import { Reply, socks5Connect, Socks5ReplyError } from "../lib/socks5/mod.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** An echo server in this process (whose fds are not limited). */
function startEcho(): { port: number; close(): Promise<void> } {
  const l = listenLocal();
  const conns = new Set<Deno.Conn>();
  const loop = (async () => {
    for await (const c of l) {
      conns.add(c);
      void (async () => {
        const b = new Uint8Array(4096);
        try {
          for (let n; (n = await c.read(b)) !== null;) await writeAll(c, b.subarray(0, n));
        } catch {
          // The client reset it: nothing to echo any more.
        }
        conns.delete(c);
        closeQuietly(c);
      })();
    }
  })();
  return {
    port: l.addr.port,
    async close() {
      l.close();
      for (const c of conns) closeQuietly(c);
      await loop;
    },
  };
}

/** A SOCKS5 connection through `socksPort` to `port` on this host. */
async function socksTo(socksPort: number, port: number): Promise<Duplex & { raw: Deno.TcpConn }> {
  const conn = await dial("127.0.0.1", socksPort);
  try {
    const { leftover } = await within(
      socks5Connect(conn, { host: "127.0.0.1", port }),
      "the SOCKS5 reply",
    );
    return Object.assign(withPrefix(conn, leftover), { raw: conn });
  } catch (err) {
    conn.close();
    throw err;
  }
}

/** One echo round trip on a relayed connection. */
async function echoes(c: Duplex, text: string): Promise<void> {
  await writeAll(c, enc.encode(text));
  const b = new Uint8Array(text.length);
  let got = 0;
  while (got < b.length) {
    const n = await within(c.read(b.subarray(got)), `the echo of ${text}`);
    assert(n !== null, `EOF before the echo of ${text}`);
    got += n;
  }
  assertEquals(dec.decode(b), text);
}

/** Wait for a log line, failing at once with the log if the service exits first. */
async function lineOrDeath(svc: ServiceProcess, re: RegExp, from = 0): Promise<string> {
  const death = svc.child.status.then((s) =>
    Promise.reject(new Error(`service died (exit ${s.code}):\n${svc.lines.join("\n")}`))
  );
  return await Promise.race([svc.waitFor(re, 60_000, from), death]);
}

/** The `ts=` of a log line, in ms. */
function tsOf(line: string): number {
  return Date.parse(/^ts=(\S+)/.exec(line)![1]);
}

/**
 * With `svc`'s fds nearly used up, fill them with idle connections to `port` (its SOCKS
 * listener): the accept loop must say so once, keep `live` relaying, back off between
 * retries, and accept again once the idle connections are gone.
 */
async function acceptsThroughShortage(
  svc: ServiceProcess,
  listener: string,
  port: number,
  live: Duplex,
): Promise<void> {
  await setFdLimit(svc.child.pid, { openPlus: 4 });
  const idle: Deno.TcpConn[] = [];
  let failedLine: string;
  try {
    // Connects complete in the kernel's backlog; the service takes them until it has no fd.
    for (let i = 0; i < 12; i++) idle.push(await dial("127.0.0.1", port));
    failedLine = await lineOrDeath(
      svc,
      new RegExp(`listener=${listener} msg="accept failed, retrying".*Too many open files`),
    );
    await echoes(live, "still relaying while out of fds");
  } finally {
    for (const c of idle) c.close();
  }
  const again = await lineOrDeath(
    svc,
    new RegExp(`listener=${listener} msg="accepting again"`),
    svc.lines.indexOf(failedLine),
  );
  // Each failed accept of the streak but the last was followed by a pause of acceptRetryMs
  // (a timer never fires early): a spinning loop fails this whatever the machine's speed.
  const failed = Number(/failedAccepts=(\d+)/.exec(again)![1]);
  const streakMs = tsOf(again) - tsOf(failedLine);
  assert(failed >= 1 && failed <= streakMs / acceptRetryMs + 2, `${failed} in ${streakMs} ms`);
  assertEquals(await Promise.race([svc.child.status.then((s) => s.code), undefined]), undefined);
}

Deno.test("fd limit: seaprox's SOCKS5 listener out of fds backs off, keeps relaying, serves again", async () => {
  const echo = startEcho();
  const svc = await startService("seaprox.ts", ["--listen=socks5://127.0.0.1:0"]);
  const socks = portFor(svc, "socks5");
  const live = await socksTo(socks, echo.port);
  try {
    await echoes(live, "before");
    await acceptsThroughShortage(svc, "socks5", socks, live);
    const fresh = await socksTo(socks, echo.port);
    await echoes(fresh, "a new client after the shortage");
    fresh.close();
  } finally {
    live.close();
    await svc.stop();
    await echo.close();
  }
});

/** depot-server and one depot-local, as processes. */
async function startDepotPair(): Promise<{ server: ServiceProcess; local: ServiceProcess }> {
  const env = { DEPOT_TOKEN: "fd-token" };
  const server = await startDepotServerService([], { env });
  try {
    const local = await startDepotLocalService(server, [], { env });
    return { server, local };
  } catch (err) {
    await server.stop();
    throw err;
  }
}

Deno.test("fd limit: depot-server's SOCKS listener out of fds backs off, keeps relaying, serves again", async () => {
  const echo = startEcho();
  const { server, local } = await startDepotPair();
  const socks = portOf(server.addrs.get("socks")!);
  const live = await socksTo(socks, echo.port);
  try {
    await echoes(live, "before");
    await acceptsThroughShortage(server, "socks", socks, live);
    const fresh = await socksTo(socks, echo.port);
    await echoes(fresh, "a new client after the shortage");
    fresh.close();
  } finally {
    live.close();
    await local.stop();
    await server.stop();
    await echo.close();
  }
});

Deno.test("fd limit: depot-local out of fds refuses requests at once with a warning, keeps its session, serves again", async () => {
  const echo = startEcho();
  const { server, local } = await startDepotPair();
  const socks = portOf(server.addrs.get("socks")!);
  const live = await socksTo(socks, echo.port);
  const held: Duplex[] = [];
  try {
    await echoes(live, "before");
    const from = local.lines.length;
    const was = await setFdLimit(local.child.pid, { openPlus: 3 });
    // Each relayed request holds a target connection (and uses a spare): before long the
    // local cannot dial, and the client is told so (never left waiting).
    let refused: Socks5ReplyError | undefined;
    for (let i = 0; i < 20 && !refused; i++) {
      try {
        held.push(await socksTo(socks, echo.port));
      } catch (err) {
        if (!(err instanceof Socks5ReplyError)) throw err;
        refused = err;
      }
    }
    assert(refused, `20 requests relayed with 3 fds to spare:\n${local.lines.join("\n")}`);
    assertEquals(refused.reply, Reply.generalFailure);
    const warn = await lineOrDeath(local, /level=warn .*msg="out of file descriptors/, from);
    assert(/failedDials=\d+/.test(warn) && /Too many open files/.test(warn), warn);
    await echoes(live, "still relaying while out of fds");
    await setFdLimit(local.child.pid, was);
    for (const c of held.splice(0)) c.close();
    const fresh = await socksTo(socks, echo.port);
    await echoes(fresh, "a new request after the shortage");
    fresh.close();
    assert(
      !local.lines.slice(from).some((l) => /msg="disconnected"/.test(l)),
      "the session stayed up",
    );
  } finally {
    for (const c of held) c.close();
    live.close();
    await local.stop();
    await server.stop();
    await echo.close();
  }
});

/** A hand-driven depot-local announcing "open": its control connection and session key. */
async function openExit(
  controlAddr: string,
  token: string,
): Promise<{ ctl: ControlConn<DepotMessage>; sessionKey: string }> {
  const ctl = new ControlConn(await dial("127.0.0.1", portOf(controlAddr)), depotProtocol);
  await ctl.send({
    type: "hello",
    role: "depot-local",
    token,
    name: "default",
    features: ["open"],
  });
  const welcome = await ctl.expect("welcome", 60_000);
  assert(welcome.sessionKey, "the server offers open");
  // Its pings answered (receive() does) until the connection ends with the test.
  void (async () => {
    while ((await ctl.receive()) !== null) { /* nothing is asked of this exit */ }
  })().catch(() => {
    // The test closed it.
  });
  return { ctl, sessionKey: welcome.sessionKey };
}

/** Dial the tunnel port and announce a standby spare. */
async function standby(tunnelAddr: string, sessionKey: string): Promise<Deno.TcpConn> {
  const conn = await dial("127.0.0.1", portOf(tunnelAddr));
  await new ControlWriter(conn, depotProtocol).send({
    type: "standby",
    name: "default",
    sessionKey,
  });
  return conn;
}

Deno.test("fd limit: depot-server out of fds closes idle standby spares so SOCKS clients get in", async () => {
  const token = "fd-token";
  const server = await startDepotServerService(["--status", ":0"], {
    readyCount: 4,
    env: { DEPOT_TOKEN: token },
  });
  const conns: Deno.TcpConn[] = [];
  let ctl: ControlConn<DepotMessage> | undefined;
  try {
    const exit = await openExit(server.addrs.get("control")!, token);
    ctl = exit.ctl;
    // Idle standby spares, each an fd at the server, oldest first.
    const n = 20;
    const spares: Deno.TcpConn[] = [];
    for (let i = 0; i < n; i++) {
      spares.push(await standby(server.addrs.get("tunnel")!, exit.sessionKey));
    }
    conns.push(...spares);
    const held = async () => {
      const res = await fetch(`http://${server.addrs.get("status")}/status`);
      return ((await res.json()) as { exits: { spares: number }[] }).exits[0]?.spares;
    };
    await until(`${n} standby spares held`, async () => (await held()) === n);
    const from = server.lines.length;
    await setFdLimit(server.child.pid, { openPlus: 1 });
    // SOCKS clients: with every fd taken by idle spares they would wait in the backlog, one
    // let in each time the handshake timer (10 s) closed the one before.
    const clients: Deno.TcpConn[] = [];
    const socks = portOf(server.addrs.get("socks")!);
    for (let i = 0; i < 8; i++) clients.push(await dial("127.0.0.1", socks));
    conns.push(...clients);
    const selected = await within(
      Promise.all(clients.map(async (c) => {
        await writeAll(c, Uint8Array.of(5, 1, 0));
        return [...await new BufferedReader(c, 16).readExact(2)];
      })),
      "every SOCKS client's method selection",
    );
    assertEquals(selected, clients.map(() => [5, 0]));
    const warn = await server.waitFor(
      /msg="out of file descriptors: idle standby spares closed"/,
      60_000,
      from,
    );
    assert(/closed=18 keptPerExit=2/.test(warn), warn);
    // The oldest went (EOF at this end); the two newest stay for requests.
    for (const c of spares.slice(0, n - 2)) {
      assertEquals(
        await within(c.read(new Uint8Array(1)).catch(() => null), "a closed spare's EOF"),
        null,
      );
    }
    assertEquals(await held(), 2, "the two newest spares still held");
  } finally {
    for (const c of conns) closeQuietly(c);
    ctl?.close();
    await server.stop();
  }
});
