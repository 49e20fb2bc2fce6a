/**
 * The layering, pinned: each protocol module's import graph (`deno info --json`, type-only
 * imports included) stays inside its layer — net at the bottom; codecs, mux and sequencer;
 * transport; the services' logic (tunnel, depot, fusion, proxy); metrics and status on top —
 * and the lib folders import each other without a circle.
 */

import { assert, assertEquals } from "./_assert.ts";

const root = new URL("../", import.meta.url);

interface GraphModule {
  specifier: string;
  kind?: string;
  error?: string;
  dependencies?: { code?: { specifier: string }; type?: { specifier: string } }[];
}

async function graph(path: string): Promise<GraphModule[]> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", path],
    cwd: root,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert(out.success, `deno info ${path}: ${new TextDecoder().decode(out.stderr)}`);
  const { modules } = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    modules: GraphModule[];
  };
  const broken = modules.filter((m) => m.error).map((m) => `${m.specifier}: ${m.error}`);
  assertEquals(broken, [], `${path}: modules that do not load`);
  return modules;
}

/** A module's graph as checkout-relative file paths and npm package names. */
async function loads(path: string): Promise<{ files: string[]; npm: string[] }> {
  const modules = await graph(path);
  const files = modules.filter((m) => m.specifier.startsWith(root.href))
    .map((m) => m.specifier.slice(root.href.length));
  const npm = modules.filter((m) => m.kind === "npm")
    .map((m) => m.specifier.replace(/^npm:\/?/, "").replace(/@[^@/]+$/, ""));
  return { files, npm };
}

const base = ["lib/net/", "lib/log.ts"];
const counted = [...base, "lib/stats.ts"];

/** Each protocol module and what its graph may hold (path prefixes; npm packages). */
const layers: Record<string, { allow: string[]; npm?: string[] }> = {
  "lib/net/mod.ts": { allow: base },
  "lib/sequencer/mod.ts": { allow: [...base, "lib/sequencer/"] },
  "lib/control/mod.ts": { allow: [...base, "lib/control/"] },
  "lib/socks5/mod.ts": { allow: [...base, "lib/socks5/"] },
  "lib/proxyproto/mod.ts": { allow: [...base, "lib/proxyproto/"] },
  "lib/http/mod.ts": { allow: [...base, "lib/http/"] },
  "lib/udp/mod.ts": { allow: [...counted, "lib/udp/", "lib/socks5/"] },
  "lib/mux/mod.ts": { allow: [...counted, "lib/mux/"] },
  "lib/transport/mod.ts": { allow: [...base, "lib/transport/", "lib/http/", "lib/socks5/"] },
  "lib/fusion/mod.ts": {
    allow: [
      ...counted,
      "lib/fusion/",
      "lib/sequencer/",
      "lib/transport/",
      "lib/http/",
      "lib/socks5/",
    ],
  },
  "lib/depot/mod.ts": {
    allow: [
      ...counted,
      "lib/depot/",
      "lib/control/",
      "lib/mux/",
      "lib/socks5/",
      "lib/transport/",
      "lib/http/",
      "lib/udp/",
    ],
  },
  "lib/proxy/mod.ts": {
    allow: [
      ...counted,
      "lib/proxy/",
      "lib/http/",
      "lib/mux/",
      "lib/proxyproto/",
      "lib/socks5/",
      "lib/transport/",
      "lib/udp/",
    ],
  },
  // The inspector watches relayed HTTP; it knows nothing of the tunnel that feeds it.
  "lib/inspect/mod.ts": { allow: [...base, "lib/inspect/", "lib/http/"] },
  // The demo's clients speak the protocols, never the services' internals.
  "lib/demo/mod.ts": {
    allow: [...base, "lib/demo/", "lib/http/", "lib/socks5/", "lib/transport/"],
  },
  // The Hono front (app.ts) and admin API are part of the tunnel, and so is the Redis
  // registry of a cluster (@redis/client, which needs cluster-key-slot).
  "lib/tunnel/mod.ts": {
    allow: [
      ...counted,
      "lib/tunnel/",
      "lib/cluster/lease.ts",
      "lib/cluster/links.ts",
      "lib/cluster/reconnect.ts",
      "lib/config/secret.ts",
      "lib/control/",
      "lib/http/",
      "lib/mux/",
      "lib/proxyproto/",
      "lib/socks5/",
      "lib/transport/",
      "lib/udp/",
    ],
    npm: ["hono", "@redis/client", "cluster-key-slot"],
  },
};

for (const [mod, layer] of Object.entries(layers)) {
  Deno.test(`layers: ${mod} loads only its layer`, async () => {
    const { files, npm } = await loads(mod);
    assert(files.includes(mod), `${mod} is in its own graph`);
    const outside = files.filter((f) => !layer.allow.some((p) => f.startsWith(p)));
    assertEquals(outside, [], `${mod} loads modules above or beside its layer`);
    assertEquals(npm.filter((p) => !(layer.npm ?? []).includes(p)), [], `${mod}: npm packages`);
  });
}

Deno.test("layers: lib/mux loads no hono, prom-client, status page, tunnel, depot or fusion", async () => {
  const { files, npm } = await loads("lib/mux/mod.ts");
  assertEquals(npm, []);
  const above = files.filter((f) =>
    /^lib\/(status|tunnel|depot|fusion|proxy)\/|^lib\/metrics\.ts$|^lib\/cli/.test(f)
  );
  assertEquals(above, []);
});

Deno.test("layers: the metrics registry knows nothing of the status page", async () => {
  const { files, npm } = await loads("lib/metrics.ts");
  assertEquals(files.filter((f) => f.startsWith("lib/status/")), []);
  assertEquals(npm, ["prom-client"]);
});

Deno.test("layers: no import circle between lib folders", async () => {
  // lib/<folder>/… or a top-level lib file is one unit; an edge is any import between two.
  const unit = (spec: string): string | undefined => {
    if (!spec.startsWith(`${root.href}lib/`)) return undefined;
    const rel = spec.slice(`${root.href}lib/`.length);
    return rel.includes("/") ? rel.slice(0, rel.indexOf("/")) : rel;
  };
  const edges = new Map<string, Set<string>>();
  for (const entry of ["mod.ts", "services/_kit.ts", "lib/cli_security.ts", "lib/config/mod.ts"]) {
    for (const m of await graph(entry)) {
      const from = unit(m.specifier);
      if (!from) continue;
      for (const d of m.dependencies ?? []) {
        for (const to of [d.code?.specifier, d.type?.specifier].map((s) => s && unit(s))) {
          if (to && to !== from) edges.set(from, (edges.get(from) ?? new Set()).add(to));
        }
      }
    }
  }
  assert(edges.size >= 10, `the graph covers lib (${[...edges.keys()].join(", ")})`);
  // Depth-first search: a unit met again while still on the path closes a circle.
  const done = new Set<string>();
  const path: string[] = [];
  const visit = (u: string): void => {
    const at = path.indexOf(u);
    if (at >= 0) throw new Error(`import circle: ${[...path.slice(at), u].join(" -> ")}`);
    if (done.has(u)) return;
    path.push(u);
    for (const v of edges.get(u) ?? []) visit(v);
    path.pop();
    done.add(u);
  };
  for (const u of edges.keys()) visit(u);
});
