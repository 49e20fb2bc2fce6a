/**
 * The suite's last line of defence against a hang, preloaded by `deno task test`
 * (`--preload tests/_watchdog.ts`). A test that runs longer than `testTimeoutMs` fails with
 * what it was doing instead of holding CI until its time limit: the last lines logged by the
 * in-process loggers of `testLogger` and the last lines of every service process the test still
 * runs, which are then killed so the rest of the suite runs on a clean machine. What a test
 * registered with `cleanUpOnTimeout` (containers, daemons: its own `finally` never runs while
 * its body hangs) runs then too.
 *
 * Tests bound their own waits with named failures; this only catches the waits they missed.
 */

import { Logger, type LogLevel } from "../lib/log.ts";

/** Per-test limit: ten times the slowest test's usual time on a loaded 2-core box. */
export const testTimeoutMs: number = Number(Deno.env.get("WARREN_TEST_TIMEOUT_S") ?? 600) * 1000;

/** Lines of the in-process flight recorder kept for a timeout report. */
const recorderLines = 200;
/** Lines of each live service process shown in a timeout report. */
const childLines = 40;

const recent: string[] = [];
let recentStart = 0;

/** Keep `line` in the flight recorder (a ring of the last `recorderLines`). */
function record(line: string): void {
  if (recent.length < recorderLines) recent.push(line);
  else {
    recent[recentStart] = line;
    recentStart = (recentStart + 1) % recorderLines;
  }
}

function recorded(): string[] {
  return [...recent.slice(recentStart), ...recent.slice(0, recentStart)];
}

const level = Deno.env.get("WARREN_TEST_LOG") as LogLevel | undefined;

/**
 * A logger for in-process services under test. Its info lines and above go to the flight
 * recorder (shown only when a test times out); WARREN_TEST_LOG=debug|info also prints them.
 */
export function testLogger(name: string): Logger {
  const print = level !== undefined && level !== "silent";
  return new Logger(print ? level : "info", { svc: name }, (line) => {
    record(line);
    if (print) console.error(line);
  });
}

/** A service process as the watchdog sees it: its log so far, and how to kill it. */
export interface WatchedChild {
  name: string;
  lines: readonly string[];
  kill(): void;
}

const children = new Set<WatchedChild>();

/** Report `child` in a timeout and kill it then; call the returned function once it exited. */
export function watchChild(child: WatchedChild): () => void {
  children.add(child);
  return () => children.delete(child);
}

/** How long each registered cleanup may take at a timeout before the report goes on without it. */
const cleanupTimeoutMs = 300_000;

const cleanups = new Set<() => unknown>();

/**
 * Run `cleanup` should the running test time out, after its service processes were killed: a
 * hung test's own `finally` never runs, so what only that would remove (Docker containers, a
 * daemon it started) is removed here, before the next test. Make `cleanup` safe to run twice
 * (the test's `finally` may run it too, should the hang end later). Returns the function that
 * unregisters it; whatever is still registered when the test ends is dropped then.
 */
export function cleanUpOnTimeout(cleanup: () => void | Promise<void>): () => void {
  cleanups.add(cleanup);
  return () => cleanups.delete(cleanup);
}

/** Run every registered cleanup (the last registered first), each bounded; their failures. */
async function runCleanups(): Promise<string[]> {
  const failures: string[] = [];
  for (const cleanup of [...cleanups].reverse()) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`still running after ${cleanupTimeoutMs} ms`)),
        cleanupTimeoutMs,
      );
    });
    try {
      await Promise.race([(async () => await cleanup())(), late]);
    } catch (err) {
      failures.push(`cleanup failed: ${err instanceof Error ? err.message : String(err)}`);
    } finally {
      clearTimeout(timer);
    }
  }
  cleanups.clear();
  return failures;
}

function timeoutReport(name: string, limitMs: number): string {
  const parts = [`test "${name}" did not finish in ${limitMs / 1000} s (tests/_watchdog.ts)`];
  const lines = recorded();
  if (lines.length) parts.push(`last in-process log lines:\n${lines.join("\n")}`);
  for (const c of children) {
    parts.push(
      `service ${c.name} still running, its last lines:\n${c.lines.slice(-childLines).join("\n")}`,
    );
  }
  return parts.join("\n\n");
}

type TestFn = (t: Deno.TestContext) => void | Promise<void>;

const ownLimit = Symbol("watchdog limit");

/**
 * `fn` with a watchdog limit of its own, `ms` (never shorter than `testTimeoutMs`): for the few
 * tests whose usual time on a fresh machine is many minutes (the Docker image builds), which
 * bound each of their own steps.
 */
export function slowTest(ms: number, fn: TestFn): TestFn {
  return Object.assign((t: Deno.TestContext) => fn(t), { [ownLimit]: ms });
}

function guarded(name: string, fn: TestFn): TestFn {
  const limitMs = Math.max(testTimeoutMs, (fn as { [ownLimit]?: number })[ownLimit] ?? 0);
  const wrapped = async (t: Deno.TestContext): Promise<void> => {
    recent.length = 0;
    recentStart = 0;
    cleanups.clear();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const report = timeoutReport(name, limitMs);
        for (const c of children) {
          try {
            c.kill();
          } catch {
            // Exited meanwhile: nothing left to free.
          }
        }
        children.clear();
        void runCleanups().then((failures) =>
          reject(new Error([report, ...failures].join("\n\n")))
        );
      }, limitMs);
    });
    try {
      await Promise.race([fn(t), expired]);
    } finally {
      clearTimeout(timer);
      cleanups.clear();
    }
  };
  Object.defineProperty(wrapped, "name", { value: fn.name });
  return wrapped;
}

/** Deno.test with every overload's function wrapped in `guarded`. */
function install(): void {
  const original = Deno.test;
  const test = function (this: unknown, ...args: unknown[]): void {
    const def = args.find((a): a is Deno.TestDefinition => typeof a === "object" && a !== null);
    const name = typeof args[0] === "string"
      ? args[0]
      : def?.name ?? (args.find((a) => typeof a === "function") as TestFn | undefined)?.name ??
        "test";
    const i = args.findIndex((a) => typeof a === "function");
    if (i >= 0) args[i] = guarded(name, args[i] as TestFn);
    else if (def?.fn) args[args.indexOf(def)] = { ...def, fn: guarded(name, def.fn) };
    return (original as (...a: unknown[]) => void).apply(this, args);
  };
  Object.assign(test, { ignore: original.ignore, only: original.only });
  Object.defineProperty(Deno, "test", { value: test, writable: true, configurable: true });
}

if (testTimeoutMs > 0) install();
