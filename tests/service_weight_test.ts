/**
 * What a service process carries at start (issue 20, "process weight"): a library only some
 * configurations use is imported where it is used (`await import`), never at start. Each
 * loaded library is heap that every full GC marks again, and per-connection buffers set off a
 * full GC every few hundred connections (bench/RESULTS.md, 2026-12-07 depot-weight). Pinned
 * here: no service's static import graph (`deno info --json`, dynamic and type-only edges left
 * out) reaches the Redis client (a cluster's, with --registry only) or prom-client (an
 * embedding's registry, lib/metrics promRegistry()); the status page's app, Hono, the admin API
 * and the inspector load when a flag or a request asks for them; depot and seaprox load no other
 * service's lib (depot-server took lib/tunnel for its cluster flags, now services/config/cluster.ts)
 * and tunnel-client none of the tunnel server's; and the traffic services load none of Deno's
 * node: modules (weight2: the node layer is ~1-2.5 MB of heap).
 */

import { assert, assertEquals } from "./_assert.ts";
import {
  socksDial,
  startDepotLocalService,
  startDepotServerService,
  startTarget,
} from "./_depot.ts";
import {
  fetchText,
  portOf,
  readWithin,
  type ServiceProcess,
  startService,
  until,
  within,
} from "./_util.ts";
import { rawGet, startApp } from "./_tunnel.ts";
import { closeQuietly, writeAll } from "../lib/net/mod.ts";

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

const services = [...Deno.readDirSync(new URL("services/", root))]
  .filter((e) => e.isFile && /^[a-z][a-z-]*\.ts$/.test(e.name))
  .map((e) => `services/${e.name}`)
  .sort();

/** Every path whose graph a test walks: the services, and the two that show the walk can fail. */
const graphPaths = [...services, "tests/ip_family_test.ts", "lib/config/load.ts"];

let wholeGraph: Promise<Graph> | undefined;

/**
 * The module graph of all of {@linkcode graphPaths} at once: one `deno info --json` of a module
 * that imports each of them (one process costs 1-3 s under load, and the tests below walk ~30
 * graphs). Walked from one path, it gives what that path's own `deno info` gives.
 */
function allGraphs(): Promise<Graph> {
  wholeGraph ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "warren-weight-" });
    try {
      const all = `${dir}/all.ts`;
      await Deno.writeTextFile(
        all,
        graphPaths.map((p) => `import "${new URL(p, root).href}";\n`).join(""),
      );
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["info", "--json", all],
        cwd: root,
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert(out.success, `deno info ${graphPaths}: ${new TextDecoder().decode(out.stderr)}`);
      return JSON.parse(new TextDecoder().decode(out.stdout)) as Graph;
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  })();
  return wholeGraph;
}

/**
 * What `path` (one of {@linkcode graphPaths}) loads at start (static code imports only):
 * checkout-relative files, npm packages (name@version) and Deno's node: modules.
 */
async function staticGraph(
  path: string,
): Promise<{ files: string[]; npm: string[]; node: string[] }> {
  assert(graphPaths.includes(path), `${path} is not in graphPaths`);
  const g = await allGraphs();
  const bySpecifier = new Map(g.modules.map((m) => [m.specifier, m]));
  const npm = new Set<string>();
  const seen = new Set<string>();
  const todo = [new URL(path, root).href];
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
  const node = [...seen].filter((f) => f.startsWith("node:"));
  return { files: files.sort(), npm: [...npm].sort(), node: node.sort() };
}

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

/**
 * What a service loads only when a flag or a request asks for it: the status page's app (Hono
 * and uPlot's text, at the page's first request), tunnel-server's admin API (Hono, `--admin`),
 * tunnel-client's inspector (`--inspect`; its two defaults come from lib/inspect/record.ts), and
 * lib/tunnel's mod.ts, which would load the embeddable front's Hono app with everything else.
 */
const loadedOnDemand = {
  npm: ["hono", "uplot"],
  files: [
    "lib/status/app.ts",
    "lib/status/page.ts",
    "lib/status/mod.ts",
    "lib/tunnel/mod.ts",
    "lib/tunnel/app.ts",
    "lib/tunnel/admin.ts",
    "lib/inspect/mod.ts",
    "lib/inspect/inspector.ts",
    "lib/inspect/serve.ts",
    "lib/inspect/capture.ts",
  ],
};

/** The five services that carry traffic (the demo and the fusion pair are left out). */
const traffic = [
  "services/depot-server.ts",
  "services/depot-local.ts",
  "services/seaprox.ts",
  "services/tunnel-server.ts",
  "services/tunnel-client.ts",
];

