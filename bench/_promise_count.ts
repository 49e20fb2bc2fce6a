/**
 * Preloaded (`deno run --preload bench/_promise_count.ts`) by bench/_depot_prof.ts
 * `--promises`: counts every promise the process creates (V8's promise init hook), and on
 * SIGUSR2 writes the count so far to `/tmp/promise_count.<pid>`. A count of work, not of
 * time: the hook itself slows the process, so no CPU figure is read while it is on.
 *
 * `BENCH_PROMISE_SITES=1` (bench/_depot_prof.ts `--promise-sites`): each promise is also
 * counted by where it was made (the innermost frame and the first frame outside Deno's own
 * `ext:` code, from a stack trace per promise: slow), and SIGUSR2 first writes those counts
 * as JSON to `/tmp/promise_sites.<pid>`.
 * @module
 */

interface DenoCore {
  setPromiseHooks(init?: () => void): void;
}

const core = (Deno as unknown as Record<symbol, { core: DenoCore }>)[
  (Deno as unknown as { internal: symbol }).internal
].core;
let created = 0;
const sites = new Map<string, number>();
const bySite = Deno.env.get("BENCH_PROMISE_SITES") === "1";

/** `at f (file:line:col)` → `f file:line`, the path shortened to its last two parts. */
function frameName(line: string): string {
  const m = /at (?:async )?(.*?) ?\(?([^ ()]*?):(\d+):\d+\)?$/.exec(line.trim());
  if (!m) return line.trim();
  const file = m[2].split("/").slice(-2).join("/");
  return `${m[1] || "<anon>"} ${file}:${m[3]}`;
}

/** Where the promise being made was made: innermost frame « first frame of our code. */
function site(): string {
  const lines = (new Error().stack ?? "").split("\n").slice(3); // Error, site, the hook
  const inner = lines[0] ?? "?";
  const ours = lines.find((l) => !l.includes("ext:") && !l.includes("<anonymous>"));
  const a = frameName(inner);
  return ours && ours !== inner ? `${a} « ${frameName(ours)}` : a;
}

core.setPromiseHooks(
  bySite
    ? () => {
      created++;
      const s = site();
      sites.set(s, (sites.get(s) ?? 0) + 1);
    }
    : () => created++,
);
Error.stackTraceLimit = bySite ? 24 : Error.stackTraceLimit;
Deno.addSignalListener("SIGUSR2", () => {
  if (bySite) {
    Deno.writeTextFileSync(`/tmp/promise_sites.${Deno.pid}`, JSON.stringify([...sites]));
  }
  Deno.writeTextFileSync(`/tmp/promise_count.${Deno.pid}`, String(created));
});
