/**
 * deploy/config/*.toml: one example per service, each accepted by its service
 * (`--check-config`: every check a start runs, with the secrets their comments name in the
 * environment), and the file's keys
 * really reach the flags (a service started from its example with only addresses overridden).
 */

import { assert, assertEquals } from "./_assert.ts";
import { run, startService } from "./_util.ts";

const services = [
  "seaprox",
  "depot-server",
  "depot-local",
  "tunnel-server",
  "tunnel-client",
  "fusion-server",
  "fusion-client",
];
const configDir = new URL("../deploy/config/", import.meta.url).pathname;
/** The secrets the examples' comments say come from the environment. */
const exampleSecrets = {
  APP_IDENTIFIER: "example-app-identifier-1",
  DOCS_IDENTIFIER: "example-docs-identifier-2",
  TUNNEL_IDENTIFIER: "example-tunnel-identifier-3",
  FUSION_TOKEN: "example-fusion-token-4",
  DEPOT_TOKEN: "example-depot-token-5",
};

Deno.test("config examples: one per service, each accepted by --check-config", async () => {
  const files = [...Deno.readDirSync(configDir)].map((e) => e.name).filter((n) =>
    n.endsWith(".toml")
  ).sort();
  assertEquals(files, services.map((s) => `${s}.toml`).sort());
  await Promise.all(services.map(async (s) => {
    const r = await run(Deno.execPath(), [
      "run",
      "-A",
      new URL(`../services/${s}.ts`, import.meta.url).pathname,
      "--config",
      `${configDir}${s}.toml`,
      "--check-config",
    ], { env: exampleSecrets });
    assertEquals([s, r.code, r.stdout.trim()], [s, 0, `config ok: ${configDir}${s}.toml`]);
  }));
});

Deno.test("config examples: seaprox runs from its example with addresses overridden", async () => {
  const svc = await startService("seaprox.ts", [
    "--config",
    `${configDir}seaprox.toml`,
    "--listen",
    "socks5://127.0.0.1:0",
    "--metrics",
    "127.0.0.1:0",
  ]);
  try {
    const line = await svc.waitFor(/msg="metrics listening"/);
    const addr = /addr=(\S+)/.exec(line)![1];
    const res = await fetch(`http://${addr}/status`);
    const st = await res.json() as { maxConns: number };
    assertEquals(st.maxConns, 1024);
    assert(svc.addrs.has("socks5"));
  } finally {
    await svc.stop();
  }
});
