/**
 * Every line each service writes during a scripted scenario (traffic through all seven, a
 * refused SOCKS handshake at seaprox, a wrong SOCKS password at depot-server, plaintext HTTP on
 * depot-server's tunnel port) parses, in
 * logfmt and in JSON (`--log-format json`): ts, level, svc and msg on every line, no
 * placeholder values, no retired keys (bytesIn, durationMs, reason …); every line with byte counts
 * carries the one vocabulary (up, down, ms, end); each service writes its one line per
 * relayed connection or request, and the SOCKS authentication failure names the source
 * address and never the password.
 */

import { assert, assertEquals } from "./_assert.ts";
import { closeQuietly, type Duplex, writeAll } from "../lib/net/mod.ts";
import { portOf, readWithin, type ServiceProcess, startService } from "./_util.ts";
import { socksDial, startTarget } from "./_depot.ts";
import { rawGet, startApp } from "./_tunnel.ts";

type Format = "logfmt" | "json";
type Record = { [key: string]: string | number | boolean };

/** Keys the one vocabulary replaced (up, down, ms, end, failure, remote, dest). */
/** `reason` too: a failure word is `failure=`, an end cause `end=` (metric labels may say reason). */
const retiredKeys = [
  "bytesIn",
  "bytesOut",
  "bytesUp",
  "bytesDown",
  "durationMs",
  "connectedMs",
  "reason",
];
const password = "right-socks-password";
const wrongPassword = "wrong-socks-password";

/** One logfmt line as key/value pairs; throws on anything that is not `key=value` pairs. */
function parseLogfmt(line: string): Record {
  const out: Record = {};
  const re = /([A-Za-z_][A-Za-z0-9_.-]*)=("(?:[^"\\]|\\.)*"|[^\s"=]+)(?: |$)/y;
  let i = 0;
  while (i < line.length) {
    re.lastIndex = i;
    const m = re.exec(line);
    if (!m) throw new Error(`not logfmt at ${i}: ${line}`);
    out[m[1]] = m[2].startsWith('"') ? JSON.parse(m[2]) : m[2];
    i = re.lastIndex;
  }
  return out;
}

function parse(format: Format, line: string): Record {
  if (format === "logfmt") return parseLogfmt(line);
  const o = JSON.parse(line) as Record;
  for (const [k, v] of Object.entries(o)) {
    assert(["string", "number", "boolean"].includes(typeof v), `${k} is a plain value: ${line}`);
  }
  return o;
}

/** Check every line of one service; returns the parsed records. */
function checkLines(format: Format, svc: string, lines: string[]): Record[] {
  const records = lines.filter((l) => l.trim() !== "").map((l) => {
    let r: Record;
    try {
      r = parse(format, l);
    } catch (err) {
      throw new Error(`${svc} (${format}): ${(err as Error).message}\n${l}`);
    }
    assert(/^\d{4}-\d\d-\d\dT[\d:.]+Z$/.test(String(r.ts)), `ts: ${l}`);
    assert(["debug", "info", "warn", "error"].includes(String(r.level)), `level: ${l}`);
    assertEquals(r.svc, svc, l);
    assert(typeof r.msg === "string" && r.msg !== "", `msg: ${l}`);
    for (const [k, v] of Object.entries(r)) {
      assert(v !== "-", `placeholder value ${k}=-: ${l}`);
      assert(!retiredKeys.includes(k), `retired key ${k}: ${l}`);
      assert(!String(v).includes(password) && !String(v).includes(wrongPassword), `secret: ${l}`);
    }
    if ("up" in r || "down" in r) {
      for (const k of ["up", "down", "ms", "end"]) assert(k in r, `${k} beside up/down: ${l}`);
      for (const k of ["up", "down", "ms"]) assert(Number.isFinite(Number(r[k])), `${k}: ${l}`);
    }
    return r;
  });
  assert(records.length > 0, `${svc} wrote lines`);
  return records;
}

/** One record of `msg` with these keys, or the test fails naming what was there. */
function expectEvent(records: Record[], msg: string, keys: string[], svc: string): Record {
  const r = records.find((x) => x.msg === msg);
  assert(r, `${svc}: no "${msg}" line in ${JSON.stringify(records.map((x) => x.msg))}`);
  for (const k of keys) assert(k in r, `${svc} "${msg}" has ${k}: ${JSON.stringify(r)}`);
  return r;
}

function msgRe(format: Format, msg: string): RegExp {
  return format === "json" ? new RegExp(`"msg":"${msg}"`) : new RegExp(`msg="${msg}"`);
}

/** Echo through `conn` (the target's `E` mode): write, half-close, read to the end. */
async function echo(conn: Duplex): Promise<void> {
  await writeAll(conn, new TextEncoder().encode("Ehello"));
  await conn.closeWrite();
  const buf = new Uint8Array(64);
  while ((await readWithin(conn, buf, "the echo and its end")) !== null) { /* the echo */ }
  closeQuietly(conn);
}

