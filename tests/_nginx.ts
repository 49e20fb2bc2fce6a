/** nginx as a WebSocket-capable reverse proxy in front of a test service. */

import { freePort } from "./_util.ts";

/**
 * A whole nginx.conf for a test instance living in `dir` (pid, temp paths, no access log):
 * `http` is what goes inside the `http { }` block after those settings.
 */
export function nginxConf(
  dir: string,
  http: string,
  { errorLog = "crit", workerConnections = 64 } = {},
): string {
  return `daemon off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log stderr ${errorLog};
events { worker_connections ${workerConnections}; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
${http}
}
`;
}

/** nginx in front of `upstreamPort` with the usual WebSocket-capable proxy settings. */
export async function startNginx(
  upstreamPort: number,
): Promise<{ port: number; stop(): Promise<void> }> {
  const dir = await Deno.makeTempDir({ prefix: "warren-nginx-" });
  const port = freePort();
  const conf = nginxConf(
    dir,
    `  map $http_upgrade $connection_upgrade { default upgrade; '' close; }
  server {
    listen 127.0.0.1:${port};
    client_max_body_size 0;
    location / {
      proxy_pass http://127.0.0.1:${upstreamPort};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 1h;
    }
  }`,
    { errorLog: "warn", workerConnections: 256 },
  );
  await Deno.writeTextFile(`${dir}/nginx.conf`, conf);
  const child = new Deno.Command("nginx", {
    args: ["-c", `${dir}/nginx.conf`, "-p", dir],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const errText = (async () => {
    let s = "";
    for await (const c of child.stderr.pipeThrough(new TextDecoderStream())) s += c;
    return s;
  })();
  const deadline = Date.now() + 10_000;
  while (true) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      break;
    } catch {
      if (Date.now() > deadline) {
        child.kill("SIGKILL");
        await child.status;
        throw new Error(`nginx did not start: ${await errText}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    port,
    stop: async () => {
      child.kill("SIGQUIT");
      await child.status;
      await errText;
      await Deno.remove(dir, { recursive: true });
    },
  };
}
