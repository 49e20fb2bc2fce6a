/**
 * `deno run -A bench/idle_conns.ts [--conns N] [--root DIR]`: what idle public connections
 * cost a tunnel-server (services/tunnel-server.ts + tunnel-client, separate processes).
 * Three phases, each holding `--conns` connections open: connected but silent (before any
 * request), after one keep-alive request each (idle keep-alive: the issue-16 flood), then all
 * closed again. Prints the server's RSS and open file descriptors after each phase and the
 * KiB per connection. `--root` runs the services of another checkout (an old tree) with this
 * bench, for a before/after in one run.
 *
 * Not a test: numbers are as measured on a shared machine.
 */

import { closeQuietly, sleep } from "../lib/net/mod.ts";
import { benchFlags, listeningPort, procStatusKiB, spawnDeno, stopAll } from "./_util.ts";
import { fdCount } from "../tests/_soak.ts";

if (Deno.env.get("BENCH_ROLE") === "app") {
  const http = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => new Response("hello world\n"),
  );
  console.log(JSON.stringify({ http: http.addr.port }));
} else {
  const flags = benchFlags({ numbers: { conns: 2000 }, strings: ["root"] });
  const root = flags.root ?? new URL("..", import.meta.url).pathname;
  const service = (name: string) => `${root}/services/${name}`;
  const app = spawnDeno(import.meta.filename!, [], { env: { BENCH_ROLE: "app" } });
  const appPort = (JSON.parse(await app.waitFor(/^\{"http"/)) as { http: number }).http;
  const identifier = "bench-identifier-" + crypto.randomUUID();
  const server = spawnDeno(service("tunnel-server.ts"), [
    "--listen",
    "127.0.0.1:0",
    "--host",
    "app.test=env:BENCH_ID",
    "--max-conns",
    String(flags.conns + 100),
    "--log-level",
    "info",
  ], { env: { BENCH_ID: identifier } });
  const port = await listeningPort(server, "http");
  const client = spawnDeno(service("tunnel-client.ts"), [
    "--server",
    `http://127.0.0.1:${port}`,
    "--local",
    `127.0.0.1:${appPort}`,
    "--log-level",
    "info",
  ], { env: { TUNNEL_IDENTIFIER: identifier } });
  await client.waitFor(/msg="connected"/);
  const pid = server.child.pid;
  const request = new TextEncoder().encode("GET / HTTP/1.1\r\nHost: app.test\r\n\r\n");
  const settle = async () => {
    await sleep(1000);
    const rss = procStatusKiB(pid, "VmRSS");
    await sleep(1000);
    return Math.max(rss, procStatusKiB(pid, "VmRSS"));
  };
  const row = (what: string, rssKiB: number, base: number, n: number) =>
    console.log(
      `${what.padEnd(34)} ${String(n).padStart(6)} conns  RSS ${
        (rssKiB / 1024).toFixed(1).padStart(7)
      } MiB  fds ${String(fdCount(pid)).padStart(6)}  ${
        n ? ((rssKiB - base) / n).toFixed(1).padStart(6) + " KiB/conn" : ""
      }`,
    );
  // Warm up the path once, so the base includes the code that serves a request.
  const warm = await Deno.connect({ hostname: "127.0.0.1", port });
  await warm.write(request);
  await warm.read(new Uint8Array(4096));
  closeQuietly(warm);
  const base = await settle();
  console.log(`root ${root}`);
  row("baseline", base, base, 0);
  const conns: Deno.TcpConn[] = [];
  for (let i = 0; i < flags.conns; i++) {
    conns.push(await Deno.connect({ hostname: "127.0.0.1", port }));
  }
  const silent = await settle();
  row("connected, no request yet", silent, base, conns.length);
  const buf = new Uint8Array(4096);
  const batch = 100;
  for (let i = 0; i < conns.length; i += batch) {
    await Promise.all(
      conns.slice(i, i + batch).map(async (c) => {
        await c.write(request);
        let got = "";
        while (!got.includes("hello world\n")) {
          const n = await c.read(buf);
          if (n === null) throw new Error("closed before the response");
          got += new TextDecoder().decode(buf.subarray(0, n));
        }
      }),
    );
  }
  const afterOne = await settle();
  row("idle keep-alive after one request", afterOne, base, conns.length);
  for (const c of conns) closeQuietly(c);
  const closed = await settle();
  row("all closed again", closed, base, 0);
  await stopAll([client, server, app]);
}
