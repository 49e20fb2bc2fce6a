/**
 * `--workers N` with real processes: seaprox's supervisor starts two workers on the same
 * ports (SO_REUSEPORT); both answer, every download is byte-exact, SIGHUP reaches each,
 * a killed worker is restarted while the other serves, SIGTERM stops all of them, and a
 * killed supervisor takes its workers with it. Refusals are one line.
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import {
  blockStreamSha256,
  fetchJson,
  freePort,
  listenLocal,
  portOf,
  run,
  type ServiceProcess,
  sha256,
  startOrigin,
  startService,
  within,
} from "./_util.ts";
import { startRedis } from "./_redis.ts";
import { depotMemberArgs } from "./_depot.ts";
import { makePki } from "./_tls.ts";
import { encodeFrame, readFrameJson } from "../lib/control/mod.ts";
import { BufferedReader, closeQuietly, writeAll } from "../lib/net/mod.ts";
import { curl, hashThrough, startApp, startHasher } from "./_tunnel.ts";

const bulkBytes = 4 * 1024 * 1024;

/** seaprox with `--workers 2`: a static listener to `origin`, metrics; ready once both listen. */
async function seaproxWorkers(originPort: number, extra: string[] = []) {
  const port = freePort();
  const sp = await startService("seaprox.ts", [
    "--listen",
    `static://127.0.0.1:${port}?to=127.0.0.1:${originPort}`,
    "--metrics",
    "127.0.0.1:0",
    "--workers",
    "2",
    ...extra,
  ], { denoArgs: ["--unstable-net"], ready: /msg="workers ready"/ });
  // Each worker its own metrics port (port 0: any), in its "metrics listening" line.
  const metrics = new Map<string, string>();
  for (const w of ["1", "2"]) {
    const line = await sp.waitFor(new RegExp(`worker=${w} msg="metrics listening"`));
    metrics.set(w, /addr=(\S+)/.exec(line)![1]);
  }
  return { sp, port, metrics };
}

/** The pids of the workers the supervisor last said were ready or restarted. */
function workerPids(sp: ServiceProcess): Map<number, number> {
  const pids = new Map<number, number>();
  for (const l of sp.lines) {
    const ready = /msg="workers ready" count=\d+ pids="([\d,]+)"/.exec(l);
    if (ready) ready[1].split(",").forEach((p, i) => pids.set(i + 1, Number(p)));
    const restarted = /msg="worker restarted" worker=(\d+) pid=(\d+)/.exec(l);
    if (restarted) pids.set(Number(restarted[1]), Number(restarted[2]));
  }
  return pids;
}

/** Whether process `pid` is alive. */
function alive(pid: number): boolean {
  try {
    Deno.kill(pid, "SIGCONT");
    return true;
  } catch {
    return false; // ESRCH: gone
  }
}

/** GET `/bytes/N` through the proxy with curl; the SHA-256 of what curl wrote. */
async function curlSha(port: number, bytes: number, seed: number): Promise<string> {
  const r = await run("curl", [
    "-sS",
    "--fail",
    `http://127.0.0.1:${port}/bytes/${bytes}?seed=${seed}`,
  ]);
  assertEquals(r.code, 0, r.stderr);
  return sha256(r.raw);
}

/** Which workers logged a relayed connection so far. */
function workersThatRelayed(sp: ServiceProcess, since = 0): Set<string> {
  const seen = new Set<string>();
  for (const l of sp.lines.slice(since)) {
    const m = /worker=(\d+) listener=static .*msg="connection closed"/.exec(l);
    if (m) seen.add(m[1]);
  }
  return seen;
}

/** Small requests until both workers relayed one since line `since` (at most 200). */
async function untilBothAnswered(sp: ServiceProcess, port: number, since: number) {
  for (let i = 0; i < 200 && workersThatRelayed(sp, since).size < 2; i++) {
    const r = await run("curl", ["-sS", "--fail", `http://127.0.0.1:${port}/hello?id=${i}`]);
    assertEquals(r.stdout, `hello ${i}`, r.stderr);
    // The line of the connection just closed may still be on its way.
    await new Promise((r) => setTimeout(r, 5));
  }
  await new Promise((r) => setTimeout(r, 100));
  assertEquals([...workersThatRelayed(sp, since)].sort(), ["1", "2"]);
}

