/**
 * Real upstream proxies for chain and egress tests: microsocks (SOCKS5) and tinyproxy (HTTP
 * CONNECT), each on a loopback port. Neither can report a kernel-chosen port, so a free one
 * is picked and the start is retried on another if the process exits (port taken meanwhile).
 */

import { closeQuietly, dial } from "../lib/net/mod.ts";
import { freePort } from "./_util.ts";

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
