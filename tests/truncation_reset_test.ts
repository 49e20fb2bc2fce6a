/**
 * A transfer cut mid-way must end in an error at the client, never in a clean end: curl
 * downloads a close-delimited HTTP/1.0 response (no Content-Length, so only the way the
 * connection ends tells a complete body from a half one) through each relay, and the far side
 * dies mid-body — the origin behind seaprox resets, depot-local (--mux or plain tunnels),
 * fusion-server or tunnel-client (TCP tunnel) is killed. curl must exit non-zero ("Connection
 * reset by peer") instead of 0 with half the bytes; and a clean end must stay a clean end.
 */

import { type AddressInfo, createConnection, createServer, type Socket } from "node:net";
import { assert, assertEquals } from "./_assert.ts";
import { portFor } from "./_seaprox.ts";
import { createHash } from "node:crypto";
import { socksDial } from "./_depot.ts";
import {
  blockStreamSha256,
  drainHash,
  freePort,
  portOf,
  readAll,
  sendBlocks,
  type ServiceProcess,
  startService,
  within,
} from "./_util.ts";
import { writeAll } from "../lib/net/mod.ts";
import { type ServiceName, servicePermissions } from "../tools/install.ts";

/**
 * The exact permission flags tools/install.ts gives `name` (installed services, the image):
 * the resets below must happen under them, not only under -A.
 */
const installed = (name: ServiceName) => servicePermissions(name);

const partBytes = 256 * 1024;

/**
 * An origin that answers every request with a close-delimited body of `partBytes` and then
 * either resets the connection ("reset") or holds it open until `release()` ("hold").
 */
function origin(mode: "reset" | "hold") {
  const socks = new Set<Socket>();
  let sentPart!: () => void;
  const partSent = new Promise<void>((r) => sentPart = r);
  const srv = createServer((sock) => {
    socks.add(sock);
    sock.on("error", () => {}); // resets are what this origin is for
    sock.on("close", () => socks.delete(sock));
    let head = "";
    sock.on("data", (d) => {
      if (head.includes("\r\n\r\n")) return;
      head += d.toString("latin1");
      if (!head.includes("\r\n\r\n")) return;
      sock.write("HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n");
      sock.write(new Uint8Array(partBytes), () => {
        sentPart();
        if (mode === "reset") setTimeout(() => sock.resetAndDestroy(), 100);
      });
    });
  });
  const listening = new Promise<number>((r) =>
    srv.listen(0, "127.0.0.1", () => r((srv.address() as AddressInfo).port))
  );
  return {
    listening,
    partSent,
    close: () =>
      new Promise<void>((r) => {
        for (const s of socks) s.destroy();
        srv.close(() => r());
      }),
  };
}