Deno.test("workers: two seaprox workers share the port, byte-exact, SIGHUP, restart, stop", async () => {
  const origin = startOrigin();
  const { sp, port, metrics } = await seaproxWorkers(origin.port);
  try {
    const pids = workerPids(sp);
    assertEquals(pids.size, 2);
    await untilBothAnswered(sp, port, 0);

    // Byte-exact downloads, six at once (spread over both workers by the kernel).
    const want = [0, 1, 2, 3, 4, 5].map((s) => blockStreamSha256(bulkBytes, s));
    const got = await Promise.all(want.map((_, s) => curlSha(port, bulkBytes, s)));
    assertEquals(got, want);

    // Each worker answers /metrics on its own port (a shared one would give whichever worker
    // the kernel picked), says so, and counts its own connections: together, the six.
    assert(metrics.get("1") !== metrics.get("2"));
    let accepted = 0;
    for (const [w, addr] of metrics) {
      for (let i = 0; i < 3; i++) {
        const res = await within(fetch(`http://${addr}/metrics`), `GET ${addr}/metrics`);
        const text = await within(res.text(), `the body of ${addr}/metrics`);
        assertEquals(res.headers.get("x-warren-worker"), `${w}/2`);
        assert(text.includes(`warren_worker_info{worker="${w}",workers="2"} 1`), text);
        if (i === 2) {
          const m = /^warren_listener_connections_total\{[^}]*\} (\d+)$/m.exec(text);
          accepted += Number(m?.[1] ?? 0);
        }
      }
    }
    assert(accepted >= 6, `connections counted by the two workers: ${accepted}`);

    // SIGHUP to the supervisor reaches every worker.
    Deno.kill(sp.child.pid, "SIGHUP");
    await sp.waitFor(/worker=1 msg="config reloaded"/);
    await sp.waitFor(/worker=2 msg="config reloaded"/);

    // kill -9 of worker 1: the other one goes on serving, worker 1 comes back.
    Deno.kill(pids.get(1)!, "SIGKILL");
    await sp.waitFor(/msg="worker exited, restarting" worker=1 .*signal=SIGKILL/);
    const r = await run("curl", ["-sS", "--fail", `http://127.0.0.1:${port}/hello?id=x`]);
    assertEquals(r.stdout, "hello x", r.stderr);
    await sp.waitFor(/msg="worker restarted" worker=1 pid=\d+ restarts=1/);
    const after = workerPids(sp);
    assert(after.get(1) !== pids.get(1));
    assertEquals(after.get(2), pids.get(2));
    await untilBothAnswered(sp, port, sp.lines.length);

    // SIGTERM: every worker drains and stops, then the supervisor, exit 0.
    assertEquals(await sp.stop("SIGTERM"), 0);
    for (const w of [1, 2]) assert(sp.lines.some((l) => l.includes(`worker=${w} msg="stopped"`)));
    for (const pid of after.values()) assert(!alive(pid), `worker ${pid} still running`);
  } finally {
    await sp.stop("SIGKILL");
    await origin.close();
  }
});

