/**
 * `deno task demo`: proves seaprox works on this machine in a few seconds, with no flags.
 *
 * Starts a tiny HTTP origin and, in this same process, a seaprox with a static, a SOCKS5
 * and an HTTP listener (all on port 0); fetches a page through each, checks the bodies,
 * prints a short summary and exits 0 (1 if any check failed).
 */

import { Logger } from "../lib/log.ts";
import { closeQuietly, dial, type Duplex, withPrefix, writeAll } from "../lib/net/mod.ts";
import { parseListenUrl, type Seaprox, startSeaprox } from "../lib/proxy/mod.ts";
import { socks5Connect } from "../lib/socks5/mod.ts";

const enc = new TextEncoder(), dec = new TextDecoder();
/** Whole demo must finish well within this; a hang is a failure, not a wait. */
const checkTimeoutMs = 10_000;

// ---- an origin ----
const origin = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
  const id = new URL(req.url).searchParams.get("via") ?? "?";
  return new Response(`hello from the origin, via ${id}\n`);
});
const originAddr = `127.0.0.1:${origin.addr.port}`;

// ---- seaprox in-process ----
const level = Deno.env.get("WARREN_LOG_LEVEL") === "debug" ? "debug" : "warn";
const log = new Logger(level, { svc: "seaprox" });
const sp: Seaprox = await startSeaprox({
  listeners: [
    parseListenUrl(`static://127.0.0.1:0?to=${originAddr}`),
    parseListenUrl("socks5://127.0.0.1:0"),
    parseListenUrl("http://127.0.0.1:0"),
  ],
  prefer: "ipv4",
  log,
});
const [staticPort, socksPort, httpPort] = sp.servers.map((s) => s.addr.port);

/** Read a whole HTTP/1.1 response sent with `Connection: close`; returns status and body. */
async function readResponse(c: Duplex): Promise<{ status: number; body: string }> {
  const parts: Uint8Array[] = [];
  const buf = new Uint8Array(16 * 1024);
  while (true) {
    const n = await c.read(buf);
    if (n === null) break;
    parts.push(buf.slice(0, n));
  }
  const text = dec.decode(new Uint8Array(parts.flatMap((p) => [...p])));
  const split = text.indexOf("\r\n\r\n");
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? 0);
  return { status, body: split < 0 ? "" : text.slice(split + 4) };
}

/** GET `target` (origin-form or absolute) on an open stream, Connection: close. */
async function get(c: Duplex, target: string): Promise<{ status: number; body: string }> {
  await writeAll(
    c,
    enc.encode(`GET ${target} HTTP/1.1\r\nHost: ${originAddr}\r\nConnection: close\r\n\r\n`),
  );
  return await readResponse(c);
}

/** Read an HTTP head byte by byte (so nothing after it is consumed); returns the status. */
async function readHeadStatus(c: Duplex): Promise<number> {
  let head = "";
  const one = new Uint8Array(1);
  while (!head.endsWith("\r\n\r\n")) {
    if ((await c.read(one)) === null || head.length > 8192) break;
    head += String.fromCharCode(one[0]);
  }
  return Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
}

const checks: [string, string, () => Promise<string>][] = [
  ["static", `127.0.0.1:${staticPort} -> ${originAddr}`, async () => {
    const res = await fetch(`http://127.0.0.1:${staticPort}/?via=static`, {
      headers: { connection: "close" },
    });
    return await res.text();
  }],
  ["socks5", `127.0.0.1:${socksPort}, CONNECT ${originAddr}`, async () => {
    const c = await dial("127.0.0.1", socksPort);
    try {
      const { leftover } = await socks5Connect(c, { host: "127.0.0.1", port: origin.addr.port });
      return (await get(withPrefix(c, leftover), "/?via=socks5")).body;
    } finally {
      closeQuietly(c);
    }
  }],
  ["http CONNECT", `127.0.0.1:${httpPort}, CONNECT ${originAddr}`, async () => {
    const c = await dial("127.0.0.1", httpPort);
    try {
      await writeAll(
        c,
        enc.encode(`CONNECT ${originAddr} HTTP/1.1\r\nHost: ${originAddr}\r\n\r\n`),
      );
      const status = await readHeadStatus(c);
      if (status !== 200) throw new Error(`CONNECT answered ${status}`);
      return (await get(c, "/?via=http-connect")).body;
    } finally {
      closeQuietly(c);
    }
  }],
  ["http forward", `127.0.0.1:${httpPort}, GET http://${originAddr}/`, async () => {
    const c = await dial("127.0.0.1", httpPort);
    try {
      const res = await get(c, `http://${originAddr}/?via=http-forward`);
      if (res.status !== 200) throw new Error(`forward GET answered ${res.status}`);
      return res.body;
    } finally {
      closeQuietly(c);
    }
  }],
];

console.log(`warren demo: origin on ${originAddr}, seaprox listeners started in-process\n`);
let failed = 0;
for (const [name, route, fn] of checks) {
  const expected = `hello from the origin, via ${name.toLowerCase().replace(" ", "-")}\n`;
  const t0 = performance.now();
  let got: string;
  try {
    got = await Promise.race([
      fn(),
      new Promise<never>((_, reject) =>
        setTimeout(() => reject(new Error("timed out")), checkTimeoutMs)
      ),
    ]);
  } catch (err) {
    got = `error: ${err instanceof Error ? err.message : String(err)}`;
  }
  const ms = (performance.now() - t0).toFixed(0);
  const ok = got === expected;
  if (!ok) failed++;
  console.log(
    `${ok ? "ok  " : "FAIL"} ${name.padEnd(13)} ${route.padEnd(44)} ${ms.padStart(4)} ms  ${
      JSON.stringify(got.trim())
    }`,
  );
}

await sp.stop(200);
await origin.shutdown();
console.log(
  failed === 0
    ? "\nall checks passed: requests went through seaprox's static, SOCKS5 and HTTP listeners"
    : `\n${failed} check(s) failed`,
);
Deno.exit(failed === 0 ? 0 : 1);
