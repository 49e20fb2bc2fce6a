/**
 * Chaining: seaprox A `--forward socks5://B` sends every outgoing connection through the
 * upstream SOCKS5 proxy B (another seaprox with auth, and microsocks), and failures behind
 * the upstream come back with their reason.
 */

import { assertEquals } from "./_assert.ts";
import { closeQuietly, dial } from "../lib/net/mod.ts";
import { socks5Connect, Socks5ReplyError } from "../lib/socks5/mod.ts";
import { run, startOrigin } from "./_util.ts";
import { portFor, startSeaproxService } from "./_seaprox.ts";

Deno.test("seaprox chain: A --forward socks5://user:pass@B reaches the origin", async () => {
  const origin = startOrigin();
  const b = await startSeaproxService(["socks5://up:pw@127.0.0.1:0"]);
  const a = await startSeaproxService(
    [
      `static://127.0.0.1:0?to=localhost:${origin.port}`,
      "socks5://127.0.0.1:0",
      "http://127.0.0.1:0",
    ],
    ["--forward", `socks5://up:pw@127.0.0.1:${portFor(b, "socks5")}`],
  );
  try {
    const viaSocks = await run("curl", [
      "-sS",
      "--max-time",
      "20",
      "--socks5-hostname",
      `127.0.0.1:${portFor(a, "socks5")}`,
      `http://localhost:${origin.port}/hello?id=chain`,
    ]);
    assertEquals(viaSocks.code, 0, viaSocks.stderr);
    assertEquals(viaSocks.stdout, "hello chain");
    const viaStatic = await run("curl", [
      "-sS",
      "--max-time",
      "20",
      `http://127.0.0.1:${portFor(a, "static")}/hello?id=static`,
    ]);
    assertEquals(viaStatic.code, 0, viaStatic.stderr);
    assertEquals(viaStatic.stdout, "hello static");
    const viaHttp = await run("curl", [
      "-sS",
      "--max-time",
      "20",
      "-x",
      `http://127.0.0.1:${portFor(a, "http")}`,
      `http://localhost:${origin.port}/hello?id=http`,
    ]);
    assertEquals(viaHttp.code, 0, viaHttp.stderr);
    assertEquals(viaHttp.stdout, "hello http");
    // B saw the connections as user "up": the chain really went through it.
    await b.waitFor(/user=up/);

    // A refused destination behind B comes back to A's client as 0x05.
    const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const dead = l.addr.port;
    l.close();
    const c = await dial("127.0.0.1", portFor(a, "socks5"));
    try {
      await socks5Connect(c, { host: "127.0.0.1", port: dead });
      throw new Error("CONNECT should have failed");
    } catch (err) {
      if (!(err instanceof Socks5ReplyError)) throw err;
      assertEquals(err.reply, 0x05);
    } finally {
      closeQuietly(c);
    }
  } finally {
    assertEquals(await a.stop(), 0);
    assertEquals(await b.stop(), 0);
    await origin.close();
  }
});

Deno.test("seaprox chain: wrong upstream password fails the dial, not the process", async () => {
  const origin = startOrigin();
  const b = await startSeaproxService(["socks5://up:pw@127.0.0.1:0"]);
  const a = await startSeaproxService(
    ["socks5://127.0.0.1:0"],
    ["--forward", `socks5://up:nope@127.0.0.1:${portFor(b, "socks5")}`],
  );
  try {
    const r = await run("curl", [
      "-sS",
      "--max-time",
      "20",
      "--socks5-hostname",
      `127.0.0.1:${portFor(a, "socks5")}`,
      `http://localhost:${origin.port}/hello`,
    ]);
    assertEquals(r.code, 97, r.stderr);
    await a.waitFor(/end=dial-failed/);
  } finally {
    assertEquals(await a.stop(), 0);
    assertEquals(await b.stop(), 0);
    await origin.close();
  }
});

Deno.test("seaprox chain: through microsocks as the upstream", async () => {
  const origin = startOrigin();
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const msPort = probe.addr.port;
  probe.close();
  const ms = new Deno.Command("microsocks", {
    args: ["-i", "127.0.0.1", "-p", String(msPort)],
    stdout: "null",
    stderr: "null",
  }).spawn();
  let a: Awaited<ReturnType<typeof startSeaproxService>> | undefined;
  try {
    const deadline = Date.now() + 60_000; // microsocks listening: generous, a slow start is no failure
    while (true) {
      try {
        closeQuietly(await dial("127.0.0.1", msPort, { timeoutMs: 1000 }));
        break;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    a = await startSeaproxService(["socks5://127.0.0.1:0"], [
      "--forward",
      `socks5://127.0.0.1:${msPort}`,
    ]);
    const r = await run("curl", [
      "-sS",
      "--max-time",
      "20",
      "--socks5-hostname",
      `127.0.0.1:${portFor(a, "socks5")}`,
      `http://localhost:${origin.port}/hello?id=micro`,
    ]);
    assertEquals(r.code, 0, r.stderr);
    assertEquals(r.stdout, "hello micro");
  } finally {
    if (a) assertEquals(await a.stop(), 0);
    ms.kill("SIGTERM");
    await ms.status;
    await origin.close();
  }
});
