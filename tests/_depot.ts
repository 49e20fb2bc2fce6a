/** Helpers for the control and depot tests: loopback pairs, frame builders, in-process depot. */
import {
  BufferedReader,
  ControlConn,
  ControlReader,
  ControlWriter,
  type Outgoing,
} from "../lib/control/mod.ts";
import {
  DepotLocal,
  type DepotLocalOptions,
  type DepotMessage,
  depotProtocol,
  DepotServer,
  type DepotServerOptions,
} from "../lib/depot/mod.ts";
import {
  closeQuietly,
  dial,
  type Duplex,
  type HostPort,
  withPrefix,
  writeAll,
} from "../lib/net/mod.ts";
import { socks5Connect } from "../lib/socks5/mod.ts";
import { assertEquals } from "./_assert.ts";
import {
  drainHash,
  listenLocal,
  nextWithin,
  sendBlocks,
  type ServiceProcess,
  startService,
  TimedOutError,
  within,
} from "./_util.ts";
import { concatBytes } from "../lib/net/bytes.ts";
/** A connected pair of loopback TCP connections. */
export async function tcpPair(): Promise<[Deno.TcpConn, Deno.TcpConn]> {
  const l = listenLocal();
  try {
    const [a, b] = await Promise.all([
      Deno.connect({ hostname: "127.0.0.1", port: l.addr.port }),
      l.accept(),
    ]);
    return [a, b];
  } finally {
    l.close();
  }
}

/** A raw frame: u32 BE length + bytes (for hand-made, possibly invalid, messages). */
export function rawFrame(body: string | Uint8Array, lengthOverride?: number): Uint8Array {
  const b = typeof body === "string" ? new TextEncoder().encode(body) : body;
  const out = new Uint8Array(4 + b.length);
  new DataView(out.buffer).setUint32(0, lengthOverride ?? b.length);
  out.set(b, 4);
  return out;
}

/** Concatenate byte arrays. */
/** Join byte arrays (lib/net `concatBytes`). */
export const concat = concatBytes;

/**
 * depot-server's argv as a member of a Redis cluster: every listener on a loopback port 0, a
 * cluster link and a 2 s heartbeat (leases of 6 s), then `extra`.
 */
export function depotMemberArgs(redisUrl: string, ...extra: string[]): string[] {
  return [
    "--socks",
    "127.0.0.1:0",
    "--control",
    "127.0.0.1:0",
    "--tunnel",
    "127.0.0.1:0",
    "--registry",
    redisUrl,
    "--cluster-listen",
    "127.0.0.1:0",
    // Peers count as dead after 3 missed beats: at 300 ms a loaded box's stalls (over 0.9 s)
    // dropped the exit from its server mid-test (workers_test's mutual-TLS handover).
    "--heartbeat",
    "2s",
    ...extra,
  ];
}

/** startService's options, for the depot service helpers below. */
export type DepotServiceOptions = NonNullable<Parameters<typeof startService>[2]>;

/**
 * depot-server as a child process with its control, SOCKS and tunnel listeners on free ports
 * (`:0`), then `extra`; ready once those three listen (`readyCount` 4 when `extra` adds a
 * listener that logs its own `listening` line, as `--status` does; `--metrics` does not).
 */
export function startDepotServerService(
  extra: string[] = [],
  opts: DepotServiceOptions = {},
): Promise<ServiceProcess> {
  return startService("depot-server.ts", [
    ...["--control", ":0", "--socks", ":0", "--tunnel", ":0"],
    ...extra,
  ], { readyCount: 3, ...opts });
}

/** depot-local as a child process serving `server` (its control address), ready once connected. */
export function startDepotLocalService(
  server: ServiceProcess,
  extra: string[] = [],
  opts: DepotServiceOptions = {},
): Promise<ServiceProcess> {
  return startService("depot-local.ts", ["--server", server.addrs.get("control")!, ...extra], {
    readyCount: 0,
    ready: /msg="connected"/,
    ...opts,
  });
}