async function scenario(format: Format): Promise<void> {
  const fmt = ["--log-format", format];
  const target = startTarget();
  const app = startApp();
  const procs: ServiceProcess[] = [];
  const start = async (...a: Parameters<typeof startService>) => {
    const p = await startService(...a);
    procs.push(p);
    return p;
  };
  try {
    // seaprox: one relayed connection, one broken SOCKS handshake.
    const sp = await start("seaprox.ts", [
      ...fmt,
      ...["--listen", `static://127.0.0.1:0?to=127.0.0.1:${target.port}`],
      ...["--listen", "socks5://127.0.0.1:0"],
    ], { readyCount: 2 });
    await echo(
      await Deno.connect({ hostname: "127.0.0.1", port: portOf(sp.addrs.get("static")!) }),
    );
    const bad = await Deno.connect({
      hostname: "127.0.0.1",
      port: portOf(sp.addrs.get("socks5")!),
    });
    await writeAll(bad, new Uint8Array([7, 1, 0, 80])); // no SOCKS version
    // The refusal or the close (a peer that does neither: the log line below is waited for).
    await readWithin(bad, new Uint8Array(16), "the refusal").catch(() => null);
    closeQuietly(bad);
    await sp.waitFor(/handshake-failed/);

    // depot: a wrong SOCKS password, then one relayed connection.
    const env = { DEPOT_TOKEN: "vocabulary-token" };
    const ds = await start("depot-server.ts", [
      ...fmt,
      ...["--control", ":0", "--socks", ":0", "--tunnel", ":0"],
    ], { readyCount: 3, env });
    const dl = await start("depot-local.ts", [
      ...fmt,
      ...["--server", ds.addrs.get("control")!, "--name", "edge"],
      ...["--socks-password", password],
    ], { readyCount: 0, ready: msgRe(format, "connected"), env });
    const socks = portOf(ds.addrs.get("socks")!);
    const dest = { host: "127.0.0.1", port: target.port };
    let refused = false;
    try {
      closeQuietly(await socksDial(socks, dest, { username: "edge", password: wrongPassword }));
    } catch {
      refused = true;
    }
    assert(refused, "a wrong password is refused");
    await echo(await socksDial(socks, dest, { username: "edge", password }));
    await ds.waitFor(msgRe(format, "connection closed"));
    await dl.waitFor(msgRe(format, "connection closed"));
    // Not the depot protocol on the tunnel port: refused, with its failure word.
    const garbage = await Deno.connect({
      hostname: "127.0.0.1",
      port: portOf(ds.addrs.get("tunnel")!),
    });
    await writeAll(garbage, new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n"));
    // The refusal or the close (a peer that does neither: the log line below is waited for).
    await readWithin(garbage, new Uint8Array(1024), "the refusal").catch(() => null);
    closeQuietly(garbage);
    await ds.waitFor(msgRe(format, "tunnel refused"));

    // tunnel: one request through server and client.
    const id = "vocabulary-identifier-1234";
    const ts = await start("tunnel-server.ts", [
      ...fmt,
      ...["--listen", "127.0.0.1:0", "--host", "v.test=env:APP_ID"],
    ], { env: { APP_ID: id } });
    const port = portOf(ts.addrs.get("http")!);
    const tc = await start("tunnel-client.ts", [
      ...fmt,
      ...["--server", `http://127.0.0.1:${port}`, "--local", `127.0.0.1:${app.port}`],
    ], { readyCount: 0, ready: msgRe(format, "connected"), env: { TUNNEL_IDENTIFIER: id } });
    assertEquals((await rawGet(port, "v.test", "/hello?id=1")).body, "hello 1");
    await ts.waitFor(msgRe(format, "request done"));
    await tc.waitFor(msgRe(format, "stream closed"));

    // fusion: one session over two paths.
    const fenv = { FUSION_TOKEN: "vocabulary-fusion-token" };
    const fs = await start("fusion-server.ts", [
      ...fmt,
      ...["--listen", "127.0.0.1:0", "--target", `127.0.0.1:${target.port}`],
    ], { env: fenv });
    const fc = await start("fusion-client.ts", [
      ...fmt,
      ...["--listen", "127.0.0.1:0", "--server", fs.addrs.get("listen")!, "--paths", "2"],
    ], { env: fenv });
    await echo(
      await Deno.connect({ hostname: "127.0.0.1", port: portOf(fc.addrs.get("listen")!) }),
    );
    await fc.waitFor(msgRe(format, "session closed"));
    await fs.waitFor(msgRe(format, "session closed"));

    for (const p of procs) await p.stop();
    const per = ["up", "down", "ms", "end"];
    const [seaprox, server, local, tserver, tclient, fserver, fclient] = [
      checkLines(format, "seaprox", sp.lines),
      checkLines(format, "depot-server", ds.lines),
      checkLines(format, "depot-local", dl.lines),
      checkLines(format, "tunnel-server", ts.lines),
      checkLines(format, "tunnel-client", tc.lines),
      checkLines(format, "fusion-server", fs.lines),
      checkLines(format, "fusion-client", fc.lines),
    ];
    const relayed = seaprox.find((r) => r.msg === "connection closed" && r.end === "done");
    assert(relayed && "remote" in relayed && "dest" in relayed, JSON.stringify(seaprox));
    const failed = seaprox.find((r) => r.msg === "connection closed" && r.end !== "done");
    assert(failed && "failure" in failed && "remote" in failed, JSON.stringify(seaprox));
    expectEvent(server, "connection closed", [...per, "remote", "dest", "exit"], "depot-server");
    const auth = expectEvent(server, "SOCKS authentication failed", ["remote", "failure"], "ds");
    expectEvent(server, "tunnel refused", ["remote", "failure", "error"], "depot-server");
    assert(/^127\.0\.0\.1:\d+$/.test(String(auth.remote)), JSON.stringify(auth));
    expectEvent(local, "connection closed", [...per, "dest"], "depot-local");
    expectEvent(tserver, "request done", [...per, "remote", "host"], "tunnel-server");
    expectEvent(tclient, "stream closed", [...per, "dest"], "tunnel-client");
    expectEvent(fserver, "session closed", per, "fusion-server");
    expectEvent(fclient, "session closed", per, "fusion-client");
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await app.close();
    await target.close();
  }
}

Deno.test("logs: every service's lines parse as logfmt, in one vocabulary", async () => {
  await scenario("logfmt");
});

Deno.test("logs: every service's lines parse as JSON with --log-format json", async () => {
  await scenario("json");
});