Deno.test("service weight: the status page, admin API, inspector and Hono load on demand", async () => {
  const loaded: string[] = [];
  for (const s of [...traffic, "services/fusion-server.ts", "services/fusion-client.ts"]) {
    const { files, npm } = await staticGraph(s);
    for (const p of npm) {
      if (loadedOnDemand.npm.some((name) => p.startsWith(`${name}@`))) loaded.push(`${s}: ${p}`);
    }
    for (const f of files) if (loadedOnDemand.files.includes(f)) loaded.push(`${s}: ${f}`);
  }
  assertEquals(loaded, []);
});

Deno.test("service weight: a service's status listener still serves the page and uPlot", async () => {
  const { serveObservability } = await import("../lib/status/serve.ts");
  const { silentLogger } = await import("../lib/log.ts");
  const obs = serveObservability({ host: "127.0.0.1", port: 0 }, {
    service: "weight <svc>",
    log: silentLogger,
    status: () => ({ ok: true }),
  });
  try {
    const base = `http://127.0.0.1:${obs.addr.port}`;
    // Two requests at once before the app is loaded: both get the page, from one app.
    const [a, b] = await Promise.all([fetch(`${base}/`), fetch(`${base}/status/ui`)]);
    assertEquals([a.status, b.status], [200, 200]);
    const [pa, pb] = [await a.text(), await b.text()];
    assert(pa.includes("weight &#60;svc&#62;"), "the service's page");
    assertEquals(pa, pb);
    const js = await fetch(`${base}/status/ui/uplot.js`);
    assertEquals(js.status, 200);
    assert((await js.text()).includes("uPlot"));
    const data = await (await fetch(`${base}/status/ui/data`)).json() as { service: string };
    assertEquals(data.service, "weight <svc>");
    const st = await fetch(`${base}/status`);
    assertEquals(await st.json(), { ok: true });
  } finally {
    await obs.shutdown();
  }
});

/**
 * Services whose start loads none of Deno's node: modules (bench/RESULTS.md weight2): the node
 * layer (node:net, node:crypto, node:tls, node:process, node:util ...) is ~1-2.5 MB of heap that
 * every full GC marks again. What needs it (a bound local address, mutual TLS, UDP, name
 * resolution, a CA's signature check) imports it when a configuration or a request uses it.
 */
const nodeFree = [
  "services/depot-server.ts",
  "services/depot-local.ts",
  "services/seaprox.ts",
  "services/tunnel-server.ts",
  "services/tunnel-client.ts",
  "services/fusion-server.ts",
  "services/fusion-client.ts",
];

Deno.test("service weight: no node: module in a service's start-up graph", async () => {
  const loaded: string[] = [];
  for (const s of nodeFree) {
    const { files, node } = await staticGraph(s);
    assert(files.includes(s), `${s} is in its own graph`);
    for (const m of node) loaded.push(`${s}: ${m}`);
  }
  assertEquals(loaded, []);
  // The walk sees node: edges (the test can fail): a test that imports node:net as its
  // oracle has it in its graph.
  assert((await staticGraph("tests/ip_family_test.ts")).node.includes("node:net"));
});

/**
 * The node: modules a running process holds (V8's scripts, through its inspector: the
 * `Debugger.scriptParsed` replay that `Debugger.enable` sends, its answer after the last).
 */
async function loadedNodeModules(svc: ServiceProcess): Promise<string[]> {
  const line = await svc.waitFor(/Debugger listening on ws:\/\/\S+/);
  const url = /ws:\/\/\S+/.exec(line)![0];
  const ws = new WebSocket(url);
  const closed = new Promise((ok) => ws.onclose = ok);
  try {
    await within(
      new Promise((ok, fail) => {
        ws.onopen = ok;
        ws.onerror = fail;
      }),
      "the inspector's WebSocket",
    );
    const urls: string[] = [];
    const answered = new Promise<void>((ok) => {
      ws.onmessage = (e) => {
        const m = JSON.parse(e.data) as { id?: number; method?: string; params?: { url: string } };
        if (m.method === "Debugger.scriptParsed" && m.params) urls.push(m.params.url);
        if (m.id === 1) ok();
      };
    });
    ws.send(JSON.stringify({ id: 1, method: "Debugger.enable" }));
    await within(answered, "Debugger.enable's answer");
    return urls.filter((u) => u.startsWith("node:")).sort();
  } finally {
    ws.close();
    await within(closed, "the inspector's WebSocket close");
  }
}

