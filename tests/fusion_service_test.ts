/**
 * fusion-client and fusion-server as processes: 32 MiB each way through 2 paths, a
 * half-closed request answered after the client's FIN, and flag errors.
 */
import { closeQuietly, writeAll } from "../lib/net/mod.ts";
import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { startHashTarget } from "./_fusion.ts";
import {
  blockStreamSha256,
  drainHash,
  listenLocal,
  portOf,
  readAll,
  run,
  sendBlocks,
  type ServiceProcess,
  startService,
  until,
} from "./_util.ts";

const MiB = 1024 * 1024;
const env = { FUSION_TOKEN: "service-test-token" };

async function startPair(targetPort: number, extra: string[] = []): Promise<{
  server: ServiceProcess;
  client: ServiceProcess;
  port: number;
}> {
  const server = await startService("fusion-server.ts", [
    "--listen",
    "127.0.0.1:0",
    "--target",
    `127.0.0.1:${targetPort}`,
    ...extra,
  ], { env });
  try {
    const client = await startService("fusion-client.ts", [
      "--listen",
      "127.0.0.1:0",
      "--server",
      server.addrs.get("listen")!,
      "--paths",
      "2",
    ], { env });
    return { server, client, port: portOf(client.addrs.get("listen")!) };
  } catch (err) {
    await server.stop();
    throw err;
  }
}

Deno.test("fusion services: 32 MiB each way through 2 paths", async () => {
  const target = startHashTarget(32 * MiB);
  const { server, client, port } = await startPair(target.port, ["--metrics", "127.0.0.1:0"]);
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      const [, down] = await Promise.all([
        sendBlocks(conn, 32 * MiB, 1).then(() => conn.closeWrite()),
        drainHash(conn),
      ]);
      assertEquals(down, { bytes: 32 * MiB, sha256: blockStreamSha256(32 * MiB, 2) });
    } finally {
      closeQuietly(conn);
    }
    await client.waitFor(/msg="session closed".* end=done/);
    await server.waitFor(/msg="session closed".* end=done/);
    // The target (in this process) records its hash once it has read EOF.
    await until("the target's hash", () => target.results.length > 0);
    assertEquals(target.results[0], { bytes: 32 * MiB, sha256: blockStreamSha256(32 * MiB, 1) });
    const metricsAddr = /msg="metrics listening".* addr=(\S+)/.exec(
      await server.waitFor(/msg="metrics listening"/),
    )![1];
    const text = await (await fetch(`http://${metricsAddr}/metrics`)).text();
    assertMatch(text, /warren_fusion_sessions_total\{end="done"\} 1/);
    assertMatch(text, /warren_fusion_bytes_total\{direction="in"\} 33554432/);
    const status = await (await fetch(`http://${metricsAddr}/status`)).json();
    assertEquals(status.recent[0].bytesIn, 32 * MiB);
    // Every path the session had: both of the client's carried data. On a loaded box one may
    // go silent and be dialed again (a third entry, the transfer exact all the same).
    const paths = status.recent[0].paths as { bytesIn: number }[];
    assert(paths.filter((p) => p.bytesIn > 0).length >= 2, JSON.stringify(paths));
  } finally {
    await client.stop();
    await server.stop();
    await target.close();
  }
});

Deno.test("fusion services: the reply to a half-closed request arrives", async () => {
  // The target answers only after it read EOF: the client's FIN must cross the session.
  const listener = listenLocal();
  const served = (async () => {
    const c = await listener.accept();
    try {
      const req = await readAll(c);
      await writeAll(c, new TextEncoder().encode(`got ${req.length} bytes`));
      await c.closeWrite();
      await readAll(c);
    } finally {
      closeQuietly(c);
    }
  })();
  const { server, client, port } = await startPair(listener.addr.port);
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      await writeAll(conn, new Uint8Array(12345));
      await conn.closeWrite();
      assertEquals(new TextDecoder().decode(await readAll(conn)), "got 12345 bytes");
    } finally {
      closeQuietly(conn);
    }
    await served;
  } finally {
    closeQuietly(listener);
    await client.stop();
    await server.stop();
  }
});

Deno.test("fusion services: bad flags exit 2 with one line", async () => {
  const svc = new URL("../services/fusion-client.ts", import.meta.url).pathname;
  const noToken = await run(Deno.execPath(), ["run", "-A", svc, "--server", "127.0.0.1:1"], {
    env: { FUSION_TOKEN: "" },
  });
  assertEquals(noToken.code, 2);
  assertMatch(noToken.stderr, /token is required/);
  const badPath = await run(Deno.execPath(), ["run", "-A", svc, "--path", "1.2.3.4>nope"], { env });
  assertEquals(badPath.code, 2);
  const badSched = await run(
    Deno.execPath(),
    ["run", "-A", svc, "--server", "127.0.0.1:1", "--scheduler", "fast"],
    { env },
  );
  assertEquals(badSched.code, 2);
});
