/**
 * The tunnel client's health check of its local app (frp's `health_check_type = http`): a
 * GET of one path every interval; `failures` failed checks in a row take the client out of
 * the server's rotation, one passing check puts it back. The verdict travels to the server
 * as a `health` message on the control stream, so a failing app is taken out before a public
 * request has to fail on it.
 * @module
 */

import {
  BufferedReader,
  closeQuietly,
  dial,
  errorMessage,
  type HostPort,
  writeAll,
} from "../net/mod.ts";
import { readResponseHead } from "../http/mod.ts";
import { type Logger, silentLogger } from "../log.ts";
import { healthLinesPerWindow, healthLogWindowMs, timerSchedule } from "./health_log.ts";

/** Default time between two checks. */
export const defaultHealthIntervalMs = 5_000;
/** Default time one check may take (dial, request, status line). */
export const defaultHealthTimeoutMs = 3_000;
/** Default failed checks in a row before the client leaves the rotation. */
export const defaultHealthFailures = 3;

/** Whether `path` can be a health check's request target: `/` and no space or control byte. */
export function isHealthPath(path: string): boolean {
  return /^\/[\x21-\x7e]*$/.test(path);
}

/** Options of {@linkcode HealthMonitor}. */
export interface HealthCheckOptions {
  /** Path asked for with GET (`/healthz`, see {@linkcode isHealthPath}); a 2xx status passes. */
  path: string;
  /** Time between two checks. @default 5000 */
  intervalMs?: number;
  /** Time one check may take. @default 3000 */
  timeoutMs?: number;
  /** Failed checks in a row before "unhealthy". @default 3 */
  failures?: number;
}

/** What the monitor needs besides its options. */
export interface HealthMonitorHooks {
  /** Called when the verdict changes (first: healthy after the first passing check). */
  onChange: (healthy: boolean, error?: string) => Promise<void> | void;
  /** Each failed check is logged here (warn). @default silent */
  log?: Logger;
  /**
   * While true, failed checks are logged at debug only: the transitions they lead to are being
   * counted rather than logged (HealthLog.holding), so a flapping app cannot fill the log
   * with them either.
   */
  quiet?: () => boolean;
}

/**
 * One check: GET `path` on `target` with `Host: host`; undefined when it answered 2xx in
 * time, else why not (status, refused dial, timeout).
 */
export async function checkHttp(
  target: HostPort,
  path: string,
  timeoutMs: number,
  host: string = `${target.host}:${target.port}`,
  signal?: AbortSignal,
): Promise<string | undefined> {
  let conn: Deno.TcpConn | undefined;
  let timedOut = false;
  const cut = () => {
    if (conn) closeQuietly(conn);
  };
  const timer = setTimeout(() => {
    timedOut = true;
    cut();
  }, timeoutMs);
  signal?.addEventListener("abort", cut, { once: true });
  try {
    conn = await dial(target.host, target.port, { timeoutMs, prefer: "ipv4", signal });
    if (timedOut || signal?.aborted) throw new Error("timed out or stopped");
    const req = `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nUser-Agent: warren-tunnel-health\r\n` +
      "Connection: close\r\n\r\n";
    await writeAll(conn, new TextEncoder().encode(req));
    const head = await readResponseHead(new BufferedReader(conn, 1024));
    return head.status >= 200 && head.status < 300 ? undefined : `status ${head.status}`;
  } catch (err) {
    return timedOut ? `no answer in ${timeoutMs} ms` : errorMessage(err);
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", cut);
    if (conn) closeQuietly(conn);
  }
}

/**
 * Checks the local app until stopped and calls `onChange` when the verdict changes. The
 * first verdict is "unhealthy" (the server starts a checked client out of rotation): the
 * first passing check reports healthy.
 */
