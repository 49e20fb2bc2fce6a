/**
 * `deno run -A bench/depot.ts`: depot (depot-server + depot-local, the reverse SOCKS5 proxy)
 * side by side with direct TCP, a plain SOCKS5 proxy (microsocks) and OpenSSH's reverse
 * SOCKS (`ssh -R port` against a throwaway sshd), in one run:
 *
 * - bulk: one connection downloads `--bytes` (default 512 MiB), then one uploads as much,
 *   `--runs` times (default 2, best kept); MB/s and ratio to direct;
 * - set-up: `--seq` (default 500) sequential connect + 8-byte request + 1 KiB answer (ms each)
 *   and `--requests` (default 2000) of them with `--concurrency` (default 32) workers (req/s).
 *
 * The source is a Deno raw TCP server in its own process (this file, BENCH_ROLE=source):
 * read an 8-byte big-endian length n; if its top bit is clear send n bytes and FIN, if set
 * read n bytes from the client, then answer the 8-byte count and FIN. Every proxy runs in its
 * own process; the client is this process. Not a test: numbers are as measured on a shared
 * machine.
 */

import { closeQuietly, dial, type Duplex, withPrefix, writeAll } from "../lib/net/mod.ts";
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

/** A throwaway sshd plus `ssh -N -R port` (OpenSSH's reverse dynamic SOCKS). */
async function startSshReverseSocks(socksPort: number): Promise<void> {
  const dir = Deno.makeTempDirSync({ prefix: "depot-bench-ssh-" });
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
    String(sshdPort),
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
try {
  spawn(Deno.execPath(), ["run", "-A", self], {
    BENCH_ROLE: "source",
    BENCH_PORT: String(srcPort),
  });
  const env = { DEPOT_TOKEN: crypto.randomUUID() };
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
    socksRoute("depot (server+local)", ports.socks, srcPort),
    socksRoute("depot --mux", ports.muxSocks, srcPort),
    socksRoute("microsocks (SOCKS5)", ports.microsocks, srcPort),
    socksRoute("OpenSSH ssh -R (SOCKS)", ports.ssh, srcPort),
  ];
  for (const r of routes) {
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
} finally {
  await stopAll();
}

const direct = rows[0];
const fmt = (v: number, d = 0) => Number.isFinite(v) ? v.toFixed(d) : "-";
const ratio = (v: number, base: number) =>
  Number.isFinite(v) && Number.isFinite(base) && base > 0 ? (v / base).toFixed(2) : "-";
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
const depot = rows[1];
if (depot && Number.isFinite(depot.down)) {
  const worst = Math.min(depot.down / direct.down, depot.up / direct.up);
  console.log(`\ndepot bulk vs direct (worse direction): ${worst.toFixed(2)} (target >= 0.60)`);
}
