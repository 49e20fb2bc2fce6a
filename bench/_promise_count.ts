/**
 * Preloaded (`deno run --preload bench/_promise_count.ts`) by bench/_depot_prof.ts
 * `--promises`: counts every promise the process creates (V8's promise init hook), and on
 * SIGUSR2 writes the count so far to `/tmp/promise_count.<pid>`. A count of work, not of
 * time: the hook itself slows the process, so no CPU figure is read while it is on.
 * @module
 */

interface DenoCore {
  setPromiseHooks(init?: () => void): void;
}

const core = (Deno as unknown as Record<symbol, { core: DenoCore }>)[
  (Deno as unknown as { internal: symbol }).internal
].core;
let created = 0;
core.setPromiseHooks(() => created++);
Deno.addSignalListener("SIGUSR2", () => {
  Deno.writeTextFileSync(`/tmp/promise_count.${Deno.pid}`, String(created));
});
