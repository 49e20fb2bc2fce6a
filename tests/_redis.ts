/** A real redis-server for the cluster tests: a free port, a temp dir, no persistence. */

import { writeAll } from "../lib/net/mod.ts";
import { assertEquals } from "./_assert.ts";
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

/** One command as MONITOR shows it: the connection that sent it (`lua` inside a script). */
export interface SeenCommand {
  /** `127.0.0.1:port` of the sending connection, or `lua`. */
  from: string;
  /** The command and its arguments, unquoted (escapes left as MONITOR prints them). */
  args: string[];
}

/** A MONITOR connection: every command Redis runs from when `watchCommands` resolves. */
export interface CommandWatch {
  /** The commands seen so far, in order. */
  seen: SeenCommand[];
  /** Resolves once `holds(seen)` is true (fails after 60 s, naming `what`). */
  until(what: string, holds: (seen: SeenCommand[]) => boolean): Promise<void>;
  close(): Promise<void>;
}

/** Watch the commands the Redis on `port` runs (MONITOR), from now on. */
export async function watchCommands(port: number): Promise<CommandWatch> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(new TextEncoder().encode("MONITOR\r\n"));
  const seen: SeenCommand[] = [];
  const waiters = new Set<() => void>();
  const ok = Promise.withResolvers<void>();
  const done = (async () => {
    let text = "";
    for await (const chunk of conn.readable.pipeThrough(new TextDecoderStream())) {
      text += chunk;
      const lines = text.split("\r\n");
      text = lines.pop() ?? "";
      for (const line of lines) {
        if (line === "+OK") ok.resolve();
        const m = /^\+[\d.]+ \[\d+ ([^\]]+)\] (.*)$/.exec(line);
        if (!m) continue;
        const args = [...m[2].matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((a) => a[1]);
        seen.push({ from: m[1], args });
      }
      for (const w of waiters) w();
    }
  })();
  await within(ok.promise, "redis MONITOR's +OK");
  return {
    seen,
    until: async (what, holds) => {
      let wake = () => {};
      const check = () => {
        if (holds(seen)) wake();
      };
      const met = new Promise<void>((r) => wake = r);
      waiters.add(check);
      try {
        check();
        await within(met, () => `${what} (seen ${seen.length} commands)`);
      } finally {
        waiters.delete(check);
      }
    },
    close: async () => {
      conn.close();
      await done.catch(() => {/* the read ends with the close we asked for */});
    },
  };
}

/** One inline command to the Redis on `port`, on a connection of its own: the reply's first line. */
export async function redisCommand(port: number, command: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await writeAll(conn, new TextEncoder().encode(`${command}\r\n`));
    const buf = new Uint8Array(512);
    const n = await within(conn.read(buf), `redis's reply to ${command}`);
    return new TextDecoder().decode(buf.subarray(0, n ?? 0)).split("\r\n")[0];
  } finally {
    conn.close();
  }
}

/** A proxy between a Redis client and redis-server that flushes Redis inside a heartbeat. */
export interface FlushingProxy {
  /** Its loopback port (the client's Redis URL: `redis://127.0.0.1:<port>`). */
  port: number;
  /**
   * Run a FLUSHALL inside the client's next heartbeat (right after its next `flushAfter`
   * command, before the command after it), then wait until `beats` (2) more beats (`isBeat`
   * commands) have started: with two, the first of them has ended, so whatever that beat
   * writes back is in Redis. `who` names the client in the waits' failure messages; `first`,
   * when given, runs once the proxy is armed (e.g. an earlier loss, whose write-back the flush
   * then hits, or what starts the beat).
   */
  flushInsideBeat(
    who: string,
    opts?: { first?: () => Promise<unknown>; beats?: number },
  ): Promise<void>;
  close(): Promise<void>;
}

/**
 * A TCP proxy to the Redis on `redisPort` that can run a FLUSHALL right after a command
 * `flushAfter` recognizes (by default `isBeat`'s: a heartbeat's first, which found the
 * instance's own record) and before the command after it: a loss inside a beat, every time,
 * no clock. `isBeat` recognizes the first command of every heartbeat.
 */
export function flushingProxy(
  redisPort: number,
  isBeat: (command: string) => boolean,
  flushAfter: (command: string) => boolean = isBeat,
): FlushingProxy {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const tasks: Promise<void>[] = [];
  let armed = false;
  /** Beats (`isBeat` commands) seen since the flush. */
  let beatsAfter = 0;
  let flushed = Promise.withResolvers<void>();
  let wake = () => {};
  const text = new TextDecoder();
  const pump = async (from: Deno.Conn, to: Deno.Conn, watch: boolean) => {
    const buf = new Uint8Array(64 * 1024);
    let holdNext = false;
    try {
      for (let n = await from.read(buf); n !== null; n = await from.read(buf)) {
        const chunk = buf.subarray(0, n);
        if (watch && holdNext) {
          holdNext = false;
          // The beat's next command waits for the flush: the beat found its record, Redis is
          // empty now.
          assertEquals(await redisCommand(redisPort, "FLUSHALL"), "+OK");
          flushed.resolve();
        }
        if (watch) {
          const command = text.decode(chunk);
          if (armed && flushAfter(command)) {
            armed = false;
            holdNext = true;
          } else if (isBeat(command)) {
            beatsAfter++;
            wake();
          }
        }
        let off = 0;
        while (off < n) off += await to.write(chunk.subarray(off));
      }
    } catch {
      // One side closed under the other: the proxy's connection ends with it.
    } finally {
      // Already closed (the other pump's end closed both): nothing to half-close.
      await to.closeWrite().catch(() => {});
    }
  };
  const accepting = (async () => {
    for await (const c of listener) {
      const up = await Deno.connect({ hostname: "127.0.0.1", port: redisPort });
      conns.add(c).add(up);
      tasks.push(pump(c, up, true), pump(up, c, false));
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    async flushInsideBeat(who, { first, beats = 2 } = {}) {
      flushed = Promise.withResolvers<void>();
      armed = true;
      await first?.();
      await within(flushed.promise, `a FLUSHALL inside a heartbeat of ${who}`);
      // Beats started after the one the flush hit (of two, the first has ended).
      beatsAfter = 0;
      await within(
        new Promise<void>((resolve) => {
          wake = () => {
            if (beatsAfter >= beats) resolve();
          };
          wake();
        }),
        `${beats} more heartbeats of ${who} after the flush`,
      );
      wake = () => {};
    },
    async close() {
      listener.close();
      await accepting.catch(() => {/* the listener's close ends the loop */});
      for (const c of conns) {
        try {
          c.close();
        } catch {
          // Closed by its pump already.
        }
      }
      await Promise.all(tasks);
    },
  };
}
