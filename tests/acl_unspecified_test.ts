/**
 * Deny lists against the unspecified address and other spellings of a denied one, with curl as
 * the client: `--deny 127.0.0.0/8:P` and `--deny [::1]:P` must refuse `0`, `0.0.0.0`, `0x0`,
 * `0.0.0.0.`, `[::ffff:0.0.0.0]`, `[::ffff:127.0.0.1]`, `0x7f.1`, `2130706433` and `[::]`
 * (all of which reach the loopback origin) through seaprox's SOCKS5, CONNECT and forwarding
 * listeners and through depot-local's exit, while an origin on another port stays reachable.
 */

import { assert, assertEquals } from "./_assert.ts";
import { portFor } from "./_seaprox.ts";
import { run, type ServiceProcess, startService } from "./_util.ts";

/** An HTTP origin on `hostname` answering `body` to every request. */
function origin(hostname: string, body: string): { port: number; close(): Promise<void> } {
  const s = Deno.serve({ hostname, port: 0, onListen() {} }, () => new Response(body));
  return { port: s.addr.port, close: () => s.shutdown() };
}

/** Hosts that reach the IPv4 loopback origin / the IPv6 one. */
const v4Spellings = [
  "0",
  "0.0.0.0",
  "0x0",
  "0.0.0.0.",
  "[::ffff:0.0.0.0]",
  "[::ffff:127.0.0.1]",
  "0x7f.1",
  "2130706433",
];
const v6Spellings = ["[::]"];

type Via = "socks" | "connect" | "forward";

/** curl `http://host:port/` through the proxy; its exit code and body. */
async function curlVia(via: Via, proxyPort: number, host: string, port: number) {
  const proxy = via === "socks"
    ? ["--socks5-hostname", `127.0.0.1:${proxyPort}`]
    : ["-x", `http://127.0.0.1:${proxyPort}`, ...(via === "connect" ? ["-p"] : [])];
  const r = await run("curl", ["-fsS", "--max-time", "20", ...proxy, `http://${host}:${port}/`]);
  return { code: r.code, body: r.stdout };
}

async function expectRefused(via: Via, proxyPort: number, host: string, port: number) {
  const r = await curlVia(via, proxyPort, host, port);
  assert(r.code !== 0 && r.body !== "secret", `${via} ${host}:${port} reached the origin`);
}

async function withOrigins(
  fn: (o: { v4: number; v6: number; open: number }) => Promise<void>,
): Promise<void> {
  const v4 = origin("127.0.0.1", "secret");
  const v6 = origin("::1", "secret");
  const open = origin("127.0.0.1", "open");
  try {
    await fn({ v4: v4.port, v6: v6.port, open: open.port });
  } finally {
    await Promise.all([v4.close(), v6.close(), open.close()]);
  }
}

Deno.test("acl: seaprox refuses every spelling of a denied loopback (SOCKS5, CONNECT, forward)", async () => {
  await withOrigins(async (o) => {
    const svc = await startService("seaprox.ts", [
      "--listen=socks5://127.0.0.1:0",
      "--listen=http://127.0.0.1:0",
      `--deny=127.0.0.0/8:${o.v4}`,
      `--deny=[::1]:${o.v6}`,
    ], { readyCount: 2 });
    try {
      for (const via of ["socks", "connect", "forward"] as const) {
        const port = portFor(svc, via === "socks" ? "socks5" : "http");
        const ok = await curlVia(via, port, "127.0.0.1", o.open);
        assertEquals([ok.code, ok.body], [0, "open"], `${via}: the allowed origin`);
        for (const h of v4Spellings) await expectRefused(via, port, h, o.v4);
        for (const h of v6Spellings) await expectRefused(via, port, h, o.v6);
      }
    } finally {
      await svc.stop();
    }
  });
});

Deno.test("acl: depot-local refuses every spelling of a denied loopback", async () => {
  await withOrigins(async (o) => {
    const env = { DEPOT_TOKEN: "acl-unspecified-token" };
    const procs: ServiceProcess[] = [];
    try {
      const server = await startService("depot-server.ts", [
        "--control=:0",
        "--socks=:0",
        "--tunnel=:0",
      ], { readyCount: 3, env });
      procs.push(server);
      procs.push(
        await startService("depot-local.ts", [
          `--server=${server.addrs.get("control")}`,
          `--deny=127.0.0.0/8:${o.v4}`,
          `--deny=[::1]:${o.v6}`,
        ], { readyCount: 0, ready: /msg="connected"/, env }),
      );
      const socks = portFor(server, "socks");
      const ok = await curlVia("socks", socks, "127.0.0.1", o.open);
      assertEquals([ok.code, ok.body], [0, "open"], "the allowed origin");
      for (const h of v4Spellings) await expectRefused("socks", socks, h, o.v4);
      for (const h of v6Spellings) await expectRefused("socks", socks, h, o.v6);
    } finally {
      for (const p of procs.reverse()) await p.stop();
    }
  });
});
