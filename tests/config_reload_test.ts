/**
 * SIGHUP reloads per service, each spawned with a --config file: change the file, send
 * SIGHUP, see the new listener / host / exit work while a connection opened before stays
 * alive; a broken file keeps the old config and says why.
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { closeQuietly, dial, type Duplex, writeAll } from "../lib/net/mod.ts";
import { portOf, readWithin, type ServiceProcess, startService } from "./_util.ts";
import { socksDial, startTarget } from "./_depot.ts";
import { rawGet, startApp } from "./_tunnel.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Send `text` on an echo connection ("E" mode of startTarget) and read it back. */
async function echo(conn: Duplex, text: string): Promise<string> {
  await writeAll(conn, enc.encode(text));
  const buf = new Uint8Array(text.length);
  let got = 0;
  while (got < buf.length) {
    const n = await readWithin(conn, buf.subarray(got), `the echo of ${JSON.stringify(text)}`, got);
    if (n === null) throw new Error("echo connection closed");
    got += n;
  }
  return dec.decode(buf);
}

/** SIGHUP and wait for this reload's outcome line (counting earlier ones). */
async function reload(svc: ServiceProcess, ok: boolean): Promise<string> {
  const re = ok ? /msg="config reloaded"/ : /msg="config reload failed/;
  const before = svc.lines.filter((l) => re.test(l)).length;
  svc.child.kill("SIGHUP");
  const deadline = Date.now() + 60_000; // a hang's bound, never a timing check
  while (Date.now() < deadline) {
    const hits = svc.lines.filter((l) => re.test(l));
    if (hits.length > before) return hits[hits.length - 1];
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`no ${re} after SIGHUP:\n${svc.lines.join("\n")}`);
}

async function eventually(fn: () => Promise<boolean>, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await fn().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("condition not reached in time");
}

