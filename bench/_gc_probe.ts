/**
 * `deno run --preload bench/_gc_probe.ts --v8-flags=--expose-gc ...`: a probe preloaded into a
 * process whose weight bench/_start_weight.ts measures. On SIGUSR2 it runs two full GCs and
 * prints one line, `{"gcProbe":{heapUsedMB,heapTotalMB,externalMB,rssMB}}`, on stderr: what
 * every later full GC of the process marks again. Nothing else (no import, no timer).
 * @module
 */

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("bench/_gc_probe.ts needs --v8-flags=--expose-gc");
Deno.addSignalListener("SIGUSR2", () => {
  gc();
  gc();
  const m = Deno.memoryUsage();
  const mb = (b: number) => Math.round(b / 1e4) / 100;
  console.error(JSON.stringify({
    gcProbe: {
      heapUsedMB: mb(m.heapUsed),
      heapTotalMB: mb(m.heapTotal),
      externalMB: mb(m.external),
      rssMB: mb(m.rss),
    },
  }));
});
