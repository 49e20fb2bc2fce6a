/**
 * Every service logs its open-file limits as it starts, and warns when the soft one is below
 * what its connection limits need (seaprox: two descriptors per connection of --max-conns,
 * plus a reserve), so a deployment learns at start-up, not at the first EMFILE, that its
 * LimitNOFILE is too low. The figures are the process's own (/proc/<pid>/limits).
 */

import { assertEquals, assertMatch } from "./_assert.ts";
import { startService } from "./_util.ts";
import { startDepotServerService } from "./_depot.ts";
import { fdReserve } from "../services/_kit.ts";

/** The soft and hard open-file limits of process `pid`, as /proc writes them. */
async function limitsOf(pid: number): Promise<[string, string]> {
  const text = await Deno.readTextFile(`/proc/${pid}/limits`);
  const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(text)!;
  return [m[1], m[2]];
}

Deno.test("fd limits at start: logged; a --max-conns the soft limit cannot hold is warned about", async () => {
  const small = await startService("seaprox.ts", [
    "--listen=socks5://127.0.0.1:0",
    "--max-conns=1",
  ]);
  let soft: string, hard: string;
  try {
    [soft, hard] = await limitsOf(small.child.pid);
    const line = await small.waitFor(/msg="open-file limit"/);
    assertMatch(line, new RegExp(`level=info .*soft=${soft} hard=${hard} need=${2 + fdReserve}`));
    assertEquals(small.lines.some((l) => /raise LimitNOFILE/.test(l)), false);
  } finally {
    await small.stop();
  }
  if (soft === "unlimited") return; // Nothing is too many (not so on any Linux default).
  const big = await startService("seaprox.ts", [
    "--listen=socks5://127.0.0.1:0",
    `--max-conns=${soft}`,
  ]);
  try {
    const line = await big.waitFor(/raise LimitNOFILE/);
    assertMatch(
      line,
      new RegExp(`level=warn .*soft=${soft} hard=${hard} need=${2 * Number(soft) + fdReserve}`),
    );
  } finally {
    await big.stop();
  }
});

Deno.test("fd limits: the example systemd unit's LimitNOFILE holds every service's default connection limits", async () => {
  const unit = await Deno.readTextFile(
    new URL("../deploy/systemd/warren@.service", import.meta.url),
  );
  const limit = Number(/^LimitNOFILE=(\d+)$/m.exec(unit)?.[1]);
  // The defaults of --max-conns (depot-server: 3 listeners, the tunnel one with
  // --standby-total beside; seaprox: 2 per connection; tunnel-server: 1) and fusion-server's
  // --max-sessions x (--max-paths + 1).
  const { command: depot } = await import("../services/config/depot-server.ts");
  const { command: seaprox } = await import("../services/config/seaprox.ts");
  const { command: tunnel } = await import("../services/config/tunnel-server.ts");
  const { command: fusion } = await import("../services/config/fusion-server.ts");
  const needs = [
    3 * Number(depot.flags["max-conns"].default) + Number(depot.flags["standby-total"].default),
    2 * Number(seaprox.flags["max-conns"].default),
    Number(tunnel.flags["max-conns"].default),
    Number(fusion.flags["max-sessions"].default) * (Number(fusion.flags["max-paths"].default) + 1),
  ].map((n) => n + fdReserve);
  assertEquals(needs.filter((n) => !(n <= limit)), [], `LimitNOFILE=${limit}`);
});

Deno.test("fd limits: depot-server's need counts the idle standby spares (--standby-total) beside 3 x --max-conns", async () => {
  const server = await startDepotServerService(["--max-conns", "5", "--standby-total", "7"], {
    env: { DEPOT_TOKEN: "fd-need-token" },
  });
  try {
    const line = await server.waitFor(/msg="open-file limit/);
    // The old need left the spares out: 3 x 5 + 64.
    assertMatch(line, new RegExp(` need=${3 * 5 + 7 + fdReserve}( |$)`));
  } finally {
    await server.stop();
  }
});
