/**
 * lib/socks5 against real peers: curl and npm's `socks` client talk to a tiny server built
 * on acceptSocks5; socks5Connect talks to microsocks.
 */

import { assert, assertEquals, assertMatch, assertRejects } from "./_assert.ts";
import { dec, enc, startSocksServer } from "./_socks5.ts";
import {
  blockStreamSha256,
  drainHash,
  freePort,
  readAll,
  run,
  sendBlocks,
  startOrigin,
} from "./_util.ts";
import { closeQuietly, dial, withPrefix, writeAll } from "../lib/net/mod.ts";
import {
  socks5Connect,
  Socks5Error,
  Socks5ReplyError,
  staticCredentials,
} from "../lib/socks5/mod.ts";

/** GET `path` over an established stream, returning the whole response text (Connection: close). */
async function httpGet(conn: Deno.Conn, leftover: Uint8Array, host: string, path: string) {
  await writeAll(
    conn,
    enc.encode(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`),
  );
  return dec.decode(await readAll(withPrefix(conn, leftover)));
}

Deno.test("socks5 peers: curl --socks5-hostname and --socks5 -U through acceptSocks5", async () => {
  const origin = startOrigin();
  const open = startSocksServer();
  const authed = startSocksServer({ authenticate: staticCredentials("alice", "s3cret") });
  try {
    const url = (host: string) => `http://${host}:${origin.port}/hello?id=42`;
    const r1 = await run("curl", [
      "-sS",
      "--max-time",
      "10",
      "--socks5-hostname",
      `127.0.0.1:${open.addr.port}`,
      url("localhost"),
    ]);
    assertEquals([r1.code, r1.stdout], [0, "hello 42"], r1.stderr);
    const r2 = await run("curl", [
      "-sS",
      "--max-time",
      "10",
      "--socks5",
      `127.0.0.1:${authed.addr.port}`,
      "-U",
      "alice:s3cret",
      url("127.0.0.1"),
    ]);
    assertEquals([r2.code, r2.stdout], [0, "hello 42"], r2.stderr);
    const r3 = await run("curl", [
      "-sS",
      "--max-time",
      "10",
      "--socks5",
      `127.0.0.1:${authed.addr.port}`,
      "-U",
      "alice:wrong",
      url("127.0.0.1"),
    ]);
    assert(r3.code !== 0, "wrong password must fail");
    assertMatch(r3.stderr, /rejected|auth/i);
    const r4 = await run("curl", [
      "-sS",
      "--max-time",
      "10",
      "--socks5",
      `127.0.0.1:${authed.addr.port}`,
      url("127.0.0.1"),
    ]);
    assert(r4.code !== 0, "no credentials must fail against an auth server");
    // A refused destination comes back as reply 0x05, which curl reports.
    const r5 = await run("curl", [
      "-sS",
      "--max-time",
      "10",
      "--socks5-hostname",
      `127.0.0.1:${open.addr.port}`,
      `http://127.0.0.1:${freePort()}/`,
    ]);
    assert(r5.code !== 0);
    assertMatch(r5.stderr, /refused|\(5\)/i);
  } finally {
    await open.stop();
    await authed.stop();
    await origin.close();
  }
});

Deno.test("socks5 peers: npm socks client through acceptSocks5 with auth", async () => {
  const origin = startOrigin();
  const server = startSocksServer({ authenticate: staticCredentials("bob", "pw") });
  const client = new URL("./_socks5_npm_client.ts", import.meta.url).pathname;
  const args = [String(server.addr.port), "localhost", String(origin.port), "/hello?id=npm"];
  try {
    const ok = await run(Deno.execPath(), ["run", "-A", client, ...args, "bob", "pw"]);
    assertEquals(ok.code, 0, ok.stderr);
    assertMatch(ok.stdout, /^HTTP\/1.1 200/);
    assertMatch(ok.stdout, /hello npm\s*$/);
    const bad = await run(Deno.execPath(), ["run", "-A", client, ...args, "bob", "no"]);
    assertEquals(bad.code, 2, bad.stdout);
    assertMatch(bad.stderr, /auth/i);
  } finally {
    await server.stop();
    await origin.close();
  }
});

Deno.test("socks5 peers: 32 MiB each way through acceptSocks5 keeps every byte", async () => {
  const total = 32 << 20;
  const server = startSocksServer();
  // An echo-hash target: reads everything, then answers with its own stream.
  const target = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const targetDone = (async () => {
    const c = await target.accept();
    try {
      const got = await drainHash(c);
      await sendBlocks(c, total, 7);
      await c.closeWrite();
      return got;
    } finally {
      closeQuietly(c);
    }
  })();
  const conn = await dial("127.0.0.1", server.addr.port);
  try {
    const { leftover } = await socks5Connect(conn, {
      host: "127.0.0.1",
      port: (target.addr as Deno.NetAddr).port,
    });
    const up = (async () => {
      await sendBlocks(conn, total, 3);
      await conn.closeWrite();
    })();
    const down = await drainHash(withPrefix(conn, leftover));
    await up;
    const got = await targetDone;
    assertEquals(got, { bytes: total, sha256: blockStreamSha256(total, 3) });
    assertEquals(down, { bytes: total, sha256: blockStreamSha256(total, 7) });
  } finally {
    closeQuietly(conn);
    target.close();
    await server.stop();
  }
});

