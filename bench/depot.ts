/**
 * `deno run -A bench/depot.ts`: depot (depot-server + depot-local, the reverse SOCKS5 proxy)
 * side by side with direct TCP, a plain SOCKS5 proxy (microsocks) and OpenSSH's reverse
 * SOCKS (`ssh -R port` against a throwaway sshd), in one run:
 *
 * Reference rows: a plain lib/net relay process (one hop) and two chained (two hops, depot's
 * data path without SOCKS and control), to show what the relays themselves cost here.
 * - bulk: one connection downloads `--bytes` (default 512 MiB), then one uploads as much,
 *   `--runs` times (default 2, best kept); MB/s and ratio to direct;
 * - set-up: `--seq` (default 500) sequential connect + 8-byte request + 1 KiB answer (ms each)
 *   and `--requests` (default 2000) of them with `--concurrency` (default 32) workers (req/s);
 * - WAN set-up: the exit side (depot-local, or the `ssh -R` client) reaches the server side
 *   through a delay proxy adding `--rtt`/2 ms each way (default RTT 40 ms; netem is not
 *   available here), and `--wan-conns` (default 20) sequential SOCKS set-ups are timed, in
 *   RTTs: depot with spare tunnels (default), without (`--spare-tunnels 0`), `--mux`, ssh -R.
 *
 * The source is a Deno raw TCP server in its own process (this file, BENCH_ROLE=source):
 * read an 8-byte big-endian length n; if its top bit is clear send n bytes and FIN, if set
 * read n bytes from the client, then answer the 8-byte count and FIN. Every proxy runs in its
 * own process; the client is this process. Not a test: numbers are as measured on a shared
 * machine.
 */

import { closeQuietly, dial, type Duplex, relay, withPrefix, writeAll } from "../lib/net/mod.ts";
import { socks5Connect } from "../lib/socks5/mod.ts";

const chunkBytes = 4 << 20;
const uploadBit = 1n << 63n;

// ---------------------------------------------------------------- source role
if (Deno.env.get("BENCH_ROLE") === "source") {
  const l = Deno.listen({ hostname: "127.0.0.1", port: Number(Deno.env.get("BENCH_PORT")) });
  const zeros = new Uint8Array(chunkBytes);
  for await (const c of l) {
    (async () => {
      try {
        const head = new Uint8Array(8);
        let got = 0;
        while (got < 8) {
          const n = await c.read(head.subarray(got));
          if (n === null) return;
          got += n;
        }
        const word = new DataView(head.buffer).getBigUint64(0);
        if (word & uploadBit) {
          let left = Number(word & ~uploadBit);
          const buf = new Uint8Array(chunkBytes);
          let total = 0;
          while (left > 0) {
            const n = await c.read(buf);
            if (n === null) break;
            left -= n;
            total += n;
          }
          const answer = new Uint8Array(8);
          new DataView(answer.buffer).setBigUint64(0, BigInt(total));
          await writeAll(c, answer);
        } else {
          let left = Number(word);
          while (left > 0) {
            const n = Math.min(left, zeros.length);
            await writeAll(c, zeros.subarray(0, n));
            left -= n;
          }
        }
        await c.closeWrite();
        const sink = new Uint8Array(64);
        while ((await c.read(sink)) !== null) { /* wait for the client's FIN */ }
      } catch {
        // A client that vanished mid-answer: nothing to do.
      } finally {
        closeQuietly(c);
      }
    })();
  }
  await new Promise(() => {});
}

