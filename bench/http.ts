/**
 * `deno run -A bench/http.ts`: lib/http's forward proxy (`handleHttpProxy`, absolute-URI
 * GETs with keep-alive) and its CONNECT tunnel, side by side with direct HTTP and an
 * outside peer (nginx as a reverse proxy: the nearest HTTP-aware relay available here), in
 * one run:
 *
 * - bulk: curl downloads a 1 GiB file from nginx (`--bytes` to change) directly, through
 *   the forward proxy (`-x`), through CONNECT (`-p -x`) and through nginx `proxy_pass`;
 *   MB/s and ratio to direct, best of `--rounds` (default 3) interleaved rounds;
 * - small: hey sends `--requests` (default 20000) GETs of a 1 KiB file with `--concurrency`
 *   (default 32) keep-alive workers, directly, through the forward proxy (`hey -x`) and
 *   through nginx; req/s and ratio to direct.
 *
 * The proxy runs in this process; curl, hey and nginx are separate processes. Not a test:
 * figures are as measured on a shared machine.
 */

import { parseArgs } from "node:util";
import { dial, serve } from "../lib/net/mod.ts";
import { handleHttpProxy } from "../lib/http/mod.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    bytes: { type: "string", default: String(1 << 30) },
    rounds: { type: "string", default: "3" },
    requests: { type: "string", default: "20000" },
    concurrency: { type: "string", default: "32" },
  },
});
const bulkBytes = Number(flags.bytes);
const rounds = Number(flags.rounds);

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function output(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) throw new Error(`${cmd} failed: ${new TextDecoder().decode(out.stderr)}`);
  return new TextDecoder().decode(out.stdout);
}

// ------------------------------------------------------------------ nginx: origin + peer
const dir = await Deno.makeTempDir({ prefix: "warren-bench-http-" });
const originPort = freePort(), nginxProxyPort = freePort();
await Deno.chmod(dir, 0o755); // nginx workers run as an unprivileged user
await Deno.mkdir(`${dir}/www`, { mode: 0o755 });
await Deno.truncate(
  await Deno.create(`${dir}/www/big`).then((f) => (f.close(), `${dir}/www/big`)),
  bulkBytes,
);
await Deno.writeFile(`${dir}/www/small`, new Uint8Array(1024).fill(0x61));
await Deno.writeTextFile(
  `${dir}/nginx.conf`,
  `worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log;
daemon off;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  keepalive_requests 1000000;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fcgi; uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  upstream origin { server 127.0.0.1:${originPort}; keepalive 64; }
  server { listen 127.0.0.1:${originPort}; root ${dir}/www; }
  server {
    listen 127.0.0.1:${nginxProxyPort};
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_buffer_size 256k; # unbuffered relays read into this; the 4k default is slow
      proxy_buffers 4 256k;
      proxy_busy_buffers_size 512k;
    }
  }
}
`,
);
const nginx = new Deno.Command("nginx", {
  args: ["-c", `${dir}/nginx.conf`, "-p", dir],
  stdout: "null",
  stderr: "inherit",
}).spawn();

// ------------------------------------------------------------------ our proxy
const proxy = serve(
  Deno.listen({ hostname: "127.0.0.1", port: 0 }),
  (conn, ctx) =>
    handleHttpProxy(conn, {
      connect: (dest) => dial(dest.host, dest.port, { prefer: "ipv4" }),
      handshakeDone: ctx.handshakeDone,
      signal: ctx.signal,
    }),
  { maxConns: 4096 },
);
const px = `http://127.0.0.1:${proxy.addr.port}`;

try {
  for (let i = 0; i < 100; i++) {
    if (i === 99) throw new Error("nginx did not start (see its error above)");
    try {
      (await dial("127.0.0.1", nginxProxyPort)).close();
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const origin = `http://127.0.0.1:${originPort}`;
  const viaNginx = `http://127.0.0.1:${nginxProxyPort}`;

  // ---------------------------------------------------------------- bulk
  const bulkPaths: [string, string[]][] = [
    ["direct", [`${origin}/big`]],
    ["forward proxy (-x)", ["-x", px, `${origin}/big`]],
    ["CONNECT (-p -x)", ["-p", "-x", px, `${origin}/big`]],
    ["nginx proxy_pass (peer)", [`${viaNginx}/big`]],
  ];
  const best = new Map<string, number>();
  for (let r = 0; r < rounds; r++) {
    for (const [name, args] of bulkPaths) {
      const out = await output("curl", [
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{size_download} %{speed_download}",
        ...args,
      ]);
      const [code, size, bps] = out.split(" ").map(Number);
      if (code !== 200 || size !== bulkBytes) throw new Error(`curl ${name}: ${out}`);
      const speed = bps / 1e6;
      best.set(name, Math.max(best.get(name) ?? 0, speed));
    }
  }
  const direct = best.get("direct")!;
  console.log(`bulk: curl, ${bulkBytes / 2 ** 20} MiB from nginx, best of ${rounds}\n`);
  console.log("| path | MB/s | ratio to direct |\n| --- | ---: | ---: |");
  for (const [name] of bulkPaths) {
    const v = best.get(name)!;
    console.log(`| ${name} | ${v.toFixed(0)} | ${(v / direct).toFixed(2)} |`);
  }

  // ---------------------------------------------------------------- small
  const heyBase = ["-n", flags.requests!, "-c", flags.concurrency!];
  const smallPaths: [string, string[]][] = [
    ["direct", [...heyBase, `${origin}/small`]],
    ["forward proxy (hey -x)", [
      ...heyBase,
      "-x",
      px,
      `${origin}/small`,
    ]],
    ["nginx proxy_pass (peer)", [...heyBase, `${viaNginx}/small`]],
  ];
  const rps = new Map<string, number>();
  for (const [name, args] of smallPaths) {
    const text = await output("hey", args);
    const m = /Requests\/sec:\s+([\d.]+)/.exec(text);
    const codes = /\[200\]\s+(\d+) responses/.exec(text);
    if (!m || Number(codes?.[1] ?? 0) !== Number(flags.requests)) {
      throw new Error(`hey ${name}: unexpected output\n${text}`);
    }
    rps.set(name, Number(m[1]));
  }
  const directRps = rps.get("direct")!;
  console.log(
    `\nsmall: hey, ${flags.requests} GETs of 1 KiB, ${flags.concurrency} keep-alive workers\n`,
  );
  console.log("| path | req/s | ratio to direct |\n| --- | ---: | ---: |");
  for (const [name] of smallPaths) {
    const v = rps.get(name)!;
    console.log(`| ${name} | ${v.toFixed(0)} | ${(v / directRps).toFixed(2)} |`);
  }
} finally {
  await proxy.stop(1000);
  try {
    nginx.kill("SIGQUIT");
  } catch {
    // already gone
  }
  await nginx.status;
  await Deno.remove(dir, { recursive: true });
}
