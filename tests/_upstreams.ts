/**
 * Real upstream proxies for chain and egress tests: microsocks (SOCKS5) and tinyproxy (HTTP
 * CONNECT), each on a loopback port. Neither can report a kernel-chosen port, so a free one
 * is picked and the start is retried on another if the process exits (port taken meanwhile).
 */

import { closeQuietly, dial } from "../lib/net/mod.ts";
import { freePort } from "./_util.ts";
import { nginxConf } from "./_nginx.ts";

/** A started upstream proxy. */
export interface Upstream {
  port: number;
  /** Everything it logged so far (tinyproxy: its log; microsocks: one line per client). */
  output(): string;
  /** Resolves once its log matches `re` (the pipe is read asynchronously); throws after 10 s. */
  waitFor(re: RegExp): Promise<void>;
  stop(): Promise<void>;
}

async function startOnFreePort(
  spawn: (port: number) => { child: Deno.ChildProcess; output(): string; cleanup(): Promise<void> },
): Promise<Upstream> {
  let lastOutput = "";
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = freePort();
    const p = spawn(port);
    let exited = false;
    const status = p.child.status.then((s) => (exited = true, s));
    const deadline = Date.now() + 10_000;
    while (!exited && Date.now() < deadline) {
      try {
        closeQuietly(await dial("127.0.0.1", port, { timeoutMs: 1000 }));
        return {
          port,
          output: p.output,
          waitFor: async (re) => {
            const until = Date.now() + 10_000;
            while (!re.test(p.output())) {
              if (Date.now() > until) throw new Error(`no ${re} in:\n${p.output()}`);
              await new Promise((r) => setTimeout(r, 20));
            }
          },
          stop: async () => {
            p.child.kill("SIGTERM");
            await status;
            await p.cleanup();
          },
        };
      } catch {
        // Not listening yet: poll again until it is, it exits, or the deadline passes.
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    if (!exited) p.child.kill("SIGKILL");
    await status;
    lastOutput = p.output();
    await p.cleanup();
  }
  throw new Error(`upstream proxy did not start:\n${lastOutput}`);
}

/** The child's output so far, and a promise of its end (awaited by cleanup). */
function collect(child: Deno.ChildProcess): { output(): string; drained: Promise<unknown> } {
  let text = "";
  const dec = new TextDecoder();
  const drain = async (s: ReadableStream<Uint8Array>) => {
    for await (const chunk of s) text += dec.decode(chunk, { stream: true });
  };
  return { output: () => text, drained: Promise.all([drain(child.stdout), drain(child.stderr)]) };
}

/** microsocks on 127.0.0.1 (no auth, or `user`/`pass` when given). */
export function startMicrosocks(auth?: { user: string; pass: string }): Promise<Upstream> {
  return startOnFreePort((port) => {
    const child = new Deno.Command("microsocks", {
      args: [
        "-i",
        "127.0.0.1",
        "-p",
        String(port),
        ...auth ? ["-u", auth.user, "-P", auth.pass] : [],
      ],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const out = collect(child);
    return { child, output: out.output, cleanup: () => out.drained.then(() => {}) };
  });
}

/**
 * dante (danted) on 127.0.0.1 with CONNECT and UDP ASSOCIATE (its relay answers from
 * loopback too), no auth: a SOCKS5 upstream that carries UDP, unlike microsocks.
 */
export function startDante(): Promise<Upstream> {
  return startOnFreePort((port) => {
    const dir = Deno.makeTempDirSync({ prefix: "warren-danted-" });
    Deno.writeTextFileSync(
      `${dir}/danted.conf`,
      `logoutput: stderr
internal: 127.0.0.1 port = ${port}
external: lo
socksmethod: none
clientmethod: none
user.privileged: root
user.unprivileged: nobody
client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }
socks pass { from: 127.0.0.0/8 to: 0.0.0.0/0 command: connect udpassociate }
socks pass { from: 0.0.0.0/0 to: 127.0.0.0/8 command: udpreply }
`,
    );
    const child = new Deno.Command("danted", {
      args: ["-f", `${dir}/danted.conf`, "-N", "1"],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const out = collect(child);
    return {
      child,
      output: out.output,
      // The mother process takes its children down with it on SIGTERM.
      cleanup: () => out.drained.then(() => Deno.remove(dir, { recursive: true })),
    };
  });
}

/** tinyproxy in the foreground on 127.0.0.1, CONNECT to any port, clients from loopback. */
export function startTinyproxy(): Promise<Upstream> {
  return startOnFreePort((port) => {
    const dir = Deno.makeTempDirSync({ prefix: "tinyproxy-" });
    const conf = `${dir}/tinyproxy.conf`;
    Deno.writeTextFileSync(
      conf,
      [
        `Port ${port}`,
        "Listen 127.0.0.1",
        "Timeout 60",
        "MaxClients 50",
        "Allow 127.0.0.1",
        "LogLevel Connect",
        "",
      ].join("\n"),
    );
    const child = new Deno.Command("tinyproxy", {
      args: ["-d", "-c", conf],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const out = collect(child);
    return {
      child,
      output: out.output,
      cleanup: async () => {
        await out.drained;
        await Deno.remove(dir, { recursive: true });
      },
    };
  });
}

/** A temp dir with one config file, removed after the child's output drained. */
function withConfig(
  prefix: string,
  name: string,
  text: (dir: string) => string,
  cmd: string,
  args: (conf: string, dir: string) => string[],
) {
  const dir = Deno.makeTempDirSync({ prefix });
  const conf = `${dir}/${name}`;
  Deno.writeTextFileSync(conf, text(dir));
  const child = new Deno.Command(cmd, { args: args(conf, dir), stdout: "piped", stderr: "piped" })
    .spawn();
  const out = collect(child);
  return {
    child,
    output: out.output,
    cleanup: async () => {
      await out.drained;
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** haproxy in TCP mode on 127.0.0.1 in front of `backend`, sending PROXY v2 to it. */
export function startHaproxySendProxyV2(backend: number): Promise<Upstream> {
  return startOnFreePort((port) =>
    withConfig(
      "haproxy-",
      "haproxy.cfg",
      () =>
        [
          "global",
          "  maxconn 100",
          "defaults",
          "  mode tcp",
          "  timeout connect 5s",
          "  timeout client 60s",
          "  timeout server 60s",
          "frontend f",
          `  bind 127.0.0.1:${port}`,
          "  default_backend b",
          "backend b",
          `  server s 127.0.0.1:${backend} send-proxy-v2`,
          "",
        ].join("\n"),
      "haproxy",
      (conf) => ["-db", "-f", conf],
    )
  );
}

/**
 * nginx on 127.0.0.1 whose listener requires a PROXY header: `/who` answers the address in it
 * (`$proxy_protocol_addr $proxy_protocol_port`), anything else is passed to `origin`.
 */
export function startNginxProxyProtocol(origin: number): Promise<Upstream> {
  return startOnFreePort((port) =>
    withConfig(
      "nginx-pp-",
      "nginx.conf",
      (dir) =>
        nginxConf(
          dir,
          `  server {
    listen 127.0.0.1:${port} proxy_protocol;
    default_type text/plain;
    location = /who { return 200 "$proxy_protocol_addr $proxy_protocol_port"; }
    location / { proxy_pass http://127.0.0.1:${origin}; proxy_buffering off; }
  }`,
        ),
      "nginx",
      (conf, dir) => ["-c", conf, "-p", dir],
    )
  );
}
