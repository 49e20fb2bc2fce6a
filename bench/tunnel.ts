/**
 * `deno run -A bench/tunnel.ts`: the HTTP vhost tunnel (services/tunnel-server.ts fast
 * path + services/tunnel-client.ts, separate processes) side by side with the local app
 * directly, a socat TCP relay (outside peer: a raw byte relay hop), one and two plain lib/net
 * relay processes in series (bench/_relay.ts: the floor for any design with a server and a
 * client process — the same two user-space hops with no protocol), the same server with a
 * client on `--transport raw` (no WebSocket framing), and the embeddable
 * Hono front (Deno.serve + createTunnelApp), in one run:
 *
 * - small responses: `wrk -t2 -c50 -d5s --latency` on GET /hello: rps, p50, p99, ratio;
 * - bulk HTTP: curl downloads 1 GiB (`--bytes`) and uploads it chunked from a pipe: MB/s, ratio;
 * - TCP tunnel: one connection reads 1 GiB from a raw TCP source directly, through the relays
 *   and through a TCP tunnel port of each client (WebSocket and raw): MB/s, ratio.
 *
 * "floor" is the ratio to the two relays in series: how close the tunnel gets to what two
 * Deno processes relaying bytes can do on the same machine.
 *
 * The app (Deno.serve) and the TCP source run in this process's child (BENCH_ROLE=app).
 * Not a test: numbers are as measured on a shared machine.
 */

import { closeQuietly, writeAll } from "../lib/net/mod.ts";

const chunk = new Uint8Array(1 << 20);

// ---------------------------------------------------------------- app role
if (Deno.env.get("BENCH_ROLE") === "app") {
  const http = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const url = new URL(req.url);
    const m = /^\/bytes\/(\d+)$/.exec(url.pathname);
    if (m) {
      let left = Number(m[1]);
      const body = new ReadableStream<Uint8Array>({
        type: "bytes",
        pull(c) {
          if (left <= 0) return c.close();
          const n = Math.min(left, chunk.length);
          c.enqueue(chunk.slice(0, n));
          left -= n;
        },
      });
      return new Response(body, { headers: { "content-length": m[1] } });
    }
    if (url.pathname === "/discard") {
      let n = 0;
      for await (const c of req.body ?? new ReadableStream()) n += c.length;
      return new Response(String(n));
    }
    return new Response("hello world\n");
  });
  const tcp = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  console.log(JSON.stringify({ http: http.addr.port, tcp: tcp.addr.port }));
  const big = new Uint8Array(4 << 20);
  for await (const c of tcp) {
    (async () => {
      try {
        let left = Number(Deno.env.get("BENCH_BYTES"));
        while (left > 0) {
          const n = Math.min(left, big.length);
          await writeAll(c, big.subarray(0, n));
          left -= n;
        }
        await c.closeWrite();
      } catch {
        // Reader went away: next connection.
      } finally {
        closeQuietly(c);
      }
    })();
  }
}

// ---------------------------------------------------------------- helpers
function flag(name: string, fallback: number): number {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Number(Deno.args[i + 1]) : fallback;
}
const totalBytes = flag("bytes", 1 << 30);
const wrkSeconds = flag("seconds", 5);
const here = new URL(".", import.meta.url).pathname;

interface Proc {
  child: Deno.ChildProcess;
  lines: string[];
  waitFor(re: RegExp): Promise<string>;
}

