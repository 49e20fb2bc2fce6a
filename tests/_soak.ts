/**
 * Helpers for the hostile-peer, fault and soak tests: the three spawned service stacks
 * (depot, tunnel, fusion) wired to in-process targets, one "open a connection through the
 * stack" function per stack, and /proc sampling of a process's RSS and open FDs.
 */

import { closeQuietly, dial, type Duplex, writeAll } from "../lib/net/mod.ts";
import { socks5Connect } from "../lib/socks5/mod.ts";
import { withPrefix } from "../lib/net/mod.ts";
import { portOf, type ServiceProcess, startService } from "./_util.ts";

/**
 * A size field of `/proc/<pid>/status` in KiB: `VmRSS` (resident now) or `VmHWM` (the peak
 * resident size so far). NaN if the process is gone (it exited): a reading, not a crash.
 */
export function procStatusKiB(pid: number, field: "VmRSS" | "VmHWM"): number {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(status);
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}

/** Resident set size of `pid` in KiB (VmRSS), or NaN if the process is gone. */
export function rssKiB(pid: number): number {
  return procStatusKiB(pid, "VmRSS");
}

/** Open file descriptors of `pid`, or NaN if the process is gone. */
export function fdCount(pid: number): number {
  try {
    let n = 0;
    for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) n++;
    return n;
  } catch {
    return NaN;
  }
}

/** A spawned service stack and how to open a byte stream through it to the target. */
export interface Stack {
  name: string;
  /** Every process of the stack, by role. */
  procs: Record<string, ServiceProcess>;
  /**
   * A connection to the target through the stack. For the tunnel this is an HTTP request
   * the test writes itself (the app is raw TCP behind an HTTP vhost); for depot and fusion
   * it is the target's TCP stream.
   */
  open(): Promise<Duplex>;
  stop(): Promise<void>;
}

/** Identifier the tunnel stacks share (long enough for the server's minimum). */
export const tunnelIdentifier = "soak-identifier-0123456789abcdef";
/** Token of the depot and fusion stacks. */
export const stackToken = "soak-token-0123456789";

/** depot-server + depot-local (`--mux` optional), SOCKS5 in front; `open` CONNECTs to target. */
export async function startDepotStack(
  targetPort: number,
  opts: { mux?: boolean; serverArgs?: string[] } = {},
): Promise<Stack> {
  const env = { DEPOT_TOKEN: stackToken };
  const server = await startService("depot-server.ts", [
    "--control",
    ":0",
    "--socks",
    ":0",
    "--tunnel",
    ":0",
    ...(opts.serverArgs ?? []),
  ], { readyCount: 3, env });
  let local: ServiceProcess;
  try {
    local = await startService(
      "depot-local.ts",
      ["--server", server.addrs.get("control")!, ...(opts.mux ? ["--mux"] : [])],
      { readyCount: 0, ready: /msg="connected"/, env },
    );
  } catch (err) {
    await server.stop("SIGKILL");
    throw err;
  }
  const socksPort = portOf(server.addrs.get("socks")!);
  return {
    name: opts.mux ? "depot-mux" : "depot",
    procs: { "depot-server": server, "depot-local": local },
    async open() {
      const c = await dial("127.0.0.1", socksPort);
      try {
        const { leftover } = await socks5Connect(c, { host: "127.0.0.1", port: targetPort });
        return withPrefix(c, leftover);
      } catch (err) {
        closeQuietly(c);
        throw err;
      }
    },
    async stop() {
      await local.stop();
      await server.stop();
    },
  };
}

/** fusion-server + fusion-client with `paths` paths; `open` connects to the client. */
export async function startFusionStack(targetPort: number, paths = 2): Promise<Stack> {
  const env = { FUSION_TOKEN: stackToken };
  const server = await startService("fusion-server.ts", [
    "--listen",
    "127.0.0.1:0",
    "--target",
    `127.0.0.1:${targetPort}`,
  ], { env });
  let client: ServiceProcess;
  try {
    client = await startService("fusion-client.ts", [
      "--listen",
      "127.0.0.1:0",
      "--server",
      server.addrs.get("listen")!,
      "--paths",
      String(paths),
    ], { env });
  } catch (err) {
    await server.stop("SIGKILL");
    throw err;
  }
  const port = portOf(client.addrs.get("listen")!);
  return {
    name: "fusion",
    procs: { "fusion-server": server, "fusion-client": client },
    open: () => dial("127.0.0.1", port),
    async stop() {
      await client.stop();
      await server.stop();
    },
  };
}

/**
 * tunnel-server + tunnel-client serving vhost `app.test` from the local app at `appPort`.
 * `open` is a raw connection to the server's public port (write an HTTP request with
 * `Host: app.test`).
 */
export async function startTunnelStack(appPort: number): Promise<Stack> {
  const server = await startService("tunnel-server.ts", [
    "--listen",
    "127.0.0.1:0",
    "--host",
    "app.test=env:APP_ID",
  ], { readyCount: 1, env: { APP_ID: tunnelIdentifier } });
  let client: ServiceProcess;
  const port = portOf(server.addrs.get("http")!);
  try {
    client = await startService("tunnel-client.ts", [
      "--server",
      `http://127.0.0.1:${port}`,
      "--local",
      `127.0.0.1:${appPort}`,
      "--backoff-max",
      "500",
    ], { readyCount: 0, ready: /msg="connected"/, env: { TUNNEL_IDENTIFIER: tunnelIdentifier } });
  } catch (err) {
    await server.stop("SIGKILL");
    throw err;
  }
  return {
    name: "tunnel",
    procs: { "tunnel-server": server, "tunnel-client": client },
    open: () => dial("127.0.0.1", port),
    async stop() {
      await client.stop();
      await server.stop();
    },
  };
}

/** Write `total` bytes of `chunk` repeatedly until done or no progress for `stallMs`. */
export async function pushUntilStalled(
  c: Duplex,
  total: number,
  stallMs = 1_500,
): Promise<{ written: number; stalled: boolean }> {
  const chunk = new Uint8Array(1 << 20);
  let written = 0;
  let lastProgress = performance.now();
  let stalled = false;
  const writer = (async () => {
    while (written < total && !stalled) {
      await writeAll(c, chunk.subarray(0, Math.min(chunk.length, total - written)));
      written += Math.min(chunk.length, total - written);
      lastProgress = performance.now();
    }
  })().catch(() => {
    // Cut by the caller (close) while blocked: the count so far is the answer.
  });
  while (written < total) {
    await new Promise((r) => setTimeout(r, 100));
    if (performance.now() - lastProgress > stallMs) {
      stalled = true;
      break;
    }
  }
  if (!stalled) await writer;
  return { written, stalled };
}

/** A TCP server that accepts connections and never reads them (they stay open). */
export function startBlackHole(): { port: number; conns: Deno.TcpConn[]; close(): Promise<void> } {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.TcpConn[] = [];
  const loop = (async () => {
    try {
      for await (const c of l) conns.push(c);
    } catch {
      // listener closed
    }
  })();
  return {
    port: (l.addr as Deno.NetAddr).port,
    conns,
    async close() {
      closeQuietly(l);
      await loop;
      for (const c of conns) closeQuietly(c);
    },
  };
}
