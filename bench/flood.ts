/**
 * Connection floods, measured: what idle and silent connections cost a service and whether
 * everyone else still gets in.
 *
 * - seaprox: `BENCH_FLOOD_CONNS` (1024) connections from one address to its first SOCKS5
 *   listener, each CONNECTed to a destination that never sends (idle relays, which only the
 *   5-minute idle timeout would end); then, once they idled past the shed threshold, a SOCKS5
 *   CONNECT on its second listener. Reports how many flood connections it holds, whether the
 *   newcomer was served, and RSS / FDs.
 * - fusion-server: `BENCH_SILENT_CONNS` (3000) connections that never send a hello; RSS and
 *   FDs before and after, per connection.
 *
 * `BENCH_ROOT` runs the services of another checkout (for before/after figures):
 *   deno run -A bench/flood.ts
 *   BENCH_ROOT=/tmp/before deno run -A bench/flood.ts
 * @module
 */

import { closeQuietly, dial, withPrefix } from "../lib/net/mod.ts";
import { socks5Connect } from "../lib/socks5/mod.ts";
import { fdCount, rssKiB } from "../tests/_soak.ts";
import { listeningPort, type Proc, spawnDeno } from "./_util.ts";

const root = Deno.env.get("BENCH_ROOT") ?? new URL("..", import.meta.url).pathname;
const floodConns = Number(Deno.env.get("BENCH_FLOOD_CONNS") ?? 1024);
const silentConns = Number(Deno.env.get("BENCH_SILENT_CONNS") ?? 3000);
/** How long the flood sits idle before the newcomer tries (past the shed threshold). */
const floodIdleMs = Number(Deno.env.get("BENCH_FLOOD_IDLE_MS") ?? 11_000);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function service(name: string, args: string[], env: Record<string, string> = {}): Proc {
  return spawnDeno(`${root}/services/${name}`, args, { env });
}

async function openMany(port: number, n: number): Promise<Deno.TcpConn[]> {
  const conns: Deno.TcpConn[] = [];
  for (let i = 0; i < n; i++) conns.push(await dial("127.0.0.1", port));
  return conns;
}

/** `n` SOCKS5 CONNECTs through `port` to `dest` (refused ones are closed and not counted). */
async function connectMany(port: number, dest: number, n: number): Promise<Deno.TcpConn[]> {
  const conns: Deno.TcpConn[] = [];
  for (let i = 0; i < n; i++) {
    const c = await dial("127.0.0.1", port);
    try {
      await socks5Connect(c, { host: "127.0.0.1", port: dest });
      conns.push(c);
    } catch {
      closeQuietly(c); // over a limit: refused
    }
  }
  return conns;
}

/** Connections the peer closed (a read that ends at once), out of `conns`. */
async function closedByPeer(conns: Deno.TcpConn[]): Promise<number> {
  let closed = 0;
  await Promise.all(conns.map(async (c) => {
    const r = await Promise.race([
      c.read(new Uint8Array(1)).then((n) => n === null, () => true),
      sleep(200).then(() => false),
    ]);
    if (r) closed++;
  }));
  return closed;
}

async function seaproxFlood(): Promise<void> {
  // The destination: accepts and holds every connection, never sends.
  const echo = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const heldByDest: Deno.Conn[] = [];
  const serving = (async () => {
    for await (const c of echo) heldByDest.push(c);
  })();
  const sp = service("seaprox.ts", [
    "--listen=socks5://127.0.0.1:0",
    "--listen=socks5://127.0.0.1:0",
  ]);
  try {
    const floodPort = await listeningPort(sp, "socks5");
    const otherPort = await listeningPort(sp, "socks5-2");
    const pid = sp.child.pid;
    const rss0 = rssKiB(pid), fd0 = fdCount(pid);
    const flood = await connectMany(floodPort, echo.addr.port, floodConns);
    await sleep(floodIdleMs);
    const rss1 = rssKiB(pid), fd1 = fdCount(pid);
    let served = false;
    try {
      const c = await dial("127.0.0.1", otherPort);
      const { leftover } = await socks5Connect(c, { host: "127.0.0.1", port: echo.addr.port });
      closeQuietly(withPrefix(c, leftover));
      served = true;
    } catch {
      served = false; // refused: the flood holds the table
    }
    const held = flood.length - await closedByPeer(flood);
    for (const c of flood) closeQuietly(c);
    console.log(
      `| seaprox | ${floodConns} idle on listener 1, one address | ${held} held | ` +
        `${served ? "served" : "refused"} | ${Math.round((rss1 - rss0) / 1024)} MiB | ` +
        `${fd1 - fd0} |`,
    );
  } finally {
    await sp.stop();
    echo.close();
    await serving;
    for (const c of heldByDest) closeQuietly(c);
  }
}

async function fusionSilent(): Promise<void> {
  const fs = service("fusion-server.ts", [
    "--listen=127.0.0.1:0",
    "--target=127.0.0.1:9",
  ], { FUSION_TOKEN: "bench-flood-fusion-token" });
  try {
    const port = await listeningPort(fs);
    const pid = fs.child.pid;
    await sleep(500);
    const rss0 = rssKiB(pid), fd0 = fdCount(pid);
    const silent = await openMany(port, silentConns);
    await sleep(3000); // every connection accepted and its first read pending
    const rss1 = rssKiB(pid), fd1 = fdCount(pid);
    for (const c of silent) closeQuietly(c);
    const held = fd1 - fd0;
    console.log(
      `| fusion-server | ${silentConns} silent (no hello) | ${held} held | - | ` +
        `${Math.round((rss1 - rss0) / 1024)} MiB (${((rss1 - rss0) / held).toFixed(1)} KiB ` +
        `per held connection) | ${held} |`,
    );
  } finally {
    await fs.stop();
  }
}

console.log(`flood bench, services of ${root}`);
console.log(
  "| service | flood | flood connections held | newcomer on another listener | RSS growth | FDs |",
);
console.log("| --- | --- | --- | --- | --- | --- |");
await seaproxFlood();
await fusionSilent();