function spawn(args: string[], env: Record<string, string> = {}): Proc {
  const child = new Deno.Command(args[0], {
    args: args.slice(1),
    env,
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const lines: string[] = [];
  const waiters: { re: RegExp; res: (l: string) => void }[] = [];
  const pump = async (s: ReadableStream<Uint8Array>) => {
    let buf = "";
    for await (const t of s.pipeThrough(new TextDecoderStream())) {
      buf += t;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const l = buf.slice(0, i);
        buf = buf.slice(i + 1);
        lines.push(l);
        for (const w of [...waiters]) {
          if (w.re.test(l)) {
            waiters.splice(waiters.indexOf(w), 1);
            w.res(l);
          }
        }
      }
    }
  };
  void pump(child.stdout);
  void pump(child.stderr);
  return {
    child,
    lines,
    waitFor: (re) => {
      const hit = lines.find((l) => re.test(l));
      if (hit) return Promise.resolve(hit);
      return new Promise((res, rej) => {
        waiters.push({ re, res });
        setTimeout(() => rej(new Error(`timeout waiting for ${re}:\n${lines.join("\n")}`)), 20_000);
      });
    },
  };
}

async function stop(p: Proc): Promise<void> {
  try {
    p.child.kill("SIGTERM");
  } catch {
    // Already gone.
  }
  await p.child.status;
}

function portFree(port: number): boolean {
  try {
    Deno.listen({ hostname: "127.0.0.1", port }).close();
    return true;
  } catch {
    return false;
  }
}

/** A bench/_relay.ts process in front of `target`; resolves with it and its port. */
async function startRelay(target: number): Promise<{ proc: Proc; port: number }> {
  const proc = spawn([Deno.execPath(), "run", "-A", `${here}_relay.ts`], {
    BENCH_TARGET: `127.0.0.1:${target}`,
  });
  const { port } = JSON.parse(await proc.waitFor(/^\{"port"/)) as { port: number };
  return { proc, port };
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const p = l.addr.port;
  l.close();
  return p;
}

async function wrk(url: string, host?: string) {
  const args = ["-t2", "-c50", `-d${wrkSeconds}s`, "--latency", url];
  if (host) args.unshift("-H", `Host: ${host}`);
  const out = await new Deno.Command("wrk", { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout);
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(text)?.[1] ?? 0);
  const ms = (label: string) => {
    const m = new RegExp(`\\s${label}\\s+([\\d.]+)(us|ms|s)`).exec(text);
    if (!m) return NaN;
    const v = Number(m[1]);
    return m[2] === "us" ? v / 1000 : m[2] === "s" ? v * 1000 : v;
  };
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(text)?.[1] ?? 0);
  return { rps, p50: ms("50%"), p99: ms("99%"), non2xx };
}

async function curlSpeed(args: string[]): Promise<number> {
  const out = await new Deno.Command("curl", {
    args: ["-sS", "-o", "/dev/null", "-w", "%{speed_download} %{speed_upload}", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const [down, up] = new TextDecoder().decode(out.stdout).split(" ").map(Number);
  return Math.max(down, up) / 1e6;
}

async function download(url: string, host?: string): Promise<number> {
  return await curlSpeed([...(host ? ["-H", `Host: ${host}`] : []), url]);
}

async function upload(url: string, host?: string): Promise<number> {
  // curl streams the body (chunked) from a pipe fed by `head -c N /dev/zero`.
  const out = await new Deno.Command("sh", {
    args: [
      "-c",
      `head -c ${totalBytes} /dev/zero | curl -sS -o /dev/null -w '%{speed_upload}' ` +
      `${host ? `-H 'Host: ${host}'` : ""} -H 'Content-Type: application/octet-stream' ` +
      `-H 'Expect:' -X POST -T - ${url}`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return Number(new TextDecoder().decode(out.stdout)) / 1e6;
}

async function tcpRead(port: number): Promise<number> {
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  const buf = new Uint8Array(4 << 20);
  let n = 0;
  const t0 = performance.now();
  try {
    while (true) {
      const r = await c.read(buf);
      if (r === null) break;
      n += r;
    }
  } finally {
    closeQuietly(c);
  }
  const s = (performance.now() - t0) / 1000;
  if (n !== totalBytes) console.error(`tcp read ${n} of ${totalBytes} bytes`);
  return n / s / 1e6;
}

// ---------------------------------------------------------------- run
const app = spawn([Deno.execPath(), "run", "-A", import.meta.filename!], {
  BENCH_ROLE: "app",
  BENCH_BYTES: String(totalBytes),
});
const ports = JSON.parse(await app.waitFor(/^\{"http"/)) as { http: number; tcp: number };
const identifier = "bench-identifier-" + crypto.randomUUID();
// Two consecutive free ports for the two clients' TCP tunnels.
let tcpPublic = freePort();
while (tcpPublic >= 65535 || !portFree(tcpPublic + 1)) tcpPublic = freePort();
const server = spawn([
  Deno.execPath(),
  "run",
  "-A",
  `${here}../services/tunnel-server.ts`,
  "--listen",
  "127.0.0.1:0",
  "--host",
  "app.test=env:BENCH_ID",
  "--host",
  "raw.test=env:BENCH_RAW_ID",
  "--tcp-ports",
  `${tcpPublic}-${tcpPublic + 1}`,
  "--log-level",
  "info",
], { BENCH_ID: identifier, BENCH_RAW_ID: identifier + "-raw" });
const srvLine = await server.waitFor(/msg="listening" name=http/);
const srvPort = Number(/addr=\S+:(\d+)/.exec(srvLine)![1]);
const client = spawn([
  Deno.execPath(),
  "run",
  "-A",
  `${here}../services/tunnel-client.ts`,
  "--server",
  `http://127.0.0.1:${srvPort}`,
  "--local",
  `127.0.0.1:${ports.http}`,
  "--tcp",
  `${tcpPublic}=127.0.0.1:${ports.tcp}`,
  "--log-level",
  "info",
], { TUNNEL_IDENTIFIER: identifier });
await client.waitFor(/msg="connected"/);
const socatPort = freePort();
const socat = spawn([
  "socat",
  `TCP-LISTEN:${socatPort},bind=127.0.0.1,fork,reuseaddr`,
  `TCP:127.0.0.1:${ports.http}`,
]);
const rawClient = spawn([
  Deno.execPath(),
  "run",
  "-A",
  `${here}../services/tunnel-client.ts`,
  "--server",
  `http://127.0.0.1:${srvPort}`,
  "--local",
  `127.0.0.1:${ports.http}`,
  "--transport",
  "raw",
  "--tcp",
  `${tcpPublic + 1}=127.0.0.1:${ports.tcp}`,
  "--log-level",
  "info",
], { TUNNEL_IDENTIFIER: identifier + "-raw" });
await rawClient.waitFor(/msg="connected"/);
const honoPort = freePort();
const hono = spawn([Deno.execPath(), "run", "-A", `${here}_tunnel_hono.ts`], {
  BENCH_PORT: String(honoPort),
  BENCH_ID: identifier + "-hono",
});
await hono.waitFor(/listening/);
const honoClient = spawn([
  Deno.execPath(),
  "run",
  "-A",
  `${here}../services/tunnel-client.ts`,
  "--server",
  `http://127.0.0.1:${honoPort}`,
  "--local",
  `127.0.0.1:${ports.http}`,
  "--log-level",
  "info",
], { TUNNEL_IDENTIFIER: identifier + "-hono" });
await honoClient.waitFor(/msg="connected"/);
const httpRelay1 = await startRelay(ports.http);
const httpRelay2 = await startRelay(httpRelay1.port);
const tcpRelay1 = await startRelay(ports.tcp);
const tcpRelay2 = await startRelay(tcpRelay1.port);
const relays = [httpRelay1, httpRelay2, tcpRelay1, tcpRelay2].map((r) => r.proc);
await new Promise((r) => setTimeout(r, 300));

const floorName = "Deno relay x2 (floor)";
const paths: { name: string; url: string; host?: string }[] = [
  { name: "direct", url: `http://127.0.0.1:${ports.http}` },
  { name: "socat relay (peer)", url: `http://127.0.0.1:${socatPort}` },
  { name: "Deno relay x1", url: `http://127.0.0.1:${httpRelay1.port}` },
  { name: floorName, url: `http://127.0.0.1:${httpRelay2.port}` },
  { name: "tunnel (fast path)", url: `http://127.0.0.1:${srvPort}`, host: "app.test" },
  { name: "tunnel (fast, raw)", url: `http://127.0.0.1:${srvPort}`, host: "raw.test" },
  { name: "tunnel (Hono front)", url: `http://127.0.0.1:${honoPort}` },
];

const pad = (s: string, n: number) => s.padEnd(n);
const num = (x: number, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : "-").padStart(9);
try {
  console.log(`small responses: wrk -t2 -c50 -d${wrkSeconds}s GET /hello`);
  console.log(`${pad("path", 22)}      rps   p50 ms   p99 ms    ratio    floor  non-2xx`);
  let base = 0, floor = 0;
  for (const p of paths) {
    const r = await wrk(`${p.url}/hello`, p.host);
    if (p.name === "direct") base = r.rps;
    if (p.name === floorName) floor = r.rps;
    console.log(
      `${pad(p.name, 22)}${num(r.rps)}${num(r.p50, 2)}${num(r.p99, 2)}${num(r.rps / base, 2)}${
        num(floor ? r.rps / floor : NaN, 2)
      }${String(r.non2xx).padStart(9)}`,
    );
  }
  console.log(`\nbulk HTTP: ${totalBytes / (1 << 20)} MiB with curl (MB/s)`);
  console.log(
    `${pad("path", 22)} download    ratio    floor   upload    ratio    floor`,
  );
  let bd = 0, bu = 0, fd = 0, fu = 0;
  for (const p of paths) {
    const d = await download(`${p.url}/bytes/${totalBytes}`, p.host);
    const u = await upload(`${p.url}/discard`, p.host);
    if (p.name === "direct") (bd = d, bu = u);
    if (p.name === floorName) (fd = d, fu = u);
    console.log(
      `${pad(p.name, 22)}${num(d)}${num(d / bd, 2)}${num(fd ? d / fd : NaN, 2)}${num(u)}${
        num(u / bu, 2)
      }${num(fu ? u / fu : NaN, 2)}`,
    );
  }
  const rss = (p: Proc) => {
    try {
      const st = Deno.readTextFileSync(`/proc/${p.child.pid}/status`);
      return Number(/VmHWM:\s+(\d+)/.exec(st)?.[1] ?? 0) / 1024;
    } catch {
      return NaN;
    }
  };
  console.log(
    `peak RSS after bulk: tunnel-server ${rss(server).toFixed(0)} MiB, ` +
      `tunnel-client ${rss(client).toFixed(0)} MiB (constant memory: far below the bytes moved)`,
  );
  console.log(`\nTCP: one connection reads ${totalBytes / (1 << 20)} MiB (MB/s)`);
  console.log(`${pad("path", 22)}     MB/s    ratio    floor`);
  const direct = await tcpRead(ports.tcp);
  const rows: [string, number][] = [
    ["direct", direct],
    ["Deno relay x1", await tcpRead(tcpRelay1.port)],
    [floorName, await tcpRead(tcpRelay2.port)],
    ["tunnel (tcp port)", await tcpRead(tcpPublic)],
    ["tunnel (tcp, raw)", await tcpRead(tcpPublic + 1)],
  ];
  const tcpFloor = rows[2][1];
  for (const [name, v] of rows) {
    console.log(`${pad(name, 22)}${num(v)}${num(v / direct, 2)}${num(v / tcpFloor, 2)}`);
  }
} finally {
  for (const p of [...relays, honoClient, hono, socat, rawClient, client, server, app]) {
    await stop(p);
  }
}
Deno.exit(0);
