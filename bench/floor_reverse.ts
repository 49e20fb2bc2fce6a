/**
 * The floor for any Deno reverse SOCKS5 exit (issue 20): plain depot's work per connection and
 * nothing else, with `Deno.listen`/`Deno.connect` and nothing of lib/. Two processes:
 *
 * - `BENCH_MODE=server`: SOCKS5 clients on one port, pre-dialled tunnel connections from the
 *   exit on another (prints `{"port":N,"tunnel":M}`). Per client: accept, read the greeting,
 *   answer "no auth", read a CONNECT to an IPv4 address, take a waiting tunnel connection,
 *   write the 6-byte address on it, read the exit's 1-byte answer, reply, relay both ways with
 *   half-close, close.
 * - `BENCH_MODE=local BENCH_SERVER=127.0.0.1:M`: keeps `BENCH_SPARES` (default 16) tunnel
 *   connections dialled to the server; one that receives an address is replaced by a new dial,
 *   dials the target, answers one byte, relays, closes.
 *
 * No control connection, credentials, confirmation of ends, limits, timeouts, logs, metrics or
 * error replies: not a proxy to run, the bar plain depot is compared with in bench/depot.ts.
 * Both sockets of each hop get TCP_NODELAY, as any real proxy's do.
 * @module
 */