// ---------------------------------------------------------------- delay role
// A TCP forwarder adding BENCH_DELAY_MS to every chunk in both directions (order kept):
// emulated one-way latency between the exit side and the server side. The kernel completes
// the client's TCP handshake with us at once, so the handshake's round trip is emulated too:
// nothing the client sends reaches the far side before 1.5 RTT after it connected, as on a
// real link (SYN, SYN-ACK, then data).
if (Deno.env.get("BENCH_ROLE") === "delay") {
  const delayMs = Number(Deno.env.get("BENCH_DELAY_MS"));
  const target = Number(Deno.env.get("BENCH_TARGET"));
  const l = Deno.listen({ hostname: "127.0.0.1", port: Number(Deno.env.get("BENCH_PORT")) });
  const pipeDelayed = async (src: Deno.Conn, dst: Deno.Conn, notBefore = 0) => {
    const queue: { at: number; data: Uint8Array | null }[] = [];
    let wake: (() => void) | undefined;
    const writer = (async () => {
      while (true) {
        const item = queue[0];
        if (!item) {
          await new Promise<void>((r) => wake = r);
          continue;
        }
        const wait = item.at - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        queue.shift();
        if (item.data === null) return await dst.closeWrite();
        await writeAll(dst, item.data);
      }
    })();
    const buf = new Uint8Array(256 * 1024);
    while (true) {
      const n = await src.read(buf);
      const at = Math.max(performance.now() + delayMs, notBefore);
      queue.push({ at, data: n === null ? null : buf.slice(0, n) });
      wake?.();
      if (n === null) break;
    }
    await writer;
  };
  for await (const c of l) {
    (async () => {
      let up: Deno.Conn | undefined;
      try {
        up = await Deno.connect({ hostname: "127.0.0.1", port: target });
        c.setNoDelay(true);
        (up as Deno.TcpConn).setNoDelay(true);
        const handshakeDone = performance.now() + 3 * delayMs; // accept + 1.5 RTT
        await Promise.all([pipeDelayed(c, up, handshakeDone), pipeDelayed(up, c)]);
      } catch {
        // One side vanished: both are closed below.
      } finally {
        closeQuietly(c);
        closeQuietly(up);
      }
    })();
  }
  await new Promise(() => {});
}

// ---------------------------------------------------------------- relay role
// A plain lib/net relay from BENCH_PORT to BENCH_TARGET: the reference for what one relay
// hop costs on this machine (depot's data path is two of them, in two processes).
if (Deno.env.get("BENCH_ROLE") === "relay") {
  const target = Number(Deno.env.get("BENCH_TARGET"));
  const l = Deno.listen({ hostname: "127.0.0.1", port: Number(Deno.env.get("BENCH_PORT")) });
  for await (const c of l) {
    dial("127.0.0.1", target).then((up) => relay(c, up), () => closeQuietly(c));
  }
  await new Promise(() => {});
}

// ---------------------------------------------------------------- helpers
function flag(name: string, fallback: number): number {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Number(Deno.args[i + 1]) : fallback;
}
const bulkBytes = flag("bytes", 512 << 20);
const seqCount = flag("seq", 500);
const reqCount = flag("requests", 2000);
const concurrency = flag("concurrency", 32);
/** Bulk runs per direction; the best is reported (the machine is shared and noisy). */
const bulkRuns = flag("runs", 2);
const wanRttMs = flag("rtt", 40);
const wanConns = flag("wan-conns", 20);
/** Skip the loopback section (bulk and set-up) and measure only the WAN set-up. */
const onlyWan = Deno.args.includes("--only-wan");
const smallBytes = 1024;

/** A kernel-chosen free port (bound and released; fine for a benchmark). */
function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const p = l.addr.port;
  l.close();
  return p;
}