/** Start curl on `url` (extra args for a proxy); resolves with its exit code and byte count. */
function curl(url: string, extra: string[] = []) {
  const child = new Deno.Command("curl", {
    args: ["-sS", "--max-time", "60", "-o", "/dev/null", "-w", "%{size_download}", ...extra, url],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  return child.output().then((o) => ({
    code: o.code,
    bytes: Number(new TextDecoder().decode(o.stdout)),
    stderr: new TextDecoder().decode(o.stderr),
  }));
}

/**
 * Wait until the origin sent its part, failing with curl's result if curl ended first (a
 * refused or failed request never reaches the origin, whose part would never come).
 */
async function partSent(
  o: { partSent: Promise<void> },
  got: Promise<{ code: number; bytes: number; stderr: string }>,
): Promise<void> {
  const early = got.then((r) => {
    throw new Error(`curl ended before the origin sent its part: exit ${r.code} ${r.stderr}`);
  });
  await within(Promise.race([o.partSent, early]), "the origin to send its part to curl");
}

function assertCut(r: { code: number; bytes: number; stderr: string }, what: string) {
  assert(r.bytes < partBytes + 1, `${what}: ${r.bytes} bytes`);
  assert(r.code !== 0, `${what}: curl exit 0 after ${r.bytes} bytes of a cut transfer`);
  assertEquals(r.code, 56, `${what}: ${r.stderr}`); // CURLE_RECV_ERROR: connection reset
}

Deno.test("truncation: an origin reset behind seaprox resets curl (SOCKS5 and CONNECT)", async () => {
  const o = origin("reset");
  const port = await o.listening;
  const svc = await startService("seaprox.ts", [
    "--listen=socks5://127.0.0.1:0",
    "--listen=http://127.0.0.1:0",
  ], { readyCount: 2, permissions: installed("seaprox") });
  try {
    await svc.waitFor(/msg="connection resets available" libc=\//);
    const url = `http://127.0.0.1:${port}/`;
    assertCut(
      await curl(url, ["--socks5-hostname", `127.0.0.1:${portFor(svc, "socks5")}`]),
      "socks",
    );
    assertCut(await curl(url, ["-p", "-x", `http://127.0.0.1:${portFor(svc, "http")}`]), "connect");
  } finally {
    await svc.stop();
    await o.close();
  }
});

Deno.test("truncation: depot-local killed mid-transfer resets curl at depot-server (--mux)", async () => {
  const o = origin("hold");
  const port = await o.listening;
  const env = { DEPOT_TOKEN: "truncation-depot-token" };
  const procs: ServiceProcess[] = [];
  try {
    const server = await startService("depot-server.ts", [
      "--control=:0",
      "--socks=:0",
      "--tunnel=:0",
    ], { permissions: installed("depot-server"), readyCount: 3, env });
    procs.push(server);
    const local = await startService("depot-local.ts", [
      `--server=${server.addrs.get("control")}`,
      "--mux",
    ], { permissions: installed("depot-local"), readyCount: 0, ready: /msg="connected"/, env });
    procs.push(local);
    const got = curl(`http://127.0.0.1:${port}/`, [
      "--socks5-hostname",
      `127.0.0.1:${portFor(server, "socks")}`,
    ]);
    await partSent(o, got);
    await local.stop("SIGKILL");
    assertCut(await got, "depot");
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await o.close();
  }
});

Deno.test("truncation: fusion-server killed mid-transfer resets curl at fusion-client", async () => {
  const o = origin("hold");
  const port = await o.listening;
  const env = { FUSION_TOKEN: "truncation-fusion-token" };
  const procs: ServiceProcess[] = [];
  try {
    const server = await startService("fusion-server.ts", [
      "--listen=127.0.0.1:0",
      `--target=127.0.0.1:${port}`,
    ], { permissions: installed("fusion-server"), env });
    procs.push(server);
    const client = await startService("fusion-client.ts", [
      "--listen=127.0.0.1:0",
      `--server=${server.addrs.get("listen")}`,
      "--paths=2",
      "--grace-ms=500",
    ], { permissions: installed("fusion-client"), env });
    procs.push(client);
    const got = curl(`http://127.0.0.1:${portOf(client.addrs.get("listen")!)}/`);
    await partSent(o, got);
    await server.stop("SIGKILL");
    assertCut(await got, "fusion");
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await o.close();
  }
});

Deno.test("truncation: tunnel-client killed mid-transfer resets curl at tunnel-server (TCP tunnel)", async () => {
  const o = origin("hold");
  const port = await o.listening;
  const publicPort = freePort();
  const id = "truncation-tunnel-identifier";
  const procs: ServiceProcess[] = [];
  try {
    const server = await startService("tunnel-server.ts", [
      "--listen=127.0.0.1:0",
      `--tcp-ports=${publicPort}-${publicPort}`,
      `--tcp=${publicPort}:${port}=env:TUNNEL_APP_ID`,
    ], { permissions: installed("tunnel-server"), readyCount: 1, env: { TUNNEL_APP_ID: id } });
    procs.push(server);
    const client = await startService("tunnel-client.ts", [
      `--server=http://${server.addrs.get("http")}`,
      `--allow-port=${port}`,
    ], {
      permissions: installed("tunnel-client"),
      readyCount: 0,
      ready: /msg="connected"/,
      env: { TUNNEL_IDENTIFIER: id },
    });
    procs.push(client);
    await server.waitFor(new RegExp(`msg="listening" name=tcp-${publicPort}`));
    const got = curl(`http://127.0.0.1:${publicPort}/`);
    await partSent(o, got);
    await client.stop("SIGKILL");
    assertCut(await got, "tunnel");
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await o.close();
  }
});

/**
 * A forwarder for depot-local's control connection that passes bytes both ways but never
 * passes on the local's end: after the local dies, depot-server keeps seeing an open control
 * connection until its heartbeat gives up. That fixes the order of the worst case — the
 * tunnel's FIN reaches the server before any sign that the local is gone — which a kill alone
 * leaves to chance.
 */
function holdingForwarder(to: number) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const pump = async (src: Deno.Conn, dst: Deno.Conn) => {
    const buf = new Uint8Array(16 * 1024);
    try {
      for (let n = await src.read(buf); n !== null; n = await src.read(buf)) {
        await dst.write(buf.subarray(0, n));
      }
    } catch {
      // The killed local's side resets or the held side was closed: the end is held anyway.
    }
  };
  const pumps: Promise<void>[] = [];
  const accepting = (async () => {
    for await (const local of listener) {
      const server = await Deno.connect({ hostname: "127.0.0.1", port: to });
      conns.push(local, server);
      pumps.push(pump(local, server), pump(server, local));
    }
  })();
  return {
    addr: `127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    async close() {
      listener.close();
      await accepting.catch(() => {});
      for (const c of conns) {
        try {
          c.close();
        } catch {
          // Closed by a pump already.
        }
      }
      await Promise.all(pumps);
    },
  };
}

Deno.test("truncation: depot-local killed mid-transfer resets curl at depot-server (plain tunnels)", async () => {
  const o = origin("hold");
  const port = await o.listening;
  const env = { DEPOT_TOKEN: "truncation-depot-token" };
  const procs: ServiceProcess[] = [];
  let fwd: ReturnType<typeof holdingForwarder> | undefined;
  try {
    const server = await startService("depot-server.ts", [
      "--control=:0",
      "--socks=:0",
      "--tunnel=:0",
      "--heartbeat=200ms",
    ], { permissions: installed("depot-server"), readyCount: 3, env });
    procs.push(server);
    fwd = holdingForwarder(portOf(server.addrs.get("control")!));
    const local = await startService("depot-local.ts", [
      `--server=${fwd.addr}`,
      `--tunnel=${server.addrs.get("tunnel")}`,
    ], { permissions: installed("depot-local"), readyCount: 0, ready: /msg="connected"/, env });
    procs.push(local);
    const got = curl(`http://127.0.0.1:${port}/`, [
      "--socks5-hostname",
      `127.0.0.1:${portFor(server, "socks")}`,
    ]);
    await partSent(o, got);
    await local.stop("SIGKILL");
    assertCut(await got, "depot");
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await fwd?.close();
    await o.close();
  }
});