/** Read buffer per direction: the small exchanges the floor is measured with fit at once. */
const bufBytes = 16 * 1024;
const noAuth = new Uint8Array([5, 0]);
const succeeded = new Uint8Array([5, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
const ok = new Uint8Array([0]);
/**
 * `BENCH_STANDBY=1` (both processes): each spare announces itself with a key before the server
 * hands it out, as depot's standby spares must (the `standby` frame: 4-byte length, code, the
 * 16-byte session key and the exit name, ~25 bytes): the write, the read and the check of
 * that frame are work any depot does per connection, which the plain floor leaves out.
 */
const announced = Deno.env.get("BENCH_STANDBY") === "1";
const announceBytes = 25;
const announce = new Uint8Array(announceBytes).map((_, i) => (i * 37 + 11) & 0xff);

/** Copy `from` to `to` until EOF, then half-close `to`. */
async function pump(from: Deno.Conn, to: Deno.Conn, buf: Uint8Array): Promise<void> {
  for (let n = await from.read(buf); n !== null; n = await from.read(buf)) {
    for (let off = 0; off < n;) off += await to.write(buf.subarray(off, n));
  }
  await to.closeWrite();
}

/** Read until `buf` holds at least `n` bytes (`have` already there); the new count. */
async function need(c: Deno.Conn, buf: Uint8Array, have: number, n: number): Promise<number> {
  while (have < n) {
    const got = await c.read(buf.subarray(have));
    if (got === null) throw new Error("EOF in handshake");
    have += got;
  }
  return have;
}

/**
 * `BENCH_POOL=1`: the relay's buffers are reused from a free list (as lib/net's relay takes
 * them from its pool) instead of two new 16 KiB arrays per connection.
 */
const pooled = Deno.env.get("BENCH_POOL") === "1";
const free: Uint8Array[] = [];
const takeBuf = () => (pooled ? free.pop() : undefined) ?? new Uint8Array(bufBytes);
const giveBuf = (b: Uint8Array) => pooled && free.length < 256 && free.push(b);

/** `BENCH_RELAY=1`: lib/net's relay() (pooled buffers that adapt, half-close), not two pumps. */
const libRelay = Deno.env.get("BENCH_RELAY") === "1"
  ? (await import("../lib/net/mod.ts")).relay
  : undefined;

/** Relay `a` ↔ `b` (buffers of their own), then close both. */
async function relayBoth(a: Deno.Conn, b: Deno.Conn, aBuf: Uint8Array): Promise<void> {
  if (libRelay) {
    await libRelay(a, b); // closes both, never rejects
    (a as Held).release?.();
    (b as Held).release?.();
    return;
  }
  const bBuf = takeBuf();
  try {
    await Promise.all([pump(a, b, aBuf), pump(b, a, bBuf)]);
    // Only after both pumps ended: a failed one's partner may still be reading into its own.
    giveBuf(aBuf);
    giveBuf(bBuf);
  } finally {
    a.close();
    b.close();
    (a as Held).release?.();
    (b as Held).release?.();
  }
}

// ---------------------------------------------------------------- server
/** Tunnel connections waiting for a client, and clients waiting for a tunnel. */
const tunnels: Deno.Conn[] = [];
const waiters: ((t: Deno.Conn) => void)[] = [];

async function serveClient(c: Deno.TcpConn): Promise<void> {
  let t: Deno.Conn | undefined;
  try {
    c.setNoDelay(true);
    const buf = new Uint8Array(bufBytes);
    let have = await need(c, buf, 0, 2);
    const greeting = 2 + buf[1];
    have = await need(c, buf, have, greeting);
    await c.write(noAuth);
    await need(c, buf, have, greeting + 10);
    const r = buf.subarray(greeting);
    if (r[1] !== 1 || r[3] !== 1) throw new Error("only CONNECT to IPv4 in the floor");
    t = tunnels.pop() ?? await new Promise<Deno.Conn>((resolve) => waiters.push(resolve));
    await t.write(r.slice(4, 10));
    const pending = (t as Reading).answer;
    const answer = new Uint8Array(1);
    if (await (pending ?? t.read(answer)) !== 1) throw new Error("exit failed");
    await c.write(succeeded);
  } catch {
    // A peer that reset or misbehaved: the floor only closes (a real proxy logs and replies).
    c.close();
    t?.close();
    (t as Held | undefined)?.release?.();
    return;
  }
  await relayBoth(c, t, takeBuf()).catch(() => {
    // As above: the floor only closes.
  });
}

/**
 * `BENCH_PENDING=1` (server): a spare's read of its answer is started when it is handed out, and
 * stays pending while it is idle, as depot's standby spares read their first frame (their way of
 * seeing the local close an idle spare); the client that takes it awaits that read.
 */
const pendingRead = Deno.env.get("BENCH_PENDING") === "1";
/** A spare with its answer's read pending (`BENCH_PENDING=1`). */
type Reading = Deno.Conn & { answer?: Promise<number | null>; answerBuf?: Uint8Array };

/** A tunnel connection ready for a client: to the first waiting one, else kept. */
function handOut(t: Deno.Conn): void {
  if (pendingRead) {
    const r = t as Reading;
    r.answerBuf = new Uint8Array(1);
    r.answer = t.read(r.answerBuf);
  }
  const w = waiters.shift();
  if (w) w(t);
  else tunnels.push(t);
}

/** `BENCH_STANDBY=1`: a spare is handed out only once its announcement carried the key. */
async function standby(t: Deno.Conn): Promise<void> {
  try {
    const buf = new Uint8Array(announceBytes);
    await need(t, buf, 0, announceBytes);
    for (let i = 0; i < announceBytes; i++) if (buf[i] !== announce[i]) throw new Error("bad key");
    handOut(t);
  } catch {
    // A spare that did not announce itself: the floor only closes.
    t.close();
    (t as Held).release?.();
  }
}

/** A connection served by lib/net's serve() (`BENCH_SERVE`): its handler ends with `release`. */
type Held = Deno.Conn & { release?: () => void };

/**
 * `BENCH_SERVE=1`: both listeners served by lib/net's serve() (its accept loop, LiveConn, live
 * list, handshake deadline, activity tracking), the floor's own work per connection otherwise
 * unchanged: what depot's accept path costs before depot's own work (issue 20; its GC figures in
 * bench/RESULTS.md). Words in the value change it: `nohs` (no handshake deadline), `noshed` (no
 * activity tracking), `socksonly` / `tunnelonly` (serve() on that listener only).
 */
async function serveWithServe(socks: Deno.TcpListener, tunnel: Deno.TcpListener, mode: string) {
  const { serve } = await import("../lib/net/mod.ts");
  const opts = {
    handshakeTimeoutMs: mode.includes("nohs") ? 0 : undefined,
    shedIdleMs: mode.includes("noshed") ? Infinity : undefined,
  };
  const spare = (t: Held): Promise<void> => {
    const held = new Promise<void>((r) => t.release = r);
    if (announced) standby(t);
    else handOut(t);
    return held;
  };
  if (mode.includes("socksonly")) {
    (async () => {
      for await (const t of tunnel) (t.setNoDelay(true), spare(t));
    })();
  } else serve(tunnel, spare, opts);
  if (mode.includes("tunnelonly")) { for await (const c of socks) serveClient(c); }
  else serve(socks, serveClient, opts);
  await new Promise(() => {});
}

async function server(): Promise<void> {
  const socks = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const tunnel = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  console.log(JSON.stringify({ port: socks.addr.port, tunnel: tunnel.addr.port }));
  const serveMode = Deno.env.get("BENCH_SERVE") ?? "0";
  if (serveMode !== "0") return await serveWithServe(socks, tunnel, serveMode);
  (async () => {
    for await (const t of tunnel) {
      t.setNoDelay(true);
      if (announced) standby(t);
      else handOut(t);
    }
  })();
  for await (const c of socks) serveClient(c);
}

// ---------------------------------------------------------------- local
async function spare(to: Deno.ConnectOptions): Promise<void> {
  const t = await Deno.connect(to);
  let up: Deno.TcpConn | undefined;
  try {
    t.setNoDelay(true);
    if (announced) await t.write(announce);
    const buf = new Uint8Array(bufBytes);
    await need(t, buf, 0, 6);
    spare(to); // the replacement
    up = await Deno.connect({
      hostname: `${buf[0]}.${buf[1]}.${buf[2]}.${buf[3]}`,
      port: (buf[4] << 8) | buf[5],
    });
    up.setNoDelay(true);
    await t.write(ok);
  } catch {
    // As above: the floor only closes.
    t.close();
    up?.close();
    return;
  }
  await relayBoth(t, up, takeBuf()).catch(() => {
    // As above: the floor only closes.
  });
}

/** `BENCH_HEAVY=6`'s live objects: held for the process's life, never touched again. */
const ballast: unknown[] = [];

/** About `BENCH_BALLAST_MB` MB of small objects and strings, linked as modules' are. */
function makeBallast(): unknown[] {
  const mb = Number(Deno.env.get("BENCH_BALLAST_MB") ?? 8);
  const out: unknown[] = [];
  // ~84 bytes an entry: an object with a string of its own and a link to the one before.
  for (let i = 0; i < mb * 12_000; i++) out.push({ i, name: `f${i}`, prev: out[i - 1] });
  return out;
}

/**
 * `BENCH_HEAVY=1`: the same floor in a process that also holds depot's weight, idle: lib/depot
 * and lib/metrics loaded, the shared deadline wheel held, and (server) a DepotServer started on
 * three port-0 listeners that no local joins. What a depot process carries besides the work
 * per connection (a larger heap for the GC, more code), measured without depot's own path.
 * `BENCH_HEAVY=2`: the modules loaded only; 3: only `node:net`; 4: only lib/metrics; 5: only
 * lib/depot; 6: no code at all but `BENCH_BALLAST_MB` (default 8) of small live objects, as
 * much heap as a service's modules hold, to tell a bigger heap from more code.
 */
async function loadDepotWeight(server: boolean, heavy: string): Promise<void> {
  // 3, 4, 5: one part of the weight alone (a node: module; lib/metrics; lib/depot).
  if (heavy === "3") return void await import("node:net");
  if (heavy === "4") return void await import("../lib/metrics.ts");
  if (heavy === "5") return void await import("../lib/depot/mod.ts");
  if (heavy === "6") return void ballast.push(...makeBallast());
  const modulesOnly = heavy === "2";
  const depot = await import("../lib/depot/mod.ts");
  await import("../lib/metrics.ts");
  if (modulesOnly) return; // BENCH_HEAVY=2: the modules loaded, nothing started
  (await import("../lib/net/mod.ts")).deadlines.hold();
  if (!server) return;
  const listen = () => Deno.listen({ hostname: "127.0.0.1", port: 0 });
  new depot.DepotServer({}).start({ control: listen(), socks: listen(), tunnel: listen() });
}

if (import.meta.main) {
  const heavy = Deno.env.get("BENCH_HEAVY") ?? "0";
  if (heavy !== "0") await loadDepotWeight(Deno.env.get("BENCH_MODE") !== "local", heavy);
  if (Deno.env.get("BENCH_MODE") === "local") {
    const [hostname, port] = (Deno.env.get("BENCH_SERVER") ?? "").split(":");
    const spares = Number(Deno.env.get("BENCH_SPARES") ?? 16);
    for (let i = 0; i < spares; i++) spare({ hostname, port: Number(port) });
    await new Promise(() => {});
  } else {
    await server();
  }
}
