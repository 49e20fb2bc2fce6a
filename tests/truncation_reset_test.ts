/**
 * A transfer cut mid-way must end in an error at the client, never in a clean end: curl
 * downloads a close-delimited HTTP/1.0 response (no Content-Length, so only the way the
 * connection ends tells a complete body from a half one) through each relay, and the far side
 * dies mid-body — the origin behind seaprox resets, depot-local (--mux), fusion-server or
 * tunnel-client (TCP tunnel) is killed. curl must exit non-zero ("Connection reset by peer")
 * instead of 0 with half the bytes.
 */

import { type AddressInfo, createServer, type Socket } from "node:net";
import { assert, assertEquals } from "./_assert.ts";
import { portFor } from "./_seaprox.ts";
import { freePort, portOf, type ServiceProcess, startService } from "./_util.ts";

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
  ], { readyCount: 2 });
  try {
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
    ], { readyCount: 3, env });
    procs.push(server);
    const local = await startService("depot-local.ts", [
      `--server=${server.addrs.get("control")}`,
      "--mux",
    ], { readyCount: 0, ready: /msg="connected"/, env });
    procs.push(local);
    const got = curl(`http://127.0.0.1:${port}/`, [
      "--socks5-hostname",
      `127.0.0.1:${portFor(server, "socks")}`,
    ]);
    await o.partSent;
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
    ], { env });
    procs.push(server);
    const client = await startService("fusion-client.ts", [
      "--listen=127.0.0.1:0",
      `--server=${server.addrs.get("listen")}`,
      "--paths=2",
      "--grace-ms=500",
    ], { env });
    procs.push(client);
    const got = curl(`http://127.0.0.1:${portOf(client.addrs.get("listen")!)}/`);
    await o.partSent;
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
      `--tcp=${publicPort}:${port}=env:APP_ID`,
    ], { readyCount: 1, env: { APP_ID: id } });
    procs.push(server);
    const client = await startService("tunnel-client.ts", [
      `--server=http://${server.addrs.get("http")}`,
      `--allow-port=${port}`,
    ], { readyCount: 0, ready: /msg="connected"/, env: { TUNNEL_IDENTIFIER: id } });
    procs.push(client);
    await server.waitFor(new RegExp(`msg="listening" name=tcp-${publicPort}`));
    const got = curl(`http://127.0.0.1:${publicPort}/`);
    await o.partSent;
    await client.stop("SIGKILL");
    assertCut(await got, "tunnel");
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await o.close();
  }
});