Deno.test("reload: seaprox listeners are added and removed on SIGHUP, live connections stay", async () => {
  const target = startTarget();
  const dir = await Deno.makeTempDir();
  const path = `${dir}/seaprox.toml`;
  const a = `static://127.0.0.1:0?to=127.0.0.1:${target.port}`;
  const b = `static://127.0.0.1:0/?to=127.0.0.1:${target.port}`; // another URL: a new listener
  await Deno.writeTextFile(path, `listen = ["${a}"]\n`);
  const svc = await startService("seaprox.ts", ["--config", path]);
  let old: Duplex | undefined;
  try {
    const portA = portOf(svc.addrs.get("static")!);
    old = await dial("127.0.0.1", portA);
    await writeAll(old, enc.encode("E"));
    assertEquals(await echo(old, "before"), "before");

    await Deno.writeTextFile(path, `# swapped\nlisten = ["${b}"]\n`);
    await reload(svc, true);
    const portB = portOf(svc.addrs.get("static-2")!);
    const fresh = await dial("127.0.0.1", portB);
    try {
      await writeAll(fresh, enc.encode("E"));
      assertEquals(await echo(fresh, "new listener"), "new listener");
    } finally {
      closeQuietly(fresh);
    }
    assertEquals(await echo(old, "still alive"), "still alive");
    await eventually(async () => {
      try {
        closeQuietly(await dial("127.0.0.1", portA));
        return false;
      } catch {
        return true; // refused: the removed listener is closed
      }
    });

    await Deno.writeTextFile(path, `listen = ["${b}"]\nlisten-more = ["x"]\n`);
    const why = await reload(svc, false);
    assertMatch(why, /seaprox\.toml:2: unknown key/);
    await Deno.writeTextFile(path, `listen = ["nope://127.0.0.1:1"]\n`);
    await reload(svc, false);
    const again = await dial("127.0.0.1", portB);
    try {
      await writeAll(again, enc.encode("E"));
      assertEquals(await echo(again, "kept"), "kept");
    } finally {
      closeQuietly(again);
    }
  } finally {
    if (old) closeQuietly(old);
    await svc.stop();
    await target.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("reload: tunnel-server hosts and identifiers change on SIGHUP, streams stay", async () => {
  const app = startApp();
  const dir = await Deno.makeTempDir();
  const path = `${dir}/tunnel.toml`;
  const env = { APP_ID: "reload-identifier-one-1234", OTHER_ID: "reload-identifier-two-5678" };
  await Deno.writeTextFile(path, `listen = "127.0.0.1:0"\nhost = ["a.test=env:APP_ID"]\n`);
  const server = await startService("tunnel-server.ts", ["--config", path], { env });
  const port = portOf(server.addrs.get("http")!);
  let client: ServiceProcess | undefined;
  let download: Deno.TcpConn | undefined;
  try {
    client = await startService("tunnel-client.ts", [
      "--server",
      `http://127.0.0.1:${port}`,
      "--local",
      `127.0.0.1:${app.port}`,
    ], { readyCount: 0, ready: /msg="connected"/, env: { TUNNEL_IDENTIFIER: env.APP_ID } });
    await eventually(async () => (await rawGet(port, "a.test", "/hello?id=1")).body === "hello 1");
    // A download in flight across the reload (the reader pauses, so the stream stays open).
    const total = 8 * 1024 * 1024;
    download = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(
      download,
      enc.encode(`GET /bytes/${total} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n`),
    );
    const buf = new Uint8Array(65536);
    let received = 0;
    const first = await readWithin(download, buf, "the start of the download");
    assert(first !== null && first > 0);
    received += first;

    // a.test goes away, b.test is served by the same client, c.test waits for another one.
    await Deno.writeTextFile(
      path,
      `listen = "127.0.0.1:0"\nhost = ["b.test=env:APP_ID", "c.test=env:OTHER_ID"]\n`,
    );
    await reload(server, true);
    await eventually(async () => (await rawGet(port, "b.test", "/hello?id=2")).body === "hello 2");
    assert((await rawGet(port, "a.test", "/hello")).body !== "hello ", "a.test removed");
    // The download started before the reload completes.
    while (true) {
      const n = await readWithin(download, buf, "the rest of the download", received);
      if (n === null) break;
      received += n;
    }
    assert(received > total, `download cut short: ${received} bytes of ${total} + head`);

    await Deno.writeTextFile(path, `listen = "127.0.0.1:0"\nhost = ["b.test=env:UNSET_VAR"]\n`);
    assertMatch(await reload(server, false), /UNSET_VAR is not set/);
    assertEquals((await rawGet(port, "b.test", "/hello?id=3")).body, "hello 3");
    assertEquals(client.lines.filter((l) => /msg="connected"/.test(l)).length, 1);
  } finally {
    if (download) closeQuietly(download);
    await client?.stop();
    await server.stop();
    await app.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("reload: depot-server token and default exit change on SIGHUP, relays stay", async () => {
  const target = startTarget();
  const dir = await Deno.makeTempDir();
  const path = `${dir}/depot.toml`;
  const base = `control = "127.0.0.1:0"\nsocks = "127.0.0.1:0"\ntunnel = "127.0.0.1:0"\n` +
    `status = "127.0.0.1:0"\n`;
  // The token lives in the file here (DEPOT_TOKEN in the environment would override it).
  await Deno.writeTextFile(path, `${base}default-exit = "one"\ntoken = "token-one"\n`);
  const server = await startService("depot-server.ts", ["--config", path], { readyCount: 4 });
  const control = server.addrs.get("control")!;
  const socksPort = portOf(server.addrs.get("socks")!);
  const locals: ServiceProcess[] = [];
  const startLocal = async (name: string, token: string) => {
    locals.push(
      await startService("depot-local.ts", ["--server", control, "--name", name], {
        readyCount: 0,
        ready: /msg="connected"/,
        env: { DEPOT_TOKEN: token },
      }),
    );
  };
  const exitTotals = async () => {
    const st = await (await fetch(`http://${server.addrs.get("status")}/status`)).json() as {
      exits: { name: string; total: number }[];
    };
    return Object.fromEntries(st.exits.map((e) => [e.name, e.total]));
  };
  const dest = { host: "127.0.0.1", port: target.port };
  let old: Duplex | undefined;
  try {
    await startLocal("one", "token-one");
    await startLocal("two", "token-one");
    old = await socksDial(socksPort, dest);
    await writeAll(old, enc.encode("E"));
    assertEquals(await echo(old, "via one"), "via one");
    assertEquals((await exitTotals()).one, 1);

    await Deno.writeTextFile(path, `${base}default-exit = "two"\ntoken = "token-two"\n`);
    await reload(server, true);
    // The new token admits new locals; the old one no longer does (connected ones stay).
    await startLocal("three", "token-two");
    const refused = await startService("depot-local.ts", ["--server", control, "--name", "four"], {
      readyCount: 0,
      ready: /wrong token/,
      env: { DEPOT_TOKEN: "token-one" },
    });
    await refused.stop();
    assertEquals(Object.keys(await exitTotals()).sort(), ["one", "three", "two"]);
    const c = await socksDial(socksPort, dest);
    try {
      await writeAll(c, enc.encode("E"));
      assertEquals(await echo(c, "via two"), "via two");
    } finally {
      closeQuietly(c);
    }
    assertEquals((await exitTotals()).two, 1);
    assertEquals(await echo(old, "one still relaying"), "one still relaying");

    await Deno.writeTextFile(path, `${base}default-exit = "not a name!"\n`);
    assertMatch(await reload(server, false), /default-exit must match/);
    const d = await socksDial(socksPort, dest);
    closeQuietly(d);
    assertEquals((await exitTotals()).two, 2);
  } finally {
    if (old) closeQuietly(old);
    for (const l of locals) await l.stop();
    await server.stop();
    await target.close();
    await Deno.remove(dir, { recursive: true });
  }
});