Deno.test("service weight: a running seaprox holds no node: module but Deno's timers", async () => {
  // What the static graph cannot see: an `await import("node:...")` on a path every start or
  // every connection takes. node:timers is Deno's own: its setTimeout is node's timers.
  const target = startTarget();
  const sp = await startService("seaprox.ts", [
    "--listen",
    `static://127.0.0.1:0?to=127.0.0.1:${target.port}`,
    "--listen",
    "socks5://127.0.0.1:0",
    "--metrics",
    "127.0.0.1:0",
  ], { readyCount: 2, denoArgs: ["--inspect=127.0.0.1:0"] });
  try {
    const c = await Deno.connect({ hostname: "127.0.0.1", port: portOf(sp.addrs.get("static")!) });
    await writeAll(c, new TextEncoder().encode("Ehi"));
    await readWithin(c, new Uint8Array(2), "the echo through seaprox static");
    closeQuietly(c);
    const s = await socksDial(portOf(sp.addrs.get("socks5")!), {
      host: "127.0.0.1",
      port: target.port,
    });
    await writeAll(s, new TextEncoder().encode("Ehi"));
    await readWithin(s, new Uint8Array(2), "the echo through seaprox SOCKS5");
    closeQuietly(s);
    const metrics = await sp.waitFor(/msg="metrics listening"/);
    await fetchText(`http://${/addr=(\S+)/.exec(metrics)![1]}/metrics`);
    assertEquals(await loadedNodeModules(sp), ["node:timers"]);
  } finally {
    await sp.stop();
    await target.close();
  }
});

Deno.test("service weight: a running depot pair holds no node: module but Deno's timers", async () => {
  const target = startTarget();
  const env = { DEPOT_TOKEN: "weight-token-0123456789" };
  const inspect = ["--inspect=127.0.0.1:0"];
  const server = await startDepotServerService(["--metrics", "127.0.0.1:0"], {
    env,
    denoArgs: inspect,
  });
  let local: ServiceProcess | undefined;
  try {
    local = await startDepotLocalService(server, [], { env, denoArgs: inspect });
    const s = await socksDial(portOf(server.addrs.get("socks")!), {
      host: "127.0.0.1",
      port: target.port,
    });
    await writeAll(s, new TextEncoder().encode("Ehi"));
    await readWithin(s, new Uint8Array(2), "the echo through depot");
    closeQuietly(s);
    await local.waitFor(/msg="connection closed"/);
    await server.waitFor(/msg="connection closed"/);
    const metrics = await server.waitFor(/msg="metrics listening"/);
    await fetchText(`http://${/addr=(\S+)/.exec(metrics)![1]}/metrics`);
    assertEquals(await loadedNodeModules(server), ["node:timers"], "depot-server");
    assertEquals(await loadedNodeModules(local), ["node:timers"], "depot-local");
  } finally {
    await local?.stop();
    await server.stop();
    await target.close();
  }
});

Deno.test("service weight: a running tunnel pair holds no node: module but Deno's timers", async () => {
  const app = startApp();
  const id = "weight-identifier-1234";
  const inspect = ["--inspect=127.0.0.1:0"];
  const ts = await startService("tunnel-server.ts", [
    ...["--listen", "127.0.0.1:0", "--host", "w.test=env:APP_ID", "--metrics", "127.0.0.1:0"],
  ], { env: { APP_ID: id }, denoArgs: inspect });
  const port = portOf(ts.addrs.get("http")!);
  let tc: ServiceProcess | undefined;
  try {
    tc = await startService("tunnel-client.ts", [
      ...["--server", `http://127.0.0.1:${port}`, "--local", `127.0.0.1:${app.port}`],
    ], {
      readyCount: 0,
      ready: /msg="connected"/,
      env: { TUNNEL_IDENTIFIER: id },
      denoArgs: inspect,
    });
    await until(
      "a request through the tunnel",
      async () => (await rawGet(port, "w.test", "/hello?id=1")).body === "hello 1",
    );
    const metrics = await ts.waitFor(/msg="metrics listening"/);
    await fetchText(`http://${/addr=(\S+)/.exec(metrics)![1]}/metrics`);
    assertEquals(await loadedNodeModules(ts), ["node:timers"], "tunnel-server");
    assertEquals(await loadedNodeModules(tc), ["node:timers"], "tunnel-client");
  } finally {
    await tc?.stop();
    await ts.stop();
    await app.close();
  }
});

/** Each service and the lib folders of other services it has no use for. */
const others: Record<string, string[]> = {
  "services/depot-server.ts": ["lib/tunnel/", "lib/proxy/"],
  "services/depot-local.ts": ["lib/tunnel/", "lib/proxy/"],
  "services/seaprox.ts": ["lib/tunnel/", "lib/depot/"],
  // The client's side of lib/tunnel only: the server (its registry, hosts, ports, cluster and
  // fronts) came along with the two heartbeat defaults the client took from server.ts.
  "services/tunnel-client.ts": [
    "lib/tunnel/server.ts",
    "lib/tunnel/front_http.ts",
    "lib/depot/",
    "lib/proxy/",
  ],
};

Deno.test("service weight: depot, seaprox and tunnel-client load no other side's lib at start", async () => {
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
