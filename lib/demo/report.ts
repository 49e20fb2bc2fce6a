/**
 * The demo's checks and its one table: each check runs in turn under a deadline, and the
 * table says per path what it went through, how long it took, the bytes that came back and
 * whether they were right; a failed check is named with its service and the reason.
 * @module
 */

import { errorMessage } from "../net/mod.ts";

/** One path through the set: what `run` sends and checks, returning the bytes received. */
export interface DemoCheck {
  /** Short name of the path (`socks5`, `tunnel ws`). */
  path: string;
  /** What it goes through, with the real addresses. */
  through: string;
  /** The service(s) a failure points at. */
  service: string;
  run(): Promise<number>;
}

/** The outcome of one check. */
export interface DemoResult {
  check: DemoCheck;
  ok: boolean;
  ms: number;
  bytes: number;
  /** Why it failed. */
  reason?: string;
}

/** The table's column titles, in order. */
export const demoColumns = ["path", "through", "time", "bytes", "ok"] as const;

/** `p`, or a rejection saying `what` did not happen within `ms` (a hang is a failure). */
export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** Run the checks one after the other, each within `timeoutMs`. */
export async function runChecks(checks: DemoCheck[], timeoutMs: number): Promise<DemoResult[]> {
  const results: DemoResult[] = [];
  for (const check of checks) {
    const t0 = performance.now();
    try {
      const bytes = await within(check.run(), timeoutMs, "no answer");
      results.push({ check, ok: true, ms: performance.now() - t0, bytes });
    } catch (err) {
      const ms = performance.now() - t0;
      results.push({ check, ok: false, ms, bytes: 0, reason: errorMessage(err) });
    }
  }
  return results;
}

const mib = (n: number) => `${(n / (1024 * 1024)).toFixed(2)} MiB`;

/** The table (header and one row per result), then one line per failure. */
export function formatTable(results: DemoResult[]): string {
  const rows = results.map((r) => [
    r.check.path,
    r.check.through,
    `${Math.round(r.ms)} ms`,
    mib(r.bytes),
    r.ok ? "ok" : "FAIL",
  ]);
  const all = [[...demoColumns], ...rows];
  const width = demoColumns.map((_, i) => Math.max(...all.map((row) => row[i].length)));
  // Text columns left-aligned, figures right-aligned.
  const line = (row: string[]) =>
    row.map((cell, i) => i === 2 || i === 3 ? cell.padStart(width[i]) : cell.padEnd(width[i]))
      .join("  ").trimEnd();
  const failures = results.filter((r) => !r.ok)
    .map((r) => `FAIL ${r.check.path} (${r.check.service}): ${r.reason}`);
  return [...all.map(line), ...(failures.length ? ["", ...failures] : [])].join("\n");
}

/** The final line: all passed (and what that covered), or how many failed. */
export function summaryLine(results: DemoResult[], totalMs: number, covered: string): string {
  const failed = results.filter((r) => !r.ok).length;
  const secs = (totalMs / 1000).toFixed(1);
  return failed === 0
    ? `all checks passed: ${results.length} paths in ${secs} s, through ${covered}`
    : `${failed} of ${results.length} checks failed (${secs} s)`;
}
