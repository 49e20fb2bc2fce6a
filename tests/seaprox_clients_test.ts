/**
 * seaprox (the service, spawned) against real clients: curl over SOCKS5 (with and without
 * auth), npm's `socks` client, curl through the HTTP proxy (forward and CONNECT), and the
 * failure replies for refused and unresolvable destinations.
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { closeQuietly, dial } from "../lib/net/mod.ts";
import { socks5Connect, Socks5ReplyError } from "../lib/socks5/mod.ts";
import { run, startOrigin } from "./_util.ts";
import { portFor, startSeaproxService } from "./_seaprox.ts";

const curlBase = ["-sS", "--max-time", "20"];

Deno.test("seaprox clients: curl, npm socks, failure replies", async (t) => {
  const origin = startOrigin();
  const sp = await startSeaproxService([
    "socks5://127.0.0.1:0",
    "socks5://alice:s3cret@127.0.0.1:0",
    "http://127.0.0.1:0",
    "http://carol:pw@127.0.0.1:0",
  ]);
  const http = portFor(sp, "http");
  const httpAuth = portFor(sp, "http-2");
  const socks = portFor(sp, "socks5");
  const socksAuth = portFor(sp, "socks5-2");
  const hello = (id: string) => `http://localhost:${origin.port}/hello?id=${id}`;
  try {
    await t.step("curl --socks5-hostname (name resolved by seaprox)", async () => {
      const r = await run("curl", [
        ...curlBase,
        "--socks5-hostname",
        `127.0.0.1:${socks}`,
        hello("h"),
      ]);
      assertEquals(r.code, 0, r.stderr);
      assertEquals(r.stdout, "hello h");
    });

    await t.step("curl --socks5 -U user:pass; wrong password refused", async () => {
      const ok = await run("curl", [
        ...curlBase,
        "--socks5",
        `127.0.0.1:${socksAuth}`,
        "-U",
        "alice:s3cret",
        `http://127.0.0.1:${origin.port}/hello?id=auth`,
      ]);
      assertEquals(ok.code, 0, ok.stderr);
      assertEquals(ok.stdout, "hello auth");
      const bad = await run("curl", [
        ...curlBase,
        "--socks5",
        `127.0.0.1:${socksAuth}`,
        "-U",
        "alice:wrong",
        hello("x"),
      ]);
      assertEquals(bad.code, 97, `curl should fail with a SOCKS error: ${bad.stderr}`);
      const none = await run("curl", [
        ...curlBase,
        "--socks5",
        `127.0.0.1:${socksAuth}`,
        hello("y"),
      ]);
      assert(none.code !== 0, "no credentials must be refused");
    });

    await t.step("npm socks client, with and without credentials", async () => {
      const client = new URL("./_socks5_npm_client.ts", import.meta.url).pathname;
      const plain = await run(Deno.execPath(), [
        "run",
        "-A",
        client,
        String(socks),
        "localhost",
        String(origin.port),
        "/hello?id=npm",
      ]);
      assertEquals(plain.code, 0, plain.stderr);
      assertMatch(plain.stdout, /^HTTP\/1.1 200/);
      assertMatch(plain.stdout, /hello npm\s*$/);
      const authed = await run(Deno.execPath(), [
        "run",
        "-A",
        client,
        String(socksAuth),
        "127.0.0.1",
        String(origin.port),
        "/hello?id=npmauth",
        "alice",
        "s3cret",
      ]);
      assertEquals(authed.code, 0, authed.stderr);
      assertMatch(authed.stdout, /hello npmauth\s*$/);
    });

    await t.step("curl -x: HTTP forward proxy, GET and POST", async () => {
      const r = await run("curl", [...curlBase, "-x", `http://127.0.0.1:${http}`, hello("fwd")]);
      assertEquals(r.code, 0, r.stderr);
      assertEquals(r.stdout, "hello fwd");
      const body = "z".repeat(300_000);
      const post = await run("curl", [
        ...curlBase,
        "-x",
        `http://127.0.0.1:${http}`,
        "--data-binary",
        "@-",
        `http://127.0.0.1:${origin.port}/sha256`,
      ], { stdin: new TextEncoder().encode(body) });
      assertEquals(post.code, 0, post.stderr);
      assertEquals(JSON.parse(post.stdout).bytes, body.length);
    });

    await t.step("curl -p -x: CONNECT tunnel", async () => {
      const r = await run("curl", [
        ...curlBase,
        "-p",
        "-x",
        `http://127.0.0.1:${http}`,
        hello("tunnel"),
      ]);
      assertEquals(r.code, 0, r.stderr);
      assertEquals(r.stdout, "hello tunnel");
    });

    await t.step("HTTP proxy auth: 407 without or with wrong credentials", async () => {
      const ok = await run("curl", [
        ...curlBase,
        "-x",
        `http://carol:pw@127.0.0.1:${httpAuth}`,
        hello("pauth"),
      ]);
      assertEquals(ok.code, 0, ok.stderr);
      assertEquals(ok.stdout, "hello pauth");
      const tunnel = await run("curl", [
        ...curlBase,
        "-p",
        "-x",
        `http://127.0.0.1:${httpAuth}`,
        "-U",
        "carol:pw",
        hello("ptunnel"),
      ]);
      assertEquals(tunnel.code, 0, tunnel.stderr);
      assertEquals(tunnel.stdout, "hello ptunnel");
      for (
        const proxy of [`http://127.0.0.1:${httpAuth}`, `http://carol:no@127.0.0.1:${httpAuth}`]
      ) {
        const bad = await run("curl", [
          ...curlBase,
          "-o",
          "/dev/null",
          "-w",
          "%{http_code}",
          "-x",
          proxy,
          hello("x"),
        ]);
        assertEquals(bad.stdout, "407", bad.stderr);
      }
      await sp.waitFor(/end=auth-failed/);
    });

    await t.step(
      "SOCKS reply carries the real bound address of the outgoing connection",
      async () => {
        const c = await dial("127.0.0.1", socks);
        try {
          const { bound } = await socks5Connect(c, { host: "127.0.0.1", port: origin.port });
          assertEquals(bound.host, "127.0.0.1");
          assert(bound.port > 0 && bound.port !== socks && bound.port !== origin.port);
        } finally {
          closeQuietly(c);
        }
      },
    );

    await t.step("refused destination: SOCKS reply 0x05; unresolvable: 0x04", async () => {
      const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const dead = l.addr.port;
      l.close();
      for (
        const [dest, code] of [
          [{ host: "127.0.0.1", port: dead }, 0x05],
          [{ host: "no-such-host.invalid", port: 80 }, 0x04],
        ] as const
      ) {
        const c = await dial("127.0.0.1", socks);
        try {
          await socks5Connect(c, dest);
          throw new Error("CONNECT should have failed");
        } catch (err) {
          if (!(err instanceof Socks5ReplyError)) throw err;
          assertEquals(err.reply, code, `${dest.host}: ${err.message}`);
        } finally {
          closeQuietly(c);
        }
      }
      await sp.waitFor(/end=dial-failed failure=refused/);
      await sp.waitFor(/end=dial-failed failure=resolve/);
    });

    await t.step(
      "refused and unresolvable destinations: HTTP 502 (forward and CONNECT)",
      async () => {
        const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
        const dead = l.addr.port;
        l.close();
        for (const url of [`http://127.0.0.1:${dead}/`, "http://no-such-host.invalid/"]) {
          for (const mode of [[], ["-p"]]) {
            const r = await run("curl", [
              ...curlBase,
              ...mode,
              "-o",
              "/dev/null",
              "-w",
              "%{http_code}",
              "-x",
              `http://127.0.0.1:${http}`,
              url,
            ]);
            // Forward: the response's status; CONNECT: curl exits 56 naming the proxy's 502.
            const seen = mode.length ? r.stderr : r.stdout;
            const want = mode.length ? /CONNECT tunnel failed, response 502/ : /^502$/;
            assertMatch(seen, want, `${mode.join("")} ${url}: ${r.stdout} ${r.stderr}`);
          }
        }
      },
    );
  } finally {
    assertEquals(await sp.stop(), 0);
    await origin.close();
  }
});
