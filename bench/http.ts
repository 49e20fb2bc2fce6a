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

import { dial, serve } from "../lib/net/mod.ts";
import { handleHttpProxy } from "../lib/http/mod.ts";
import {
  benchFlags,
  curl,
  fixed,
  formatTable,
  freePort,
  hey,
  MiB,
  ratio,
  spawn,
  waitPort,
} from "./_util.ts";

const flags = benchFlags({
  numbers: { bytes: 1 << 30, rounds: 3, requests: 20000, concurrency: 32 },
});
const bulkBytes = flags.bytes;
const rounds = flags.rounds;
/** Size of the file of the small-request column. */
const smallFileBytes = 1024;

// ------------------------------------------------------------------ nginx: origin + peer
const dir = await Deno.makeTempDir({ prefix: "warren-bench-http-" });
const originPort = freePort(), nginxProxyPort = freePort();
await Deno.chmod(dir, 0o755); // nginx workers run as an unprivileged user
await Deno.mkdir(`${dir}/www`, { mode: 0o755 });
await Deno.truncate(
  await Deno.create(`${dir}/www/big`).then((f) => (f.close(), `${dir}/www/big`)),
  bulkBytes,
);
await Deno.writeFile(`${dir}/www/small`, new Uint8Array(smallFileBytes).fill(0x61));
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
const nginx = spawn("nginx", ["-c", `${dir}/nginx.conf`, "-p", dir], { output: "stderr" });

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
  await waitPort(nginxProxyPort, "nginx (see its error above)");
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
      const speed = (await curl(args, { expectStatus: 200, expectBytes: bulkBytes, what: name }))
        .downloadMBps;
      best.set(name, Math.max(best.get(name) ?? 0, speed));
    }
  }
  const direct = best.get("direct")!;
  console.log(`bulk: curl, ${bulkBytes / MiB} MiB from nginx, best of ${rounds}\n`);
  console.log(formatTable(
    ["path", "MB/s", "ratio to direct"],
    bulkPaths.map(([name]) => [name, fixed(best.get(name)!), ratio(best.get(name)!, direct)]),
  ));

  // ---------------------------------------------------------------- small
  const smallPaths: [string, string[]][] = [
    ["direct", [`${origin}/small`]],
    ["forward proxy (hey -x)", ["-x", px, `${origin}/small`]],
    ["nginx proxy_pass (peer)", [`${viaNginx}/small`]],
  ];
  const rps = new Map<string, number>();
  for (const [name, args] of smallPaths) {
    rps.set(name, await hey(flags.requests, flags.concurrency, args));
  }
  const directRps = rps.get("direct")!;
  console.log(
    `\nsmall: hey, ${flags.requests} GETs of 1 KiB, ${flags.concurrency} keep-alive workers\n`,
  );
  console.log(formatTable(
    ["path", "req/s", "ratio to direct"],
    smallPaths.map(([name]) => [name, fixed(rps.get(name)!), ratio(rps.get(name)!, directRps)]),
  ));
} finally {
  await proxy.stop(1000);
  await nginx.stop("SIGQUIT"); // graceful: workers finish, the pid file goes
  await Deno.remove(dir, { recursive: true });
}