/** An in-process depot: a server on port-0 listeners and (optionally) locals. */
export interface TestDepot {
  server: DepotServer;
  locals: DepotLocal[];
  socksPort: number;
  controlPort: number;
  tunnelPort: number;
  /** Start another local against this server. */
  addLocal(opts?: Partial<DepotLocalOptions>): Promise<DepotLocal>;
  close(): Promise<void>;
}

/** Start a DepotServer on port 0 and `locals` DepotLocals (connected before resolving). */
export async function startDepot(
  opts: { server?: DepotServerOptions; locals?: Partial<DepotLocalOptions>[] } = {},
): Promise<TestDepot> {
  // Heartbeats every 2 s (an exit is dead after 6 s of silence): a machine busy enough to
  // stall the event loop for a while must not drop the exit mid-test. Tests about heartbeats
  // pass their own, shorter interval.
  const server = new DepotServer({ heartbeatMs: 2_000, ...opts.server });
  server.start({ control: listenLocal(), socks: listenLocal(), tunnel: listenLocal() });
  const a = server.addrs;
  const locals: DepotLocal[] = [];
  const runs: Promise<void>[] = [];
  const addLocal = async (o: Partial<DepotLocalOptions> = {}) => {
    const local = new DepotLocal({
      server: { host: "127.0.0.1", port: a.control.port },
      token: opts.server?.token,
      backoff: { initialMs: 50, maxMs: 500 },
      ...o,
    });
    locals.push(local);
    runs.push(local.run());
    await local.waitConnected(true, 10_000);
    return local;
  };
  for (const o of opts.locals ?? [{}]) await addLocal(o);
  return {
    server,
    locals,
    socksPort: a.socks.port,
    controlPort: a.control.port,
    tunnelPort: a.tunnel.port,
    addLocal,
    async close() {
      await Promise.all(locals.map((l) => l.stop()));
      await server.stop(500);
      await Promise.all(runs);
    },
  };
}

/** Open a SOCKS5 connection through `socksPort` to `dest`; returns the payload stream. */
export async function socksDial(
  socksPort: number,
  dest: HostPort,
  auth?: { username?: string; password?: string },
): Promise<Duplex & { raw: Deno.TcpConn }> {
  const conn = await dial("127.0.0.1", socksPort);
  try {
    const { leftover } = await socks5Connect(conn, dest, auth);
    const d = withPrefix(conn, leftover);
    return Object.assign(d, { raw: conn });
  } catch (err) {
    conn.close();
    throw err;
  }
}

/**
 * A raw TCP target for transfer tests. The first byte a client sends picks the mode:
 * "U" (upload) drains the rest to EOF and answers `<bytes> <sha256>\n`;
 * "D<decimal bytes>\n" (download) sends that many block-stream bytes, then closes;
 * "E" (echo) echoes to EOF, then closes its write side.
 */
export function startTarget(): { port: number; close(): Promise<void> } {
  const l = listenLocal();
  const conns = new Set<Promise<void>>();
  const handle = async (c: Deno.TcpConn) => {
    try {
      const first = new Uint8Array(1);
      if ((await c.read(first)) !== 1) return;
      if (first[0] === 0x55) {
        const { bytes, sha256 } = await drainHash(c);
        await writeAll(c, new TextEncoder().encode(`${bytes} ${sha256}\n`));
      } else if (first[0] === 0x44) {
        let line = "";
        const one = new Uint8Array(1);
        while ((await c.read(one)) === 1 && one[0] !== 0x0a) line += String.fromCharCode(one[0]);
        await sendBlocks(c, Number(line));
      } else if (first[0] === 0x45) {
        const buf = new Uint8Array(64 * 1024);
        while (true) {
          const n = await c.read(buf);
          if (n === null) break;
          await writeAll(c, buf.subarray(0, n));
        }
        await c.closeWrite();
        await c.read(buf).catch(() => null);
      }
    } catch {
      // A test cut the connection on purpose (kill mid-transfer): nothing to report here.
    } finally {
      c.close();
    }
  };
  const loop = (async () => {
    for await (const c of l) {
      const p = handle(c);
      conns.add(p);
      p.finally(() => conns.delete(p));
    }
  })();
  return {
    port: l.addr.port,
    async close() {
      l.close();
      await loop.catch(() => {});
      await Promise.allSettled([...conns]);
    },
  };
}

