/**
 * `WorkerPool`: N copies of a service process on the same public ports (`--workers N`,
 * issue 19). The supervising process binds nothing itself: it starts the workers (worker 1
 * first, so a busy port or a bad certificate fails once, then the others together), forwards
 * signals to each, restarts a worker that dies with exponential backoff and logs it.
 *
 * The wire between supervisor and worker is the worker's stdio: the worker writes
 * {@linkcode workerReadyLine} on stdout once it listens (whatever else it prints there is
 * passed through), and its stdin stays open for the supervisor's lifetime, so a worker whose
 * supervisor vanished (kill -9) sees end-of-file and shuts down instead of living on.
 * Workers get their own session (`detached`), so a terminal's Ctrl-C reaches the supervisor
 * alone and each worker gets exactly one forwarded signal.
 * @module
 */

import type { Logger } from "../log.ts";
import { Backoff, type BackoffOptions, sleep } from "../net/backoff.ts";
import { errorMessage } from "../net/errors.ts";

/** The environment variable naming a worker's index (1..N); unset in a process alone. */
export const workerIndexEnv = "WARREN_WORKER";
/** The environment variable holding the number of workers N. */
export const workerCountEnv = "WARREN_WORKERS";
/**
 * A secret the supervisor draws for one run and gives every worker, for links that only
 * its workers share (tunnel-server's local cluster links).
 */
export const workerSecretEnv = "WARREN_WORKER_SECRET";
/** What a worker writes on stdout once it is listening. */
export const workerReadyLine = "warren-worker-ready";

/** A worker that ended before it was ready (the reason is on its stderr). */
export class WorkerStartError extends Error {
  constructor(
    readonly worker: number,
    /** Its exit code (a signal: 128 + number). */
    readonly code: number,
  ) {
    super(`worker ${worker} exited with code ${code} before it was ready`);
    this.name = "WorkerStartError";
  }
}

/** Options of {@linkcode WorkerPool}. */
export interface WorkerPoolOptions {
  /** The program each worker runs (the service's own executable). */
  program: string;
  /** Its arguments (the service's own command line). */
  args: string[];
  /** How many workers. */
  count: number;
  /** Environment added for every worker (the index, count and secret are added too). */
  env?: Record<string, string>;
  log: Logger;
  /** Delays between restarts of a worker that keeps dying. @default 250 ms doubling to 10 s */
  backoff?: BackoffOptions;
  /** A worker that ran this long before it died restarts after the first delay again. @default 30 s */
  stableMs?: number;
}

/** One worker as {@linkcode WorkerPool.workers} shows it. */
export interface WorkerInfo {
  index: number;
  pid: number;
  /** Restarts since the pool started. */
  restarts: number;
}

interface Slot {
  index: number;
  child?: Deno.ChildProcess;
  restarts: number;
  backoff: Backoff;
}

/** N supervised worker processes; see the module doc. */
export class WorkerPool {
  readonly #opts: WorkerPoolOptions;
  readonly #slots: Slot[];
  readonly #secret: string;
  readonly #stopping = new AbortController();
  readonly #loops: Promise<void>[] = [];