Deno.test("workers: a supervisor killed with -9 takes its workers with it", async () => {
  const origin = startOrigin();
  const { sp } = await seaproxWorkers(origin.port);
  try {
    const pids = [...workerPids(sp).values()];
    assertEquals(pids.length, 2);
    await sp.stop("SIGKILL");
    // Their stdin (the lifeline) ends: each shuts down as on SIGTERM.
    for (let i = 0; i < 200 && pids.some(alive); i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assertEquals(pids.filter(alive), []);
  } finally {
    await sp.stop("SIGKILL");
    await origin.close();
  }
});

Deno.test("workers: refusals are one line (no --unstable-net, port 0, busy port, udp, no registry, state file; tunnel and depot)", async () => {
  const busy = listenLocal();
  const seaprox = new URL("../services/seaprox.ts", import.meta.url).pathname;
  const tunnelServer = new URL("../services/tunnel-server.ts", import.meta.url).pathname;
  const depotServer = new URL("../services/depot-server.ts", import.meta.url).pathname;
  const depotPorts =
    () => ["--socks", `127.0.0.1:${freePort()}`, "--control", `127.0.0.1:${freePort()}`];
  const cases: { deno: string[]; args: string[]; code: number; line: RegExp; svc?: string }[] = [
    {
      svc: tunnelServer,
      deno: ["--unstable-net"],
      args: ["--listen", `127.0.0.1:${freePort()}`],
      code: 2,
      line:
        /^error: .*--workers needs --registry redis:\/\/… \(the workers share which one holds each client\)$/,
    },
    {
      svc: tunnelServer,
      deno: ["--unstable-net"],
      args: [
        "--listen",
        `127.0.0.1:${freePort()}`,
        "--registry",
        "redis://127.0.0.1:1",
        "--state-file",
        "/tmp/x.json",
      ],
      code: 2,
      line: /^error: .*--workers: --state-file would have one writer per worker$/,
    },
    {
      svc: depotServer,
      deno: ["--unstable-net"],
      args: [...depotPorts(), "--token", "workers-depot-token"],
      code: 2,
      line:
        /^error: .*--workers needs --registry redis:\/\/… \(the workers share which one holds each exit\)$/,
    },
    {
      deno: [],
      args: ["--listen", `static://127.0.0.1:${freePort()}?to=127.0.0.1:9`],
      code: 2,
      line:
        /^error: --workers: sharing ports \(SO_REUSEPORT\) needs Linux and deno run --unstable-net$/,
    },
    {
      deno: ["--unstable-net"],
      args: ["--listen", "static://127.0.0.1:0?to=127.0.0.1:9"],
      code: 2,
      line: /^error: .*--workers: port 0 would give each worker its own port$/,
    },
    {
      deno: ["--unstable-net"],
      args: ["--listen", `static://127.0.0.1:${busy.addr.port}?to=127.0.0.1:9`],
      code: 1,
      line: /^error: static:\/\/127\.0\.0\.1:\d+.*address already in use$/,
    },
    {
      deno: ["--unstable-net"],
      args: ["--listen", `udp://127.0.0.1:${freePort()}?to=127.0.0.1:53`],
      code: 2,
      line: /^error: .*--workers: udp:\/\/ and quic:\/\/ listeners run in one process$/,
    },
  ];
  try {
    for (const c of cases) {
      const r = await run(Deno.execPath(), [
        "run",
        "-A",
        ...c.deno,
        c.svc ?? seaprox,
        ...c.args,
        "--workers",
        "2",
        "--log-level",
        "warn",
      ]);
      const errors = r.stderr.split("\n").filter((l) => l.startsWith("error:"));
      assertEquals(errors.length, 1, r.stderr);
      assertMatch(errors[0], c.line);
      assertEquals(r.code, c.code, r.stderr);
    }
  } finally {
    busy.close();
  }
});

Deno.test("workers: two tunnel-server workers hand requests to the one holding the client, byte-exact; kill -9 of the holder", async () => {
  const redis = await startRedis();
  const app = startApp();
  const id = "identifier-workers-0001";
  const port = freePort();
  const procs: ServiceProcess[] = [];
  const upload = await Deno.makeTempFile();
  try {
    const server = await startService("tunnel-server.ts", [
      "--listen",
      `127.0.0.1:${port}`,
      "--registry",
      redis.url,
      "--heartbeat",
      "300ms",
      "--access-log",
      "info",
      "--host",
      `app.test=${id}`,
      // Deno's WebSocket sends Host from the URL: this name lets it reach the app.
      "--host",
      `127.0.0.1=${id}`,
      "--workers",
      "2",
    ], { denoArgs: ["--unstable-net"], ready: /msg="workers ready"/, readyCount: 0 });
    procs.push(server);
    // Each worker is a cluster instance with its own loopback link port.
    for (const w of [1, 2]) {
      await server.waitFor(new RegExp(`worker=${w} msg="listening" name=cluster`));
    }
    procs.push(
      await startService("tunnel-client.ts", [
        "--server",
        `http://127.0.0.1:${port}`,
        "--local",
        `127.0.0.1:${app.port}`,
      ], { readyCount: 0, ready: /msg="connected"/, env: { TUNNEL_IDENTIFIER: id } }),
    );
    const holder = /worker=(\d) .*msg="client connected"/.exec(
      await server.waitFor(/worker=\d .*msg="client connected"/),
    )![1];

    // Requests land on both workers (the kernel spreads the connections); the one without
    // the client hands them over. Every body byte-exact.
    const accessBy = (w: string, since = 0) =>
      server.lines.slice(since).filter((l) => new RegExp(`worker=${w} .*msg="access"`).test(l))
        .length;
    for (let i = 0; i < 200 && (accessBy("1") === 0 || accessBy("2") === 0); i++) {
      const r = await curl(port, "app.test", `/bytes/65536?seed=${i}`, ["-o", "/dev/null"]);
      assertEquals(r.status, 200, r.stderr);
      const got = await run("curl", [
        "-sS",
        "-H",
        "Host: app.test",
        `http://127.0.0.1:${port}/bytes/65536?seed=${i}`,
      ]);
      assertEquals(sha256(got.raw), blockStreamSha256(65536, i));
    }
    assert(accessBy("1") > 0 && accessBy("2") > 0, "both workers answered");
    const other = holder === "1" ? "2" : "1";
    assert(accessBy(other) > 0, `worker ${other} (not holding the client) handed requests over`);

    const want = [0, 1, 2, 3].map((s) => blockStreamSha256(bulkBytes, s));
    const got = await Promise.all(
      want.map((_, s) =>
        run("curl", [
          "-sS",
          "--fail",
          "-H",
          "Host: app.test",
          `http://127.0.0.1:${port}/bytes/${bulkBytes}?seed=${s}`,
        ])
          .then((r) => sha256(r.raw))
      ),
    );
    assertEquals(got, want);
    const body = crypto.getRandomValues(new Uint8Array(65536));
    const big = new Uint8Array(3 * 1024 * 1024);
    for (let o = 0; o < big.length; o += body.length) big.set(body, o);
    await Deno.writeFile(upload, big);
    const ups = await Promise.all(
      [0, 1, 2, 3].map(() =>
        run("curl", [
          "-sS",
          "--fail",
          "-H",
          "Host: app.test",
          "--data-binary",
          `@${upload}`,
          `http://127.0.0.1:${port}/sha256`,
        ])
      ),
    );
    for (const up of ups) {
      assertEquals(JSON.parse(up.stdout), { sha256: sha256(big), bytes: big.length });
    }
    // WebSockets, on whichever worker each lands: every message echoed whole.
    for (let i = 0; i < 4; i++) {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`);
      ws.binaryType = "arraybuffer";
      const msg = big.subarray(0, 1024 * 1024 + i);
      const seen: string[] = [];
      const session = new Promise<string[]>((resolve, reject) => {
        ws.onopen = () => {
          ws.send(`hello ${i}`);
          ws.send(msg);
        };
        ws.onmessage = (e) => {
          seen.push(typeof e.data === "string" ? e.data : sha256(new Uint8Array(e.data)));
          if (seen.length === 2) ws.close();
        };
        ws.onclose = () => resolve(seen);
        ws.onerror = (e) => reject(new Error(`websocket error: ${(e as ErrorEvent).message}`));
      });
      const echoed = await within(session, () => `WebSocket ${i}'s echoes (seen ${seen.length})`);
      assertEquals(echoed, [`hello ${i}`, sha256(msg)]);
    }

    // kill -9 of the worker holding the client: it is restarted, the client reconnects (to
    // either worker), and requests through both answer again; never a wrong body.
    const holderPid = workerPids(server).get(Number(holder))!;
    const since = server.lines.length;
    Deno.kill(holderPid, "SIGKILL");
    await server.waitFor(new RegExp(`msg="worker restarted" worker=${holder}`));
    let failed = 0, okInARow = 0;
    for (let i = 0; i < 600 && okInARow < 20; i++) {
      const r = await curl(port, "app.test", `/hello?id=${i}`);
      if (r.status === 200) {
        assertEquals(r.body, `hello ${i}`);
        okInARow++;
      } else {
        failed++;
        okInARow = 0;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    assertEquals(okInARow, 20, `requests did not recover (${failed} failed)`);
    const restarted = server.lines.length;
    for (
      let i = 0;
      i < 200 && (accessBy("1", restarted) === 0 || accessBy("2", restarted) === 0);
      i++
    ) {
      const r = await curl(port, "app.test", `/hello?id=again-${i}`);
      assertEquals([r.status, r.body], [200, `hello again-${i}`]);
    }
    assert(
      accessBy("1", restarted) > 0 && accessBy("2", restarted) > 0,
      "both workers answer again",
    );
    assert(server.lines.slice(since).some((l) => /msg="client connected"/.test(l)));

    assertEquals(await server.stop("SIGTERM"), 0);
  } finally {
    for (const p of procs.reverse()) await p.stop("SIGKILL");
    await app.close();
    await redis.stop();
    await Deno.remove(upload);
  }
});

Deno.test("workers: two depot-server workers, a SOCKS client on either reaches the exit held by one, byte-exact; kill -9 of the holder", async () => {
  const redis = await startRedis();
  const origin = startOrigin();
  const socks = freePort();
  const control = freePort();
  const procs: ServiceProcess[] = [];
  const upload = await Deno.makeTempFile();
  const env = { DEPOT_TOKEN: "workers-depot-token" };
  try {
    const server = await startService("depot-server.ts", [
      "--socks",
      `127.0.0.1:${socks}`,
      "--control",
      `127.0.0.1:${control}`,
      "--tunnel",
      "127.0.0.1:0",
      "--registry",
      redis.url,
      "--heartbeat",
      "300ms",
      "--workers",
      "2",
    ], { denoArgs: ["--unstable-net"], ready: /msg="workers ready"/, readyCount: 0, env });
    procs.push(server);
    procs.push(
      await startService("depot-local.ts", ["--server", `127.0.0.1:${control}`], {
        readyCount: 0,
        ready: /msg="connected"/,
        env,
      }),
    );
    const holder = /worker=(\d) .*msg="exit connected"/.exec(
      await server.waitFor(/worker=\d .*msg="exit connected"/),
    )![1];
    const other = holder === "1" ? "2" : "1";
    const socksCurl = (path: string, extra: string[] = []) =>
      run("curl", [
        "-sS",
        "--fail",
        "--socks5-hostname",
        `127.0.0.1:${socks}`,
        ...extra,
        `http://127.0.0.1:${origin.port}${path}`,
      ]);
    const relayedBy = (w: string, since = 0) =>
      server.lines.slice(since).filter((l) =>
        new RegExp(`worker=${w} .*msg="connection closed"`).test(l)
      ).length;
    // The exit's lease reaches the other worker within a heartbeat: until then it answers 0x03.
    await server.waitFor(new RegExp(`worker=${other} .*msg="exits held elsewhere" exits=default@`));
    for (let i = 0; i < 200 && (relayedBy("1") === 0 || relayedBy("2") === 0); i++) {
      const r = await socksCurl(`/hello?id=${i}`);
      assertEquals(r.stdout, `hello ${i}`, r.stderr);
      await new Promise((r) => setTimeout(r, 5));
    }
    await new Promise((r) => setTimeout(r, 100));
    assert(relayedBy(other) > 0, `worker ${other} (without the exit) relayed through the cluster`);
    assert(server.lines.some((l) => new RegExp(`worker=${other} .*via=cluster`).test(l)));

    const want = [0, 1, 2, 3].map((s) => blockStreamSha256(bulkBytes, s));
    const got = await Promise.all(
      want.map((_, s) => socksCurl(`/bytes/${bulkBytes}?seed=${s}`).then((r) => sha256(r.raw))),
    );
    assertEquals(got, want);
    const big = new Uint8Array(3 * 1024 * 1024);
    const block = crypto.getRandomValues(new Uint8Array(65536));
    for (let o = 0; o < big.length; o += block.length) big.set(block, o);
    await Deno.writeFile(upload, big);
    const ups = await Promise.all(
      [0, 1, 2, 3].map(() => socksCurl("/sha256", ["--data-binary", `@${upload}`])),
    );
    for (const up of ups) {
      assertEquals(JSON.parse(up.stdout), { sha256: sha256(big), bytes: big.length });
    }

    // kill -9 of the worker holding the exit: restarted; the local reconnects (to either);
    // SOCKS clients of both workers get through again; never a wrong body.
    const since = server.lines.length;
    Deno.kill(workerPids(server).get(Number(holder))!, "SIGKILL");
    await server.waitFor(new RegExp(`msg="worker restarted" worker=${holder}`));
    // The local reconnects to one worker; the other learns where the exit is now.
    const back = /worker=(\d) .*msg="exit connected"/.exec(
      await waitAfter(server, since, /worker=\d .*msg="exit connected"/),
    )![1];
    const notBack = back === "1" ? "2" : "1";
    await waitAfter(
      server,
      since,
      new RegExp(`worker=${notBack} .*msg="exits held elsewhere" exits=default@`),
    );
    for (let i = 0; i < 200 && (relayedBy("1", since) === 0 || relayedBy("2", since) === 0); i++) {
      const r = await socksCurl(`/hello?id=again-${i}`);
      assertEquals(r.stdout, `hello again-${i}`, r.stderr);
    }
    assert(relayedBy("1", since) > 0 && relayedBy("2", since) > 0, "both workers relay again");
    assertEquals(await server.stop("SIGTERM"), 0);
  } finally {
    for (const p of procs.reverse()) await p.stop("SIGKILL");
    await origin.close();
    await redis.stop();
    await Deno.remove(upload);
  }
});

/** The first line of `sp` from line `since` on that matches `re` (waits up to 30 s). */
async function waitAfter(sp: ServiceProcess, since: number, re: RegExp): Promise<string> {
  for (let i = 0; i < 600; i++) {
    const hit = sp.lines.slice(since).find((l) => re.test(l));
    if (hit) return hit;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no line matching ${re}:\n${sp.lines.slice(since).join("\n")}`);
}

Deno.test("workers: a depot-server cluster instance stops on SIGTERM while Redis is down", async () => {
  const redis = await startRedis();
  const sp = await startService("depot-server.ts", depotMemberArgs(redis.url), {
    readyCount: 4,
    env: { DEPOT_TOKEN: "workers-depot-token", DEPOT_CLUSTER_TOKEN: "workers-cluster-token" },
  });
  try {
    await redis.down();
    await sp.waitFor(/msg="registry unreachable"/);
    // Shutdown does not wait on the unreachable registry (it hung there before: the leases
    // expire by themselves). A hang is caught by this generous bound, not timed.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const code = await Promise.race([
      sp.stop("SIGTERM"),
      new Promise<string>((r) => timer = setTimeout(() => r("still running after 30 s"), 30_000)),
    ]);
    clearTimeout(timer);
    assertEquals(code, 0);
  } finally {
    try {
      sp.child.kill("SIGKILL"); // stop() above may still be waiting on its SIGTERM
    } catch {
      // already exited
    }
    await sp.stop("SIGKILL");
    await redis.stop();
  }
});

Deno.test("depot cluster: two instances, an exit with a password on A, SOCKS clients of B get through only with it; a stranger's token gets no link", async () => {
  const redis = await startRedis();
  const origin = startOrigin();
  const procs: ServiceProcess[] = [];
  const env = { DEPOT_TOKEN: "cluster-depot-token", DEPOT_CLUSTER_TOKEN: "cluster-link-token-1" };
  const instance = async (clusterToken = env.DEPOT_CLUSTER_TOKEN) => {
    const p = await startService(
      "depot-server.ts",
      depotMemberArgs(redis.url, "--status", "127.0.0.1:0"),
      { readyCount: 5, env: { ...env, DEPOT_CLUSTER_TOKEN: clusterToken } },
    );
    procs.push(p);
    return p;
  };
  try {
    const a = await instance();
    const b = await instance();
    procs.push(
      await startService("depot-local.ts", [
        "--server",
        a.addrs.get("control")!,
        "--name",
        "office",
        "--socks-password",
        "office-password-1",
      ], { readyCount: 0, ready: /msg="connected"/, env }),
    );
    await b.waitFor(/msg="exits held elsewhere" exits=office@/);
    // B's /status names the exit and the instance holding it.
    const aName = /msg="registry" .*instance=(\w+)/.exec(await a.waitFor(/msg="registry"/))![1];
    const st = await fetchJson<{
      cluster: { exitsElsewhere: unknown; registryUp: boolean };
    }>(`http://${b.addrs.get("status")}/status`);
    assertEquals(st.cluster.exitsElsewhere, [{ name: "office", instance: aName }]);
    assertEquals(st.cluster.registryUp, true);
    // And B's status page: the exit by holder, both instances (A holding one exit).
    const page = await fetchJson<{ tables: { title: string; rows: unknown[][] }[] }>(
      `http://${b.addrs.get("status")}/status/ui/data`,
    );
    const rows = (t: string) => page.tables.find((x) => x.title === t)?.rows;
    assertEquals(rows("exits elsewhere"), [["office", aName]]);
    assertEquals(rows("instances")?.find((r) => r[0] === aName)?.[3], 1);
    assertEquals(rows("instances")?.filter((r) => r[4] === true).length, 1);
    const through = (p: ServiceProcess, user: string, path: string) =>
      run("curl", [
        "-sS",
        "--fail",
        "--proxy",
        `socks5h://${user}@${p.addrs.get("socks")}`,
        `http://127.0.0.1:${origin.port}${path}`,
      ]);
    // B checks the password against the lease's digest, then hands the request to A.
    const ok = await through(b, "office:office-password-1", `/bytes/${bulkBytes}?seed=7`);
    assertEquals(ok.code, 0, ok.stderr);
    assertEquals(sha256(ok.raw), blockStreamSha256(bulkBytes, 7));
    await b.waitFor(/exit=office .*msg="connection closed" .*via=cluster/);
    const wrong = await through(b, "office:not-the-password", "/hello?id=1");
    assert(wrong.code !== 0);
    await b.waitFor(/msg="SOCKS authentication failed" .*exit=office/);
    // An instance with another cluster token: the password digests are keyed with the token,
    // so it cannot check office's password (refused), and it gets no link to A (an exit
    // without a password: 0x03, logged on both sides).
    procs.push(
      await startService(
        "depot-local.ts",
        ["--server", a.addrs.get("control")!, "--name", "open"],
        {
          readyCount: 0,
          ready: /msg="connected"/,
          env,
        },
      ),
    );
    const c = await instance("another-cluster-token");
    await c.waitFor(/msg="exits held elsewhere" exits="office@\w+,open@/);
    const stranger = await through(c, "office:office-password-1", "/hello?id=2");
    assert(stranger.code !== 0);
    await c.waitFor(/msg="SOCKS authentication failed" .*exit=office/);
    const refused = await through(c, "open:any", "/hello?id=3");
    assert(refused.code !== 0);
    await c.waitFor(/msg="cluster link failed" .*peer refused the link: bad token/);
    await a.waitFor(/msg="cluster link refused" .*failure=bad-token/);
  } finally {
    for (const p of procs.reverse()) await p.stop("SIGKILL");
    await origin.close();
    await redis.stop();
  }
});

Deno.test("depot cluster TLS: a request handed over a mutual-TLS link is byte-exact; plaintext gets no link", async () => {
  const pki = await makePki();
  const redis = await startRedis();
  const origin = startOrigin();
  const procs: ServiceProcess[] = [];
  const env = { DEPOT_TOKEN: "cluster-depot-token", DEPOT_CLUSTER_TOKEN: "cluster-link-token-1" };
  const instance = async () => {
    const p = await startService(
      "depot-server.ts",
      depotMemberArgs(
        redis.url,
        "--cluster-tls-cert",
        pki.peerCert,
        "--cluster-tls-key",
        pki.peerKey,
        "--cluster-tls-ca",
        pki.ca,
      ),
      { readyCount: 4, env },
    );
    procs.push(p);
    return p;
  };
  try {
    const a = await instance();
    const b = await instance();
    procs.push(
      await startService("depot-local.ts", ["--server", a.addrs.get("control")!], {
        readyCount: 0,
        ready: /msg="connected"/,
        env,
      }),
    );
    await b.waitFor(/msg="exits held elsewhere" exits=default@/);
    const r = await run("curl", [
      "-sS",
      "--fail",
      "--socks5-hostname",
      b.addrs.get("socks")!,
      `http://127.0.0.1:${origin.port}/bytes/${bulkBytes}?seed=11`,
    ]);
    assertEquals(r.code, 0, r.stderr);
    assertEquals(sha256(r.raw), blockStreamSha256(bulkBytes, 11));
    await b.waitFor(/msg="connection closed" .*via=cluster/);
    // A's cluster port speaks TLS only: a plaintext hello with the right token gets no link.
    const plain = await Deno.connect({
      hostname: "127.0.0.1",
      port: portOf(a.addrs.get("cluster")!),
    });
    let answer = "eof";
    try {
      await writeAll(plain, encodeFrame({ token: env.DEPOT_CLUSTER_TOKEN, from: "test" }));
      const f = await readFrameJson(new BufferedReader(plain), 4096);
      if (f) answer = JSON.stringify(f.json);
    } catch (err) {
      answer = `error: ${(err as Error).name}`;
    } finally {
      closeQuietly(plain);
    }
    assert(!answer.includes('"ok":true'), `plaintext got a link: ${answer}`);
  } finally {
    for (const p of procs.reverse()) await p.stop("SIGKILL");
    await origin.close();
    await redis.stop();
  }
});

Deno.test("workers: a server-defined TCP tunnel port is shared by two tunnel-server workers, byte-exact through both", async () => {
  const redis = await startRedis();
  const hasher = startHasher();
  const id = "identifier-workers-tcp-01";
  const port = freePort();
  const tcp = freePort();
  const procs: ServiceProcess[] = [];
  try {
    const server = await startService("tunnel-server.ts", [
      "--listen",
      `127.0.0.1:${port}`,
      "--registry",
      redis.url,
      "--heartbeat",
      "300ms",
      "--tcp-ports",
      `${tcp}-${tcp}`,
      "--tcp",
      `${tcp}:${hasher.port}=env:ID`,
      "--workers",
      "2",
    ], {
      denoArgs: ["--unstable-net"],
      ready: /msg="workers ready"/,
      readyCount: 0,
      env: { ID: id },
    });
    procs.push(server);
    for (const w of [1, 2]) {
      await server.waitFor(new RegExp(`worker=${w} msg="listening" name=tcp-${tcp}`));
    }
    procs.push(
      await startService("tunnel-client.ts", [
        "--server",
        `http://127.0.0.1:${port}`,
        "--local",
        `127.0.0.1:${hasher.port}`,
      ], { readyCount: 0, ready: /msg="connected"/, env: { TUNNEL_IDENTIFIER: id } }),
    );
    const closedBy = (w: string) =>
      server.lines.filter((l) => new RegExp(`worker=${w} .*msg="connection closed"`).test(l))
        .length;
    const total = 1024 * 1024 + 5;
    for (let i = 0; i < 200 && (closedBy("1") === 0 || closedBy("2") === 0); i++) {
      assertEquals(await hashThrough(tcp, total, i), blockStreamSha256(total, i));
      await new Promise((r) => setTimeout(r, 5));
    }
    await new Promise((r) => setTimeout(r, 100));
    assert(closedBy("1") > 0 && closedBy("2") > 0, "both workers relayed TCP connections");
    assertEquals(await server.stop("SIGTERM"), 0);
  } finally {
    for (const p of procs.reverse()) await p.stop("SIGKILL");
    await hasher.close();
    await redis.stop();
  }
});

Deno.test("workers: a worker still starting when its supervisor is killed with -9 exits too", async () => {
  // A "Redis" that accepts and never answers: worker 1 stays in its start, connecting to it.
  const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const sp = await startService("depot-server.ts", [
    "--socks",
    `127.0.0.1:${freePort()}`,
    "--control",
    `127.0.0.1:${freePort()}`,
    "--tunnel",
    "127.0.0.1:0",
    "--registry",
    `redis://127.0.0.1:${silent.addr.port}`,
    "--workers",
    "2",
  ], {
    denoArgs: ["--unstable-net"],
    ready: /msg="starting workers"/,
    readyCount: 0,
    env: { DEPOT_TOKEN: "workers-depot-token" },
  });
  const conn = await within(silent.accept(), "worker 1 to connect to the silent Redis");
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    sp.child.kill("SIGKILL");
    // Its stdin ends, so it exits, which ends its connection here (it lived on before). A
    // hang is cut by a generous bound, not timed.
    const drained = (async () => {
      const buf = new Uint8Array(4096);
      while (await conn.read(buf) !== null) { /* its Redis handshake, unanswered */ }
      return "ended";
    })();
    const end = await Promise.race([
      drained.catch(() => "ended"), // a reset: gone too
      new Promise<string>((r) => timer = setTimeout(() => r("still connected after 30 s"), 30_000)),
    ]);
    assertEquals(end, "ended");
  } finally {
    clearTimeout(timer);
    // If it lived on: Redis gone, it gives up (3 attempts) and exits, freeing its stderr.
    closeQuietly(conn);
    silent.close();
    await sp.stop("SIGKILL");
  }
});
