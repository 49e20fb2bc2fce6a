/**
 * What a service process carries at start (issue 20, "process weight"): a library only some
 * configurations use is imported where it is used (`await import`), never at start. Each
 * loaded library is heap that every full GC marks again, and per-connection buffers set off a
 * full GC every few hundred connections (bench/RESULTS.md, 2026-12-07 depot-weight). Pinned
 * here: no service's static import graph (`deno info --json`, dynamic and type-only edges left
 * out) reaches the Redis client (a cluster's, with --registry only) or prom-client (an
 * embedding's registry, lib/metrics promRegistry()), and depot and seaprox load no other
 * service's lib (depot-server took lib/tunnel for its cluster flags, now services/config/cluster.ts).
 */

import { assert, assertEquals } from "./_assert.ts";

const root = new URL("../", import.meta.url);

/** npm packages only a configuration that asks for them may load. */
const loadedWhenUsed = ["@redis/client", "prom-client"];

interface Dependency {
  code?: { specifier: string };
  isDynamic?: boolean;
  npmPackage?: string;
}

interface Graph {
  roots: string[];
  modules: { specifier: string; dependencies?: Dependency[] }[];
  redirects: Record<string, string>;
}

/**
 * What `path` loads at start (static code imports only): checkout-relative files and npm
 * packages (name@version).
 */
async function staticGraph(path: string): Promise<{ files: string[]; npm: string[] }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", path],
    cwd: root,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert(out.success, `deno info ${path}: ${new TextDecoder().decode(out.stderr)}`);
  const g = JSON.parse(new TextDecoder().decode(out.stdout)) as Graph;
  const bySpecifier = new Map(g.modules.map((m) => [m.specifier, m]));
  const npm = new Set<string>();
  const seen = new Set<string>();
  const todo = [...g.roots];
  for (let s = todo.pop(); s !== undefined; s = todo.pop()) {
    if (seen.has(s)) continue;
    seen.add(s);
    for (const d of bySpecifier.get(s)?.dependencies ?? []) {
      if (d.isDynamic || d.code === undefined) continue;
      if (d.npmPackage) npm.add(d.npmPackage);
      todo.push(g.redirects[d.code.specifier] ?? d.code.specifier);
    }
  }
  const files = [...seen].filter((f) => f.startsWith(root.href))
    .map((f) => f.slice(root.href.length));
  return { files: files.sort(), npm: [...npm].sort() };
}

const services = [...Deno.readDirSync(new URL("services/", root))]
  .filter((e) => e.isFile && /^[a-z][a-z-]*\.ts$/.test(e.name))
  .map((e) => `services/${e.name}`)
  .sort();

Deno.test("service weight: no service loads the Redis client or prom-client at start", async () => {
  assert(services.length >= 8, services.join(", "));
  const heavy: string[] = [];
  for (const s of services) {
    for (const p of (await staticGraph(s)).npm) {
      if (loadedWhenUsed.some((name) => p.startsWith(`${name}@`))) heavy.push(`${s}: ${p}`);
    }
  }
  assertEquals(heavy, []);
});

/** Each service and the lib folders of other services it has no use for. */
const others: Record<string, string[]> = {
  "services/depot-server.ts": ["lib/tunnel/", "lib/proxy/"],
  "services/depot-local.ts": ["lib/tunnel/", "lib/proxy/"],
  "services/seaprox.ts": ["lib/tunnel/", "lib/depot/"],
};

Deno.test("service weight: depot and seaprox load no other service's lib at start", async () => {
  const loaded: string[] = [];
  for (const [s, folders] of Object.entries(others)) {
    const { files } = await staticGraph(s);
    assert(files.includes(s), `${s} is in its own graph`);
    for (const f of files) if (folders.some((d) => f.startsWith(d))) loaded.push(`${s}: ${f}`);
  }
  assertEquals(loaded, []);
});

Deno.test("service weight: the graph walk sees a static npm import (the test can fail)", async () => {
  // lib/config/load.ts imports smol-toml statically: a walk that missed static edges would
  // pass the test above without looking.
  assert((await staticGraph("lib/config/load.ts")).npm.some((p) => p.startsWith("smol-toml@")));
});

Deno.test("service weight: an embedding's prom-client metrics still reach /metrics' text", async () => {
  const { metricsText, promRegistry } = await import("../lib/metrics.ts");
  assert(!(await metricsText()).includes("test_embedded_total"));
  const registry = await promRegistry();
  assertEquals(await promRegistry(), registry, "one registry");
  // deno-lint-ignore no-import-prefix
  const { Counter } = await import("npm:prom-client@15.1.3");
  new Counter({ name: "test_embedded_total", help: "kept with prom-client", registers: [registry] })
    .inc(3);
  assert((await metricsText()).includes("\ntest_embedded_total 3\n"));
  registry.clear();
  // An empty registry adds nothing (prom-client writes one "\n" for it).
  assert(!(await metricsText()).endsWith("\n\n"), "no blank line from an empty registry");
});