  constructor(opts: WorkerPoolOptions) {
    this.#opts = opts;
    this.#slots = Array.from({ length: opts.count }, (_, i) => ({
      index: i + 1,
      restarts: 0,
      backoff: new Backoff({ initialMs: 250, maxMs: 10_000, ...opts.backoff }),
    }));
    const bytes = crypto.getRandomValues(new Uint8Array(24));
    this.#secret = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  /** The live workers. */
  workers(): WorkerInfo[] {
    return this.#slots.filter((s) => s.child).map((s) => ({
      index: s.index,
      pid: s.child!.pid,
      restarts: s.restarts,
    }));
  }

  /**
   * Start every worker: worker 1, once it is ready the others. Rejects with
   * {@linkcode WorkerStartError} when one ends before it is ready (the pool is then stopped).
   * From then on a worker that dies is restarted until {@linkcode stop}.
   */
  async start(): Promise<void> {
    try {
      const [first, ...rest] = this.#slots;
      await this.#spawn(first);
      await Promise.all(rest.map((s) => this.#spawn(s)));
    } catch (err) {
      await this.stop();
      throw err;
    }
    for (const s of this.#slots) this.#loops.push(this.#supervise(s));
  }

  /** Send `sig` to every live worker. */
  signal(sig: Deno.Signal): void {
    for (const s of this.#slots) {
      try {
        s.child?.kill(sig);
      } catch (err) {
        // Exited between the check and the kill: its supervision loop reports it.
        this.#opts.log.debug("worker not signalled", { worker: s.index, error: errorMessage(err) });
      }
    }
  }

  /** No more restarts: send `sig` to every worker and resolve once all have exited. */
  async stop(sig: Deno.Signal = "SIGTERM"): Promise<void> {
    this.#stopping.abort();
    this.signal(sig);
    await Promise.all(this.#slots.map((s) => s.child?.status));
    await Promise.all(this.#loops);
  }

  /** Spawn the worker of `s`; resolves once it wrote the ready line. */
  async #spawn(s: Slot): Promise<void> {
    const { program, args, env, count } = this.#opts;
    const child = new Deno.Command(program, {
      args,
      env: {
        ...env,
        [workerIndexEnv]: String(s.index),
        [workerCountEnv]: String(count),
        [workerSecretEnv]: this.#secret,
      },
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
      detached: true,
    }).spawn();
    s.child = child;
    // The lifeline: held open, never written; it closes when this process ends.
    const lifeline = child.stdin.getWriter();
    child.status.finally(() => lifeline.close()).catch(() => {
      // The worker is gone, so its end of the pipe is too: nothing is left to close.
    });
    const ready = passStdout(child.stdout);
    const exited = child.status.then((st) => {
      throw new WorkerStartError(s.index, st.signal ? 128 + signalNumber(st.signal) : st.code);
    });
    // Before it is ready the worker either writes the line or exits.
    await Promise.race([ready, exited]);
    exited.catch(() => {
      // After ready its exit is the supervision loop's to report.
    });
  }

  /** Restart `s`'s worker whenever it dies, until the pool stops. */
  async #supervise(s: Slot): Promise<void> {
    const { log, stableMs = 30_000 } = this.#opts;
    let startedAt = Date.now();
    while (!this.#stopping.signal.aborted) {
      const child = s.child!;
      const st = await child.status;
      if (this.#stopping.signal.aborted) return;
      if (Date.now() - startedAt >= stableMs) s.backoff.reset();
      const delayMs = s.backoff.next();
      log.warn("worker exited, restarting", {
        worker: s.index,
        pid: child.pid,
        code: st.code,
        signal: st.signal ?? undefined,
        delayMs,
      });
      try {
        await sleep(delayMs, this.#stopping.signal);
      } catch {
        return; // the pool is stopping: no restart
      }
      startedAt = Date.now();
      try {
        await this.#spawn(s);
        s.restarts++;
        log.info("worker restarted", { worker: s.index, pid: s.child!.pid, restarts: s.restarts });
      } catch (err) {
        // Its exit status is waited for at the top of the loop, then backed off further.
        log.error("worker failed to restart", { worker: s.index, error: errorMessage(err) });
      }
    }
  }
}

/**
 * Copy a worker's stdout to ours; resolves when the ready line went by (that line is kept
 * back), never when the stream just ends.
 */
function passStdout(stdout: ReadableStream<Uint8Array>): Promise<void> {
  const { promise, resolve } = Promise.withResolvers<void>();
  const marker = new TextEncoder().encode(`${workerReadyLine}\n`);
  (async () => {
    let seen = false;
    for await (const chunk of stdout) {
      let out = chunk;
      if (!seen) {
        const at = indexOf(chunk, marker);
        if (at >= 0) {
          seen = true;
          out = new Uint8Array([...chunk.subarray(0, at), ...chunk.subarray(at + marker.length)]);
          resolve();
        }
      }
      if (out.length > 0) await Deno.stdout.write(out);
    }
  })().catch(() => {
    // Our stdout closed (the supervisor's reader went away): nothing to copy to any more.
  });
  return promise;
}

/** The index of `needle` in `hay`, or -1. */
function indexOf(hay: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

/** The number of `sig` on Linux, for a 128+n exit code. */
function signalNumber(sig: Deno.Signal): number {
  const numbers: Partial<Record<Deno.Signal, number>> = {
    SIGHUP: 1,
    SIGINT: 2,
    SIGQUIT: 3,
    SIGABRT: 6,
    SIGKILL: 9,
    SIGSEGV: 11,
    SIGPIPE: 13,
    SIGTERM: 15,
  };
  return numbers[sig] ?? 0;
}