Deno.test("truncation: a clean end through depot plain tunnels stays clean (curl SHA-256, half-close)", async () => {
  const bodyBytes = 32 * 1024 * 1024;
  const uploads: Promise<{ bytes: number; sha256: string }>[] = [];
  const target = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  // "G…" (curl's GET): a close-delimited body, then a FIN. "U": "hello" and a FIN first, then
  // everything the client still sends (the target's FIN must not end the other direction).
  const serving = (async () => {
    for await (const c of target) {
      uploads.push(
        (async () => {
          try {
            const first = new Uint8Array(1);
            if ((await c.read(first)) !== 1) return { bytes: -1, sha256: "" };
            if (first[0] === 0x55) {
              await writeAll(c, new TextEncoder().encode("hello"));
              await c.closeWrite();
              return await drainHash(c);
            }
            await writeAll(c, new TextEncoder().encode("HTTP/1.0 200 OK\r\n\r\n"));
            await sendBlocks(c, bodyBytes, 7);
            await c.closeWrite();
            return await drainHash(c);
          } finally {
            c.close();
          }
        })().catch((err) => ({ bytes: -1, sha256: String(err) })),
      );
    }
  })();
  const env = { DEPOT_TOKEN: "truncation-depot-token" };
  const procs: ServiceProcess[] = [];
  try {
    const server = await startService("depot-server.ts", [
      "--control=:0",
      "--socks=:0",
      "--tunnel=:0",
    ], { permissions: installed("depot-server"), readyCount: 3, env });
    procs.push(server);
    procs.push(
      await startService("depot-local.ts", [`--server=${server.addrs.get("control")}`], {
        permissions: installed("depot-local"),
        readyCount: 0,
        ready: /msg="connected"/,
        env,
      }),
    );
    const socksPort = portFor(server, "socks");
    const out = await new Deno.Command("curl", {
      args: [
        "-sS",
        "--max-time",
        "60",
        "--socks5-hostname",
        `127.0.0.1:${socksPort}`,
        `http://127.0.0.1:${target.addr.port}/`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
    assertEquals(
      createHash("sha256").update(out.stdout).digest("hex"),
      blockStreamSha256(bodyBytes, 7),
    );

    const c = await socksDial(socksPort, { host: "127.0.0.1", port: target.addr.port });
    await writeAll(c, new TextEncoder().encode("U"));
    const hello = await within(readAll(c), "the target's hello and FIN through depot");
    assertEquals(new TextDecoder().decode(hello), "hello"); // the target's FIN first
    await sendBlocks(c, 4 * 1024 * 1024, 3); // and the upload still flows after it
    await c.closeWrite();
    c.close();
    assertEquals(await within(uploads[1], "the upload's end at the target"), {
      bytes: 4 * 1024 * 1024,
      sha256: blockStreamSha256(4 * 1024 * 1024, 3),
    });
  } finally {
    for (const p of procs.reverse()) await p.stop();
    target.close();
    await serving.catch(() => {});
    await Promise.allSettled(uploads);
  }
});

Deno.test("truncation: a client's reset reaches the origin as a reset through seaprox (dialled side)", async () => {
  // The origin records how its connection ended: "end" (FIN) or the error code (RST).
  const ended = Promise.withResolvers<string>();
  let got!: () => void;
  const gotBytes = new Promise<void>((r) => got = r);
  const socks = new Set<Socket>();
  const srv = createServer((sock) => {
    socks.add(sock);
    sock.on("data", () => got());
    sock.on("end", () => ended.resolve("end"));
    sock.on("error", (e: NodeJS.ErrnoException) => ended.resolve(e.code ?? e.message));
    sock.on("close", () => socks.delete(sock));
  });
  const port = await new Promise<number>((r) =>
    srv.listen(0, "127.0.0.1", () => r((srv.address() as AddressInfo).port))
  );
  const svc = await startService("seaprox.ts", [
    `--listen=static://127.0.0.1:0?to=127.0.0.1:${port}`,
  ], {
    readyCount: 1,
    permissions: installed("seaprox"),
  });
  try {
    const client = createConnection(portFor(svc, "static"), "127.0.0.1");
    client.on("error", () => {}); // it resets itself
    client.write("the start of an upload");
    await within(gotBytes, "the upload's first bytes at the origin");
    client.resetAndDestroy();
    assertEquals(await within(ended.promise, "the origin's end of the connection"), "ECONNRESET");
  } finally {
    await svc.stop();
    for (const s of socks) s.destroy();
    await new Promise<void>((r) => srv.close(() => r()));
  }
});