/** Start microsocks on a free port and wait until it accepts. */
async function startMicrosocks(extra: string[] = []) {
  const port = freePort();
  const child = new Deno.Command("microsocks", {
    args: ["-i", "127.0.0.1", "-p", String(port), ...extra],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const deadline = Date.now() + 60_000; // a hang's bound: a loaded box starts it late
  while (true) {
    try {
      closeQuietly(await dial("127.0.0.1", port, { timeoutMs: 1000 }));
      break;
    } catch (e) {
      if (Date.now() > deadline) {
        child.kill("SIGKILL");
        await child.status;
        throw e;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    port,
    async stop() {
      child.kill("SIGTERM");
      await child.status;
    },
  };
}

Deno.test("socks5 peers: socks5Connect through microsocks (no auth and user/pass)", async () => {
  const origin = startOrigin();
  const open = await startMicrosocks();
  const authed = await startMicrosocks(["-u", "carol", "-P", "pw"]);
  try {
    for (const host of ["127.0.0.1", "localhost"]) {
      const c = await dial("127.0.0.1", open.port);
      try {
        const { bound, leftover } = await socks5Connect(c, { host, port: origin.port });
        assert(typeof bound.host === "string"); // microsocks always reports 0.0.0.0:0
        assertMatch(await httpGet(c, leftover, host, "/hello?id=micro"), /hello micro$/);
      } finally {
        closeQuietly(c);
      }
    }
    const c2 = await dial("127.0.0.1", authed.port);
    try {
      const { leftover } = await socks5Connect(c2, { host: "127.0.0.1", port: origin.port }, {
        username: "carol",
        password: "pw",
      });
      assertMatch(await httpGet(c2, leftover, "x", "/hello?id=auth"), /hello auth$/);
    } finally {
      closeQuietly(c2);
    }
    const c3 = await dial("127.0.0.1", authed.port);
    try {
      const e = await assertRejects(socks5Connect(c3, { host: "127.0.0.1", port: origin.port }, {
        username: "carol",
        password: "nope",
      }));
      assert(e instanceof Socks5Error && e.reason === "auth-failed", String(e));
    } finally {
      closeQuietly(c3);
    }
    const c4 = await dial("127.0.0.1", open.port);
    try {
      const e = await assertRejects(socks5Connect(c4, { host: "127.0.0.1", port: freePort() }));
      assert(e instanceof Socks5ReplyError, String(e));
      assertEquals([e.reply, e.reason], [5, "refused"]);
    } finally {
      closeQuietly(c4);
    }
  } finally {
    await open.stop();
    await authed.stop();
    await origin.close();
  }
});

Deno.test("socks5 peers: IPv6 destinations (ATYP 0x04) through acceptSocks5 with curl", async () => {
  const origin6 = Deno.serve(
    { hostname: "::1", port: 0, onListen() {} },
    () => new Response("hello v6"),
  );
  const server = startSocksServer();
  try {
    const url = `http://[::1]:${origin6.addr.port}/`;
    // --socks5: curl sends the IPv6 address itself; --socks5-hostname: the literal as a name.
    for (const mode of ["--socks5", "--socks5-hostname"]) {
      const r = await run("curl", [
        "-sS",
        "--max-time",
        "10",
        mode,
        `127.0.0.1:${server.addr.port}`,
        url,
      ]);
      assertEquals([r.code, r.stdout], [0, "hello v6"], `${mode}: ${r.stderr}`);
    }
    // socks5Connect encodes ::1 as ATYP 0x04 and reads back a bound IPv6 address.
    const c = await dial("127.0.0.1", server.addr.port);
    try {
      const { bound, leftover } = await socks5Connect(c, { host: "::1", port: origin6.addr.port });
      assertEquals(bound.host, "::1");
      assertMatch(await httpGet(c, leftover, "[::1]", "/"), /hello v6$/);
    } finally {
      closeQuietly(c);
    }
  } finally {
    await server.stop();
    await origin6.shutdown();
  }
});

Deno.test("socks5 peers: socks5Connect through dante (danted)", async () => {
  const origin = startOrigin();
  const dir = await Deno.makeTempDir({ prefix: "warren-danted-" });
  const port = freePort();
  await Deno.writeTextFile(
    `${dir}/danted.conf`,
    `logoutput: stderr
internal: 127.0.0.1 port = ${port}
external: lo
socksmethod: none
clientmethod: none
user.privileged: root
user.unprivileged: nobody
client pass { from: 0.0.0.0/0 to: 0.0.0.0/0 }
socks pass { from: 0.0.0.0/0 to: 0.0.0.0/0 command: connect }
`,
  );
  const child = new Deno.Command("danted", {
    args: ["-f", `${dir}/danted.conf`, "-N", "1"],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    const deadline = Date.now() + 60_000; // a hang's bound: a loaded box starts it late
    while (true) {
      try {
        closeQuietly(await dial("127.0.0.1", port, { timeoutMs: 1000 }));
        break;
      } catch (e) {
        if (Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    for (const host of ["127.0.0.1", "localhost"]) {
      const c = await dial("127.0.0.1", port);
      try {
        const { bound, leftover } = await socks5Connect(c, { host, port: origin.port });
        assertEquals(bound.host, "127.0.0.1"); // dante reports the real bound address
        assert(bound.port > 0);
        assertMatch(await httpGet(c, leftover, host, "/hello?id=dante"), /hello dante$/);
      } finally {
        closeQuietly(c);
      }
    }
    const c = await dial("127.0.0.1", port);
    try {
      const e = await assertRejects(socks5Connect(c, { host: "127.0.0.1", port: freePort() }));
      assert(e instanceof Socks5ReplyError, String(e));
      assertEquals(e.reason, "refused");
    } finally {
      closeQuietly(c);
    }
  } finally {
    child.kill("SIGTERM"); // the mother process takes its children down with it
    await child.status;
    await Deno.remove(dir, { recursive: true });
    await origin.close();
  }
});