/** A hand-driven depot-local: the control connection after hello/welcome. */
export async function fakeLocal(
  controlPort: number,
  opts: { token?: string; name?: string; socksPassword?: string } = {},
): Promise<ControlConn<DepotMessage>> {
  const conn = await dial("127.0.0.1", controlPort);
  const ctl = new ControlConn(conn, depotProtocol);
  await ctl.send({
    type: "hello",
    role: "depot-local",
    token: opts.token ?? "",
    name: opts.name ?? "default",
    socksPassword: opts.socksPassword,
  });
  await ctl.expect("welcome", 60_000);
  return ctl;
}

/** Open a tunnel connection by hand; returns the server's first answer and the conn. */
export async function rawTunnel(
  tunnelPort: number,
  id: number,
  key: string,
): Promise<{ answer: DepotMessage | null; conn: Deno.TcpConn; reader: BufferedReader }> {
  const conn = await dial("127.0.0.1", tunnelPort);
  await new ControlWriter(conn, depotProtocol).send({ type: "tunnel", id, key });
  const reader = new BufferedReader(conn);
  const answer = await nextWithin(new ControlReader(reader, depotProtocol), "the tunnel's answer")
    .catch((err) => {
      if (err instanceof TimedOutError) throw err;
      return null; // the server closed or reset instead of answering: no answer
    });
  return { answer, conn, reader };
}

/**
 * A SOCKS connection `i` through `socksPort` that the hand-driven local `ctl` answers on a raw
 * tunnel to `tunnelPort`, checked relaying both ways ("up i" to the tunnel, "down i" back);
 * `where` names the server in failures. The caller closes both ends.
 */
export async function relayedPair(
  socksPort: number,
  ctl: ControlConn<DepotMessage>,
  tunnelPort: number,
  i: number,
  opts: { auth?: { username?: string; password?: string }; where?: string } = {},
): Promise<{ client: Duplex; tunnel: Deno.TcpConn }> {
  const at = opts.where ? ` from ${opts.where}` : "";
  const client = socksDial(socksPort, { host: "app.invalid", port: 80 + i }, opts.auth);
  const req = await ctl.expect("connect", 30_000);
  const t = await rawTunnel(tunnelPort, req.id, req.key);
  let c: Duplex | undefined;
  try {
    assertEquals(t.answer?.type, "tunnelAccepted");
    c = await within(client, `SOCKS reply ${i}${at}`);
    const enc = new TextEncoder();
    const dec = new TextDecoder();
    await writeAll(c, enc.encode(`up ${i}`));
    const tunnelSide = withPrefix(t.conn, t.reader.takeBuffered());
    const up = new Uint8Array(4);
    assertEquals(await within(tunnelSide.read(up), `bytes up ${i}`), 4);
    assertEquals(dec.decode(up), `up ${i}`);
    await writeAll(t.conn, enc.encode(`down ${i}`));
    const down = new Uint8Array(6);
    assertEquals(await within(c.read(down), `bytes down ${i}`), 6);
    assertEquals(dec.decode(down), `down ${i}`);
    return { client: c, tunnel: t.conn };
  } catch (err) {
    // Not handed to the caller: closed here, the SOCKS connection too once its dial settles.
    if (c) c.close();
    else client.then((d) => d.close(), () => {});
    t.conn.close();
    throw err;
  }
}

/** Read `r` until its end: "eof" on a FIN, "reset" when the read fails. */
export async function endOf(r: { read(p: Uint8Array): Promise<number | null> }): Promise<string> {
  const buf = new Uint8Array(1024);
  try {
    while ((await r.read(buf)) !== null) continue;
    return "eof";
  } catch {
    return "reset";
  }
}

