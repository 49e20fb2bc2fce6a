/** Helpers for the tunnel tests: an in-process tunnel server front, clients, curl. */

import { Logger, type LogLevel } from "../lib/log.ts";
import type { Server } from "../lib/net/mod.ts";
import {
  serveTunnel,
  TunnelClient,
  type TunnelClientOptions,
  TunnelServer,
  type TunnelServerOptions,
} from "../lib/tunnel/mod.ts";
import { run } from "./_util.ts";

const level = (Deno.env.get("WARREN_TEST_LOG") ?? "silent") as LogLevel;

/** A logger for tests: silent unless WARREN_TEST_LOG=debug|info. */
export function testLog(name: string): Logger {
  return new Logger(level, { svc: name });
}

/** A running in-process tunnel server (standalone fast-path front). */
export interface TestTunnel {
  server: TunnelServer;
  front: Server;
  port: number;
  url: string;
  close(): Promise<void>;
}

/** Start a TunnelServer with the HTTP/1 front on 127.0.0.1:port (0 = any). */
export function startTunnel(opts: TunnelServerOptions = {}, port = 0): TestTunnel {
  const server = new TunnelServer({
    heartbeatIntervalMs: 500,
    heartbeatTimeoutMs: 2_000,
    log: testLog("tunnel-server"),
    ...opts,
  });
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  const front = serveTunnel(listener, server, { log: testLog("front") });
  const p = front.addr.port;
  return {
    server,
    front,
    port: p,
    url: `http://127.0.0.1:${p}`,
    close: async () => {
      await server.close();
      await front.stop(200);
    },
  };
}

/** A running client; `stop()` aborts it and waits for its loop to end. */
export interface TestClient {
  client: TunnelClient;
  connected(): Promise<void>;
  stop(): Promise<void>;
}

/** Start a TunnelClient; `connected()` resolves at its next successful handshake. */
export function startClient(
  opts: Omit<TunnelClientOptions, "signal" | "log"> & { log?: Logger },
): TestClient {
  const ac = new AbortController();
  let waiters: (() => void)[] = [];
  const client = new TunnelClient({
    backoff: { initialMs: 50, maxMs: 500 },
    heartbeatIntervalMs: 500,
    heartbeatTimeoutMs: 2_000,
    log: testLog("tunnel-client"),
    ...opts,
    signal: ac.signal,
    onConnected: (r) => {
      opts.onConnected?.(r);
      const w = waiters;
      waiters = [];
      for (const f of w) f();
    },
  });
  const done = client.run();
  return {
    client,
    connected: () =>
      client.state === "connected" ? Promise.resolve() : new Promise((r) => waiters.push(r)),
    stop: async () => {
      ac.abort();
      await done;
    },
  };
}

/** curl through the tunnel: `--connect-to` sends `Host: vhost` to the tunnel's port. */
export async function curl(
  tunnelPort: number,
  vhost: string,
  path: string,
  extra: string[] = [],
): Promise<{ code: number; status: number; body: string; stderr: string }> {
  const r = await run("curl", [
    "-sS",
    "--max-time",
    "60",
    "-o",
    "-",
    "-w",
    "\n%{http_code}",
    "-H",
    `Host: ${vhost}`,
    ...extra,
    `http://127.0.0.1:${tunnelPort}${path}`,
  ]);
  const i = r.stdout.lastIndexOf("\n");
  return {
    code: r.code,
    status: Number(r.stdout.slice(i + 1)),
    body: r.stdout.slice(0, i),
    stderr: r.stderr,
  };
}
