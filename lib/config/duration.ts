/**
 * Durations as people write them in flags and config files: `250ms`, `30s`, `5m`, `1h`, and
 * sums such as `1m30s`. A bare number is milliseconds, as every `-ms` flag took before.
 * @module
 */

/** Milliseconds per unit suffix. */
const unitMs: Readonly<Record<string, number>> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };

/**
 * Milliseconds of a duration text (rounded to whole ms), or undefined when it is not one.
 *
 * @example
 * ```ts
 * import { parseDurationMs } from "./duration.ts";
 * console.assert(parseDurationMs("1m30s") === 90_000);
 * console.assert(parseDurationMs("250") === 250);
 * console.assert(parseDurationMs("soon") === undefined);
 * ```
 */
export function parseDurationMs(text: string): number | undefined {
  const s = text.trim();
  if (/^\d+(?:\.\d+)?$/.test(s)) return Math.round(Number(s));
  if (!/^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$/.test(s)) return undefined;
  let total = 0;
  for (const m of s.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) total += Number(m[1]) * unitMs[m[2]];
  return Math.round(total);
}

/** `ms` written with the largest unit that divides it (`90000` -> `90s`, `300000` -> `5m`). */
export function formatDurationMs(ms: number): string {
  for (const unit of ["h", "m", "s"]) {
    if (ms !== 0 && ms % unitMs[unit] === 0) return `${ms / unitMs[unit]}${unit}`;
  }
  return `${ms}ms`;
}