async function waitFor(what: string, ok: () => Promise<boolean>, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await ok().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`${what} not ready in ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const portOpen = (port: number) => async () => {
  closeQuietly(await dial("127.0.0.1", port, { timeoutMs: 1000 }));
  return true;
};

const procs: Deno.ChildProcess[] = [];
/** Temporary directories (sshd keys and config) removed at the end. */
const tempDirs: string[] = [];
function spawn(cmd: string, args: string[], env?: Record<string, string>): Deno.ChildProcess {
  const child = new Deno.Command(cmd, { args, env, stdout: "null", stderr: "null" }).spawn();
  procs.push(child);
  return child;
}
async function stopAll(): Promise<void> {
  for (const p of procs) {
    try {
      p.kill("SIGTERM");
    } catch {
      // already gone
    }
  }
  await Promise.all(procs.map((p) => p.status));
  for (const d of tempDirs) Deno.removeSync(d, { recursive: true });
}

async function readFull(c: Duplex, buf: Uint8Array): Promise<number> {
  let total = 0;
  while (true) {
    const r = await c.read(buf);
    if (r === null) return total;
    total += r;
  }
}

function header(n: number, upload = false): Uint8Array {
  const head = new Uint8Array(8);
  new DataView(head.buffer).setBigUint64(0, BigInt(n) | (upload ? uploadBit : 0n));
  return head;
}

interface Route {
  name: string;
  open(): Promise<Duplex>;
}

function socksRoute(name: string, port: number, dest: number): Route {
  return {
    name,
    open: async () => {
      const c = await dial("127.0.0.1", port);
      try {
        const { leftover } = await socks5Connect(c, { host: "127.0.0.1", port: dest });
        return withPrefix(c, leftover);
      } catch (err) {
        closeQuietly(c);
        throw err;
      }
    },
  };
}

async function download(route: Route): Promise<number> {
  const buf = new Uint8Array(chunkBytes);
  const t0 = performance.now();
  const c = await route.open();
  try {
    await writeAll(c, header(bulkBytes));
    const got = await readFull(c, buf);
    if (got !== bulkBytes) throw new Error(`${route.name}: got ${got} of ${bulkBytes} bytes`);
  } finally {
    closeQuietly(c);
  }
  return bulkBytes / 1e6 / ((performance.now() - t0) / 1000);
}

async function upload(route: Route): Promise<number> {
  const block = new Uint8Array(chunkBytes);
  const t0 = performance.now();
  const c = await route.open();
  try {
    await writeAll(c, header(bulkBytes, true));
    for (let left = bulkBytes; left > 0; left -= block.length) {
      await writeAll(c, block.subarray(0, Math.min(left, block.length)));
    }
    // Read the 8-byte answer before our FIN: some proxies (microsocks) do not keep half-close.
    const answer = new Uint8Array(8);
    let n = 0;
    while (n < 8) {
      const r = await c.read(answer.subarray(n));
      if (r === null) break;
      n += r;
    }
    const got = n === 8 ? Number(new DataView(answer.buffer).getBigUint64(0)) : -1;
    if (got !== bulkBytes) throw new Error(`${route.name}: target got ${got} of ${bulkBytes}`);
  } finally {
    closeQuietly(c);
  }
  return bulkBytes / 1e6 / ((performance.now() - t0) / 1000);
}

async function oneSmall(route: Route, buf: Uint8Array): Promise<void> {
  const c = await route.open();
  try {
    await writeAll(c, header(smallBytes));
    const got = await readFull(c, buf);
    if (got !== smallBytes) throw new Error(`${route.name}: short answer ${got}`);
  } finally {
    closeQuietly(c);
  }
}

/** Mean milliseconds per sequential connection (set-up + one small exchange). */
async function sequential(route: Route): Promise<number> {
  const buf = new Uint8Array(4096);
  const t0 = performance.now();
  for (let i = 0; i < seqCount; i++) await oneSmall(route, buf);
  return (performance.now() - t0) / seqCount;
}

async function concurrent(route: Route): Promise<number> {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      const buf = new Uint8Array(4096);
      while (next++ < reqCount) await oneSmall(route, buf);
    }),
  );
  return reqCount / ((performance.now() - t0) / 1000);
}

/** A delay proxy (this file, BENCH_ROLE=delay) in front of `target`; returns its port. */
async function startDelay(target: number, delayMs: number): Promise<number> {
  const port = freePort();
  spawn(Deno.execPath(), ["run", "-A", new URL(import.meta.url).pathname], {
    BENCH_ROLE: "delay",
    BENCH_PORT: String(port),
    BENCH_TARGET: String(target),
    BENCH_DELAY_MS: String(delayMs),
  });
  await waitFor("delay proxy", portOpen(port));
  return port;
}

/** Mean ms of `n` sequential SOCKS set-ups (TCP connect to success reply) via `port`. */
async function setupMs(port: number, dest: number, n: number, username?: string): Promise<number> {
  let total = 0;
  for (let i = 0; i < n + 1; i++) {
    const t0 = performance.now();
    const c = await dial("127.0.0.1", port);
    try {
      await socks5Connect(c, { host: "127.0.0.1", port: dest }, { username, password: "" });
    } finally {
      closeQuietly(c);
    }
    if (i > 0) total += performance.now() - t0; // the first one warms up
  }
  return total / n;
}

/** A throwaway sshd plus `ssh -N -R port` (OpenSSH's reverse dynamic SOCKS). */
async function startSshReverseSocks(socksPort: number, delayMs = 0): Promise<void> {
  const dir = Deno.makeTempDirSync({ prefix: "depot-bench-ssh-" });
  tempDirs.push(dir);
  const keygen = async (name: string) => {
    const out = await new Deno.Command("ssh-keygen", {
      args: ["-q", "-t", "ed25519", "-N", "", "-f", `${dir}/${name}`],
      stdout: "null",
      stderr: "piped",
    }).output();
    if (out.code !== 0) throw new Error(`ssh-keygen: ${new TextDecoder().decode(out.stderr)}`);
  };
  await keygen("host_key");
  await keygen("user_key");
  Deno.copyFileSync(`${dir}/user_key.pub`, `${dir}/authorized_keys`);
  const sshdPort = freePort();
  Deno.writeTextFileSync(
    `${dir}/sshd_config`,
    [
      `Port ${sshdPort}`,
      "ListenAddress 127.0.0.1",
      `HostKey ${dir}/host_key`,
      `AuthorizedKeysFile ${dir}/authorized_keys`,
      `PidFile ${dir}/sshd.pid`,
      "UsePAM no",
      "StrictModes no",
      "PermitRootLogin prohibit-password",
      "PasswordAuthentication no",
      "AllowTcpForwarding yes",
      "",
    ].join("\n"),
  );
  Deno.mkdirSync("/run/sshd", { recursive: true }); // sshd's privilege-separation directory
  spawn("/usr/sbin/sshd", ["-D", "-e", "-f", `${dir}/sshd_config`]);
  await waitFor("sshd", portOpen(sshdPort));
  const sshPort = delayMs > 0 ? await startDelay(sshdPort, delayMs) : sshdPort;
  spawn("ssh", [
    "-N",
    "-i",
    `${dir}/user_key`,
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "BatchMode=yes",
    "-o",
    "ExitOnForwardFailure=yes",
    "-p",
    String(sshPort),
    "-R",
    `127.0.0.1:${socksPort}`,
    `${Deno.env.get("USER") ?? "root"}@127.0.0.1`,
  ]);
  await waitFor("ssh -R", portOpen(socksPort));
}

// ---------------------------------------------------------------- main
const self = new URL(import.meta.url).pathname;
const service = (name: string) => new URL(`../services/${name}`, import.meta.url).pathname;
const srcPort = freePort();
const ports = {
  control: freePort(),
  socks: freePort(),
  tunnel: freePort(),
  status: freePort(),
  muxControl: freePort(),
  muxSocks: freePort(),
  muxTunnel: freePort(),
  muxStatus: freePort(),
  microsocks: freePort(),
  ssh: freePort(),
  relay1: freePort(),
  relay2a: freePort(),
  relay2b: freePort(),
};

interface Row {
  name: string;
  down: number;
  up: number;
  seqMs: number;
  rps: number;
  err?: string;
}
const rows: Row[] = [];
const wanRows: { name: string; ms: number; err?: string }[] = [];
const env = { DEPOT_TOKEN: crypto.randomUUID() };
try {
  spawn(Deno.execPath(), ["run", "-A", self], {
    BENCH_ROLE: "source",
    BENCH_PORT: String(srcPort),
  });
  spawn(Deno.execPath(), [
    "run",
    "-A",
    service("depot-server.ts"),
    "--log-level",
    "warn",
    "--control",
    `127.0.0.1:${ports.control}`,
    "--socks",
    `127.0.0.1:${ports.socks}`,
    "--tunnel",
    `127.0.0.1:${ports.tunnel}`,
    "--status",
    `127.0.0.1:${ports.status}`,
  ], env);
  spawn(Deno.execPath(), [
    "run",
    "-A",
    service("depot-local.ts"),
    "--log-level",
    "warn",
    "--server",
    `127.0.0.1:${ports.control}`,
  ], env);
  // A second depot pair whose local carries tunnels over one mux session (--mux).
  spawn(Deno.execPath(), [
    "run",
    "-A",
    service("depot-server.ts"),
    "--log-level",
    "warn",
    "--control",
    `127.0.0.1:${ports.muxControl}`,
    "--socks",
    `127.0.0.1:${ports.muxSocks}`,
    "--tunnel",
    `127.0.0.1:${ports.muxTunnel}`,
    "--status",
    `127.0.0.1:${ports.muxStatus}`,
  ], env);
  spawn(Deno.execPath(), [
    "run",
    "-A",
    service("depot-local.ts"),
    "--log-level",
    "warn",
    "--mux",
    "--server",
    `127.0.0.1:${ports.muxControl}`,
  ], env);
  spawn("microsocks", ["-i", "127.0.0.1", "-p", String(ports.microsocks)]);
  // Reference relays: one hop, and two hops in two processes (depot's data path, minus
  // SOCKS and the control protocol).
  for (
    const [port, target] of [
      [ports.relay1, srcPort],
      [ports.relay2b, srcPort],
      [ports.relay2a, ports.relay2b],
    ]
  ) {
    spawn(Deno.execPath(), ["run", "-A", self], {
      BENCH_ROLE: "relay",
      BENCH_PORT: String(port),
      BENCH_TARGET: String(target),
    });
    await waitFor("reference relay", portOpen(port));
  }
  await waitFor("source", portOpen(srcPort));
  await waitFor("microsocks", portOpen(ports.microsocks));
  for (const statusPort of [ports.status, ports.muxStatus]) {
    await waitFor("depot", async () => {
      const res = await fetch(`http://127.0.0.1:${statusPort}/status`);
      const st = await res.json() as { exits: unknown[] };
      return st.exits.length === 1;
    });
  }
  let sshError: string | undefined;
  try {
    await startSshReverseSocks(ports.ssh);
  } catch (err) {
    sshError = `ssh -R unavailable: ${err instanceof Error ? err.message : err}`;
  }

  const routes: Route[] = [
    {
      name: "direct TCP",
      open: () => dial("127.0.0.1", srcPort),
    },
    { name: "lib/net relay, 1 hop (reference)", open: () => dial("127.0.0.1", ports.relay1) },
    { name: "lib/net relay, 2 hops (reference)", open: () => dial("127.0.0.1", ports.relay2a) },
    socksRoute("depot (server+local)", ports.socks, srcPort),
    socksRoute("depot --mux", ports.muxSocks, srcPort),
    socksRoute("microsocks (SOCKS5)", ports.microsocks, srcPort),
    socksRoute("OpenSSH ssh -R (SOCKS)", ports.ssh, srcPort),
  ];
  for (const r of onlyWan ? [] : routes) {
    if (r.name.startsWith("OpenSSH") && sshError) {
      rows.push({ name: r.name, down: NaN, up: NaN, seqMs: NaN, rps: NaN, err: sshError });
      continue;
    }
    try {
      await oneSmall(r, new Uint8Array(4096)); // warm up (JIT, pools)
      let down = 0, up = 0;
      for (let i = 0; i < bulkRuns; i++) {
        down = Math.max(down, await download(r));
        up = Math.max(up, await upload(r));
      }
      const seqMs = await sequential(r);
      const rps = await concurrent(r);
      rows.push({ name: r.name, down, up, seqMs, rps });
      console.error(`  measured ${r.name}`);
    } catch (err) {
      rows.push({ name: r.name, down: NaN, up: NaN, seqMs: NaN, rps: NaN, err: String(err) });
      console.error(`  ${r.name} failed: ${err}`);
    }
  }

  // ---- WAN set-up: the exit side behind an emulated RTT ----
  if (wanConns > 0 && wanRttMs > 0) {
    const oneWay = wanRttMs / 2;
    const w = { control: freePort(), socks: freePort(), tunnel: freePort(), status: freePort() };
    spawn(Deno.execPath(), [
      "run",
      "-A",
      service("depot-server.ts"),
      "--log-level",
      "warn",
      "--control",
      `127.0.0.1:${w.control}`,
      "--socks",
      `127.0.0.1:${w.socks}`,
      "--tunnel",
      `127.0.0.1:${w.tunnel}`,
      "--status",
      `127.0.0.1:${w.status}`,
    ], env);
    await waitFor("WAN depot-server", portOpen(w.control));
    const farControl = await startDelay(w.control, oneWay);
    const farTunnel = await startDelay(w.tunnel, oneWay);
    const exits: [string, string[]][] = [
      ["spares", []],
      ["nospares", ["--spare-tunnels", "0"]],
      ["mux", ["--mux"]],
    ];
    for (const [name, extra] of exits) {
      spawn(Deno.execPath(), [
        "run",
        "-A",
        service("depot-local.ts"),
        "--log-level",
        "warn",
        "--name",
        name,
        "--server",
        `127.0.0.1:${farControl}`,
        "--tunnel",
        `127.0.0.1:${farTunnel}`,
        ...extra,
      ], env);
    }
    await waitFor("WAN depot-locals", async () => {
      const st = await (await fetch(`http://127.0.0.1:${w.status}/status`)).json() as {
        exits: unknown[];
      };
      return st.exits.length === exits.length;
    });
    await new Promise((r) => setTimeout(r, 3 * wanRttMs)); // spares dialled, mux open
    const wanSsh = freePort();
    let wanSshError: string | undefined;
    try {
      await startSshReverseSocks(wanSsh, oneWay);
    } catch (err) {
      wanSshError = String(err);
    }
    const wanRoutes: [string, () => Promise<number>][] = [
      ["depot (2 spare tunnels, default)", () => setupMs(w.socks, srcPort, wanConns, "spares")],
      ["depot --spare-tunnels 0", () => setupMs(w.socks, srcPort, wanConns, "nospares")],
      ["depot --mux", () => setupMs(w.socks, srcPort, wanConns, "mux")],
      ["OpenSSH ssh -R (SOCKS)", () => setupMs(wanSsh, srcPort, wanConns)],
    ];
    for (const [name, measure] of wanRoutes) {
      if (name.startsWith("OpenSSH") && wanSshError) {
        wanRows.push({ name, ms: NaN, err: wanSshError });
        continue;
      }
      try {
        wanRows.push({ name, ms: await measure() });
      } catch (err) {
        wanRows.push({ name, ms: NaN, err: String(err) });
      }
    }
  }
} finally {
  await stopAll();
}

