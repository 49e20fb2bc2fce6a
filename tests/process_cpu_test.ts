/**
 * lib/metrics' process CPU figure (`process_cpu_seconds_total`) reads getrusage through Deno
 * itself, not node:process (whose `cpuUsage()` is the oracle here): the same seconds, within
 * the CPU spent between the two reads; and the /proc/self/stat fallback reads utime + stime
 * of a stat line (a command name with spaces and parentheses too) and agrees with getrusage to
 * its 10 ms ticks.
 */

import process from "node:process";
import { assert, assertEquals } from "./_assert.ts";
import { cpuSeconds, metricsText, procStatCpuSeconds } from "../lib/metrics.ts";

/** Burn some CPU so the figures are not all zero. */
function spin(ms: number): void {
  const end = performance.now() + ms;
  let x = 0;
  while (performance.now() < end) x += Math.sqrt(x + 1);
  assert(x > 0);
}

const seconds = (u: { user: number; system: number }) => (u.user + u.system) / 1e6;

Deno.test("process cpu: cpuSeconds is node:process cpuUsage's figure", () => {
  spin(30);
  const before = seconds(process.cpuUsage());
  const s = cpuSeconds();
  const after = seconds(process.cpuUsage());
  assert(s !== undefined && s > 0, String(s));
  assert(before <= s && s <= after, `${before} <= ${s} <= ${after}`);
});

Deno.test("process cpu: the exposition's process_cpu_seconds_total", async () => {
  spin(30);
  const before = seconds(process.cpuUsage());
  const text = await metricsText();
  const after = seconds(process.cpuUsage());
  const m = /^process_cpu_seconds_total (\S+)$/m.exec(text);
  assert(m, text);
  const v = Number(m[1]);
  assert(before <= v && v <= after, `${before} <= ${v} <= ${after}`);
});

Deno.test("process cpu: /proc/self/stat's utime + stime", () => {
  const line = "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 130 0 0 20 0 1 0";
  assertEquals(procStatCpuSeconds(line), 3.8);
  if (Deno.build.os !== "linux") return;
  spin(50);
  const fromStat = procStatCpuSeconds(Deno.readTextFileSync("/proc/self/stat"));
  const rusage = seconds(process.cpuUsage());
  // Ticks are 10 ms; the kernel's tick accounting and getrusage may differ by a few ticks.
  assert(fromStat > 0 && Math.abs(fromStat - rusage) < 0.1, `${fromStat} vs ${rusage}`);
});
