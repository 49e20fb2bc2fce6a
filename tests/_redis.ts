/** A real redis-server for the cluster tests: a free port, a temp dir, no persistence. */

import { freePort, within } from "./_util.ts";

/** A running redis-server; `stop()` kills it (SIGKILL) and removes its directory. */
export interface TestRedis {
  port: number;
  url: string;
  /** Stop it (the data is gone: nothing is saved). */
  stop(): Promise<void>;
  /** Kill it (SIGKILL), keeping the port's owner for `up()`: an outage. */
  down(): Promise<void>;
  /** Start it again on the same port, empty (a Redis restart that lost everything). */
  up(): Promise<void>;
}

interface Running {
  child: Deno.ChildProcess;
  /** Ends when its stdout does. */
  drained: Promise<void>;
}

async function spawnRedis(port: number, dir: string, password?: string): Promise<Running> {
  const child = new Deno.Command("redis-server", {
    args: [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
      "--dir",
      dir,
      ...(password ? ["--requirepass", password] : []),
    ],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  // Ready when it says so on stdout; one that neither says so nor exits in 60 s is killed.
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  try {
    while (!out.includes("Ready to accept connections")) {
      const { value, done } = await within(
        reader.read(),
        () =>
          `redis-server on port ${port} to log "Ready to accept connections", got: ${
            out.slice(-400)
          }`,
      );
      if (done) throw new Error(`redis-server did not start: ${out.slice(-400)}`);
      out += value;
    }
  } catch (err) {
    try {
      child.kill("SIGKILL");
    } catch {
      // It exited already (the "did not start" case): nothing to kill.
    }
    await reader.cancel();
    await child.status;
    throw err;
  }
  // Keep draining its log so it never blocks on a full pipe.
  const drained = (async () => {
    while (!(await reader.read()).done) { /* discard */ }
  })();
  return { child, drained };
}

/**
 * Start redis-server on a free loopback port (`--save '' --appendonly no`), with
 * `--requirepass` when `password` is given (then `url` carries it).
 */
export async function startRedis(password?: string): Promise<TestRedis> {
  const dir = await Deno.makeTempDir({ prefix: "warren-redis-" });
  const port = freePort();
  let running: Running | undefined = await spawnRedis(port, dir, password);
  const kill = async () => {
    if (!running) return;
    running.child.kill("SIGKILL");
    await running.child.status;
    await running.drained;
    running = undefined;
  };
  return {
    port,
    url: `redis://${password ? `:${password}@` : ""}127.0.0.1:${port}`,
    down: kill,
    up: async () => {
      await kill();
      running = await spawnRedis(port, dir, password);
    },
    stop: async () => {
      await kill();
      await Deno.remove(dir, { recursive: true });
    },
  };
}