export class HealthMonitor {
  /** The current verdict. */
  healthy = false;
  /** Failed checks in a row. */
  failing = 0;
  /** Why the last check failed. */
  lastError: string | undefined;
  readonly #opts: Required<HealthCheckOptions>;
  readonly #hooks: HealthMonitorHooks;
  #stopped = false;
  #wake: (() => void) | undefined;
  readonly #abort = new AbortController();
  #running: Promise<void> | undefined;
  /** "health check failed" warnings of the current window, and those held back in it. */
  #warned = 0;
  #held = 0;
  #heldError = "";
  /** Ends the current window; undefined: none open. */
  #cancelWindow: (() => void) | undefined;

  /** A monitor of `target`; nothing happens until `run()`. */
  constructor(
    readonly target: HostPort,
    opts: HealthCheckOptions,
    hooks: HealthMonitorHooks,
  ) {
    if (!isHealthPath(opts.path)) {
      throw new RangeError(
        `health check path must be /\u2026 without spaces: ${JSON.stringify(opts.path)}`,
      );
    }
    this.#hooks = hooks;
    this.#opts = {
      path: opts.path,
      intervalMs: opts.intervalMs ?? defaultHealthIntervalMs,
      timeoutMs: opts.timeoutMs ?? defaultHealthTimeoutMs,
      failures: Math.max(1, opts.failures ?? defaultHealthFailures),
    };
  }

  /** Check now and every interval until `stop()`. */
  start(): void {
    this.#running ??= this.#run();
  }

  async #run(): Promise<void> {
    while (!this.#stopped) {
      const error = await checkHttp(
        this.target,
        this.#opts.path,
        this.#opts.timeoutMs,
        undefined,
        this.#abort.signal,
      );
      if (this.#stopped) break;
      this.lastError = error;
      if (error === undefined) {
        this.failing = 0;
        if (!this.healthy) {
          this.healthy = true;
          await this.#report(true);
        }
      } else {
        this.failing++;
        // Failures while in rotation are warnings; once out, only the first (the app is down).
        const loud = (this.healthy || this.failing === 1) && !this.#hooks.quiet?.();
        this.#failed(loud, { path: this.#opts.path, error, failing: this.failing });
        if (this.failing >= this.#opts.failures && this.healthy) {
          this.healthy = false;
          await this.#report(false, error);
        }
      }
      await new Promise<void>((r) => {
        const t = setTimeout(r, this.#opts.intervalMs);
        // A local first: a function literal assigned to a property is made in V8's old
        // generation (tests/source_closure_test.ts says why that matters).
        const wake = () => {
          clearTimeout(t);
          r();
        };
        this.#wake = wake;
      });
    }
  }

  /**
   * Log one failed check: a `loud` one at warn, but at most {@linkcode healthLinesPerWindow}
   * per window ({@linkcode healthLogWindowMs}): an app that fails now and then, never enough
   * in a row to leave the rotation, must not fill the log either. The rest go to debug, and
   * the window ends with one line that counts them.
   */
  #failed(loud: boolean, fields: { path: string; error: string; failing: number }): void {
    const log = this.#hooks.log ?? silentLogger;
    if (loud && this.#warned < healthLinesPerWindow) {
      this.#warned++;
      this.#cancelWindow ??= timerSchedule(
        () => this.#windowEnd(),
        healthLogWindowMs,
      );
      return log.warn("health check failed", fields);
    }
    if (loud) {
      this.#held++;
      this.#heldError = fields.error;
    }
    log.debug("health check failed", fields);
  }

  /** The window is over: the warnings held back in it are counted in one line. */
  #windowEnd(): void {
    this.#cancelWindow = undefined;
    this.#warned = 0;
    if (this.#held === 0) return;
    (this.#hooks.log ?? silentLogger).warn("health check failures not logged", {
      path: this.#opts.path,
      count: this.#held,
      lastError: this.#heldError,
    });
    this.#held = 0;
  }

  async #report(healthy: boolean, error?: string): Promise<void> {
    try {
      await this.#hooks.onChange(healthy, error);
    } catch {
      // The session is going away: the next one starts with a check of its own.
    }
  }

  /** Stop checking (a check under way is cut short); resolves once the loop has ended. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#abort.abort();
    this.#wake?.();
    await this.#running;
    this.#cancelWindow?.();
    this.#windowEnd();
  }
}