const direct = rows[0] ?? { name: "direct TCP", down: NaN, up: NaN, seqMs: NaN, rps: NaN };
const fmt = (v: number, d = 0) => Number.isFinite(v) ? v.toFixed(d) : "-";
const ratio = (v: number, base: number) =>
  Number.isFinite(v) && Number.isFinite(base) && base > 0 ? (v / base).toFixed(2) : "-";
if (rows.length > 0) {
  console.log(
    `depot benchmark: bulk ${bulkBytes >> 20} MiB per direction, one connection, best of ` +
      `${bulkRuns}; ` +
      `${seqCount} sequential and ${reqCount} concurrent (x${concurrency}) small requests`,
  );
  console.log("");
  console.log(
    "| path | down MB/s | ratio | up MB/s | ratio | set-up ms (seq) | req/s (x" +
      `${concurrency}) | ratio |`,
  );
  console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const r of rows) {
    console.log(
      `| ${r.name} | ${fmt(r.down)} | ${ratio(r.down, direct.down)} | ${fmt(r.up)} | ` +
        `${ratio(r.up, direct.up)} | ${fmt(r.seqMs, 3)} | ${fmt(r.rps)} | ` +
        `${ratio(r.rps, direct.rps)} |`,
    );
  }
  for (const r of rows) if (r.err) console.log(`\n${r.name}: ${r.err}`);
  const depot = rows.find((r) => r.name.startsWith("depot (server"));
  if (depot && Number.isFinite(depot.down)) {
    const worst = Math.min(depot.down / direct.down, depot.up / direct.up);
    console.log(`\ndepot bulk vs direct (worse direction): ${worst.toFixed(2)} (target >= 0.60)`);
  }
}

if (wanRows.length > 0) {
  console.log(
    `\nWAN set-up: exit side behind an emulated RTT of ${wanRttMs} ms (delay proxy), ` +
      `${wanConns} sequential SOCKS CONNECTs, TCP connect to success reply\n`,
  );
  console.log("| path | set-up ms | RTTs |");
  console.log("| --- | ---: | ---: |");
  for (const r of wanRows) {
    console.log(`| ${r.name} | ${fmt(r.ms, 1)} | ${fmt(r.ms / wanRttMs, 2)} |`);
  }
  for (const r of wanRows) if (r.err) console.log(`\n${r.name}: ${r.err}`);
}