/** The welcome a {@linkcode handServer} sends: every field but its type and tunnel port. */
export type HandWelcome = Omit<
  Outgoing<Extract<DepotMessage, { type: "welcome" }>>,
  "type" | "tunnelPort"
>;

/** A tunnel connection a {@linkcode handServer} accepted, after its first message. */
export interface HandTunnel {
  conn: Deno.Conn;
  /** Its first depot message; `null` when it closed (or sent no valid message) first. */
  first: DepotMessage | null;
  /** The connection past that message (bytes already read, then the rest). */
  rest: Duplex;
}

/** A running {@linkcode handServer}. */
export interface HandServer {
  controlPort: number;
  tunnelPort: number;
  /** The local's hello, once the control connection was accepted and welcomed. */
  welcomed: Promise<Extract<DepotMessage, { type: "hello" }>>;
  /** The control connection (only after `welcomed`): send requests, close it. */
  readonly ctl: ControlConn<DepotMessage>;
  /** Tunnel connections that have sent nothing yet (spares before a request takes them). */
  silent: Set<Deno.Conn>;
  /** Close every tunnel connection accepted so far. */
  closeTunnels(): void;
  /**
   * Close the control connection, both listeners and every tunnel connection, and wait for
   * the handlers; rethrows the first error an `onTunnel` threw (an assertion in it).
   */
  close(): Promise<void>;
}

/**
 * A depot server driven by hand, for a depot-local against servers DepotServer no longer is
 * (older welcomes, spares cut by hand, tunnels held open): a control port that takes the
 * local's hello and answers `welcome` (then hands each message to `onMessage`), and a tunnel
 * port that reads each connection's first message and hands it to `onTunnel`. Connections
 * stay open until `close()` (or `closeTunnels()`): a test decides when they end.
 */
export function handServer(opts: {
  welcome: HandWelcome;
  onTunnel?(t: HandTunnel): Promise<void> | void;
  onMessage?(m: DepotMessage): void;
}): HandServer {
  const control = listenLocal();
  const tunnel = listenLocal();
  const conns = new Set<Deno.Conn>();
  const silent = new Set<Deno.Conn>();
  const handlers = new Set<Promise<void>>();
  const errors: unknown[] = [];
  let ctl: ControlConn<DepotMessage> | undefined;
  const serveTunnels = (async () => {
    for await (const conn of tunnel) {
      conns.add(conn);
      silent.add(conn);
      const handler = (async () => {
        const r = new BufferedReader(conn, 1024);
        const first = await new ControlReader(r, depotProtocol).read().catch(() => null);
        silent.delete(conn);
        await opts.onTunnel?.({ conn, first, rest: withPrefix(conn, r.takeBuffered()) });
      })().catch((err) => void errors.push(err));
      handlers.add(handler);
      void handler.finally(() => handlers.delete(handler));
    }
  })();
  const welcomed = (async () => {
    ctl = new ControlConn(await control.accept(), depotProtocol);
    const hello = await ctl.expect("hello", 10_000);
    await ctl.send({ type: "welcome", tunnelPort: tunnel.addr.port, ...opts.welcome });
    return hello;
  })();
  const serveControl = (async () => {
    await welcomed;
    for (let m; (m = await ctl!.receive()) !== null;) opts.onMessage?.(m);
  })().catch(() => {
    // The control connection ends with the test (the local stops, or close()).
  });
  const closeTunnels = () => {
    for (const c of conns) closeQuietly(c);
  };
  return {
    controlPort: control.addr.port,
    tunnelPort: tunnel.addr.port,
    welcomed,
    get ctl() {
      if (!ctl) throw new Error("the hand-driven server has no control connection yet");
      return ctl;
    },
    silent,
    closeTunnels,
    async close() {
      ctl?.close();
      control.close();
      await serveControl;
      tunnel.close();
      closeTunnels();
      await serveTunnels;
      await Promise.all(handlers);
      if (errors.length > 0) throw errors[0];
    },
  };
}
