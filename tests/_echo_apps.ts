/**
 * Apps that echo what reached them, for the tunnel front tests: Python's http.server, nginx
 * and Go's net/http, each answering every request with `METHOD target|X-Forwarded-For|Host`
 * (the target as the app read it). Each listens on 127.0.0.1, port 0 or a free port.
 */

import { freePort, nextWithin } from "./_util.ts";
import { nginxConf } from "./_nginx.ts";

/** A running echo app. */
export interface EchoApp {
  name: string;
  port: number;
  stop(): Promise<void>;
}

const pythonEcho = `
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        body = ("%s %s|%s|%s\\n" % (self.command, self.path,
                self.headers.get("X-Forwarded-For", ""), self.headers.get("Host", ""))).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = answer
    def log_message(self, *args):
        pass

srv = HTTPServer(("127.0.0.1", 0), Echo)
print(srv.server_address[1], flush=True)
srv.serve_forever()
`;

/** Read the first stdout line of `child` (the port it printed). */
async function firstLine(child: Deno.ChildProcess): Promise<string> {
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const r = await nextWithin(reader, `the app's port on its first line (got: ${text})`);
    if (r.done) throw new Error("the app exited before printing its port");
    text += r.value;
  }
  // The rest of stdout is not needed: cancelling it lets the process be awaited.
  await reader.cancel();
  return text.split("\n")[0].trim();
}

async function stopChild(child: Deno.ChildProcess): Promise<void> {
  try {
    child.kill("SIGTERM");
  } catch {
    // Already exited.
  }
  await child.status;
}

/** Python's http.server (HTTP/1.1 keep-alive). */
export async function startPythonEcho(): Promise<EchoApp> {
  const dir = await Deno.makeTempDir({ prefix: "warren-pyecho-" });
  await Deno.writeTextFile(`${dir}/echo.py`, pythonEcho);
  const child = new Deno.Command("python3", {
    args: ["-u", `${dir}/echo.py`],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const port = Number(await firstLine(child));
  return {
    name: "python http.server",
    port,
    stop: async () => {
      await stopChild(child);
      await Deno.remove(dir, { recursive: true });
    },
  };
}

const pythonHeaderEcho = `
import json
from http.server import BaseHTTPRequestHandler, HTTPServer

class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        body = json.dumps([[k, v] for k, v in self.headers.items()]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Powered-By", "python")
        self.send_header("X-App", "1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
    do_GET = do_POST = do_HEAD = answer
    def log_message(self, *args):
        pass

srv = HTTPServer(("127.0.0.1", 0), Echo)
print(srv.server_address[1], flush=True)
srv.serve_forever()
`;

/**
 * Python's http.server answering every request with its header fields as JSON
 * (`[[name, value], …]`, duplicates kept) and the response headers `X-Powered-By: python`,
 * `X-App: 1` (and http.server's own `Server`, `Date`); HEAD gets the head only.
 */
export async function startPythonHeaderEcho(): Promise<EchoApp> {
  const dir = await Deno.makeTempDir({ prefix: "warren-pyheaders-" });
  await Deno.writeTextFile(`${dir}/headers.py`, pythonHeaderEcho);
  const child = new Deno.Command("python3", {
    args: ["-u", `${dir}/headers.py`],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const port = Number(await firstLine(child));
  return {
    name: "python http.server (headers)",
    port,
    stop: async () => {
      await stopChild(child);
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** nginx answering every request itself (`return 200`). */
export async function startNginxEcho(): Promise<EchoApp> {
  const dir = await Deno.makeTempDir({ prefix: "warren-nginxecho-" });
  const port = freePort();
  await Deno.writeTextFile(
    `${dir}/nginx.conf`,
    nginxConf(
      dir,
      `  server {
    listen 127.0.0.1:${port};
    default_type text/plain;
    location / { return 200 "$request_method $request_uri|$http_x_forwarded_for|$http_host\\n"; }
  }`,
    ),
  );
  const child = new Deno.Command("nginx", {
    args: ["-c", `${dir}/nginx.conf`, "-p", dir],
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  for (let i = 0;; i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      break;
    } catch (err) {
      if (i >= 200) throw err;
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  return {
    name: "nginx",
    port,
    stop: async () => {
      await stopChild(child);
      await Deno.remove(dir, { recursive: true });
    },
  };
}

const goDir = new URL("./go/", import.meta.url).pathname;
const goBin = `${goDir}bin/echo_app`;
let building: Promise<void> | undefined;

/** Go's net/http (built from tests/go/echo_app, standard library only, offline). */
export async function startGoEcho(): Promise<EchoApp> {
  building ??= (async () => {
    const out = await new Deno.Command("go", {
      args: ["build", "-o", goBin, "./echo_app"],
      cwd: goDir,
      env: {
        GO111MODULE: "off",
        GOPROXY: "off",
        GOCACHE: Deno.env.get("GOCACHE") ?? "/tmp/warren-gocache",
        HOME: Deno.env.get("HOME") ?? "/tmp",
        PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
      },
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) throw new Error(`go build failed:\n${new TextDecoder().decode(out.stderr)}`);
  })();
  await building;
  const child = new Deno.Command(goBin, {
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const port = Number(await firstLine(child));
  return { name: "Go net/http", port, stop: () => stopChild(child) };
}
