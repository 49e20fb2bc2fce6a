/**
 * A busy --metrics port is a clean one-line failure (exit 1) for every service, not a crash.
 */

import { assertEquals, assertMatch } from "./_assert.ts";
import { listenLocal, run } from "./_util.ts";

const cases: [string, string[]][] = [
  ["seaprox.ts", ["--listen", "socks5://127.0.0.1:0"]],
  ["fusion-server.ts", ["--listen", "127.0.0.1:0", "--token", "busy-port-token"]],
  ["fusion-client.ts", [
    "--listen",
    "127.0.0.1:0",
    "--server",
    "127.0.0.1:1",
    "--token",
    "busy-port-token",
  ]],
  ["tunnel-server.ts", ["--listen", "127.0.0.1:0"]],
  ["tunnel-client.ts", [
    "--server",
    "http://127.0.0.1:1",
    "--local",
    "127.0.0.1:1",
    "--identifier",
    "busy-port-identifier",
  ]],
  ["depot-server.ts", [
    "--control",
    "127.0.0.1:0",
    "--socks",
    "127.0.0.1:0",
    "--tunnel",
    "127.0.0.1:0",
    "--token",
    "busy-port-token",
  ]],
];

Deno.test("services: a busy --metrics port exits 1 with one line", async () => {
  const busy = listenLocal();
  try {
    for (const [script, args] of cases) {
      const r = await run(Deno.execPath(), [
        "run",
        "-A",
        new URL(`../services/${script}`, import.meta.url).pathname,
        ...args,
        "--metrics",
        `127.0.0.1:${busy.addr.port}`,
      ], { env: { FUSION_TOKEN: "busy-port-token", DEPOT_TOKEN: "busy-port-token" } });
      assertEquals(r.code, 1, `${script}: ${r.stderr}`);
      assertMatch(
        r.stderr,
        /^error: metrics: address 127\.0\.0\.1:\d+ is already in use$/m,
        script,
      );
      assertEquals(/Uncaught|at file:/.test(r.stderr), false, `${script} crashed: ${r.stderr}`);
    }
  } finally {
    busy.close();
  }
});

Deno.test("services: a busy --admin or --status port exits 1 with one line", async () => {
  const busy = listenLocal();
  const at = `127.0.0.1:${busy.addr.port}`;
  const listeners: [string, string, string[]][] = [
    ["tunnel-server.ts", "admin", ["--listen", "127.0.0.1:0", "--admin", at]],
    ["depot-server.ts", "status", [
      "--control",
      "127.0.0.1:0",
      "--socks",
      "127.0.0.1:0",
      "--tunnel",
      "127.0.0.1:0",
      "--status",
      at,
    ]],
  ];
  try {
    for (const [script, what, args] of listeners) {
      const r = await run(Deno.execPath(), [
        "run",
        "-A",
        new URL(`../services/${script}`, import.meta.url).pathname,
        ...args,
      ], { env: { TUNNEL_ADMIN_TOKEN: "admin-token-1", DEPOT_TOKEN: "busy-port-token" } });
      assertEquals(r.code, 1, `${script}: ${r.stderr}`);
      assertMatch(
        r.stderr,
        new RegExp(`^error: ${what}: address 127\\.0\\.0\\.1:\\d+ is already in use$`, "m"),
        script,
      );
      assertEquals(/Uncaught|at file:/.test(r.stderr), false, `${script} crashed: ${r.stderr}`);
    }
  } finally {
    busy.close();
  }
});
