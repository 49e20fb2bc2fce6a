/**
 * PROXY protocol v1/v2 (lib/proxyproto) as a codec — round trip on any split with the bytes
 * after it kept, truncation, mutation and random input ending cleanly, the v2 length bound —
 * and in seaprox: haproxy `send-proxy-v2` in front of a `?proxy-protocol=1&send-proxy=2`
 * static listener, nginx `proxy_protocol` behind it reporting curl's own address and port,
 * 4 MiB byte-exact; a peer outside `--proxy-protocol-from` and a header-less client refused;
 * tunnel-server `--proxy-protocol` behind haproxy forwarding the real client's address.
 */

import fc from "./_fc.ts";
import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { BufferedReader, UnexpectedEofError } from "../lib/net/mod.ts";
import { encodeProxyHeader, readProxyHeader } from "../lib/proxyproto/mod.ts";
import {
  bytesArb,
  cat,
  clean,
  fuzzParams,
  mutate,
  mutationArb,
  splitArb,
  splitSource,
} from "./_fuzz.ts";
import {
  blockStreamSha256,
  freePort,
  portOf,
  run,
  sha256,
  startOrigin,
  startService,
  within,
} from "./_util.ts";
import { startApp, startClient } from "./_tunnel.ts";
import { portFor, startSeaproxService } from "./_seaprox.ts";
import { startHaproxySendProxyV2, startNginxProxyProtocol } from "./_upstreams.ts";

const v4 = fc.ipV4();
/** IPv6 in the full lower-case form the codec writes (so text compares exactly). */
const v6 = fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 8, maxLength: 8 })
  .map((g) => g.map((x) => x.toString(16)).join(":"));
const port = fc.integer({ min: 0, max: 65535 });

Deno.test("proxyproto: v1 and v2 round-trip on any split, the bytes after kept", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(1 as const, 2 as const),
      fc.oneof(fc.tuple(v4, v4), fc.tuple(v6, v6)),
      port,
      port,
      fc.uint8Array({ maxLength: 64 }),
      splitArb,
      async (version, [src, dst], sport, dport, tail, sizes) => {
        const wire = cat(
          encodeProxyHeader(version, { host: src, port: sport }, { host: dst, port: dport }),
          tail,
        );
        const src2 = splitSource(wire, sizes);
        const r = new BufferedReader(src2, 16);
        const out = await clean(() => readProxyHeader(r));
        assertEquals(out.kind, "ok", out.kind === "error" ? out.error.message : "");
        if (out.kind !== "ok") return;
        assertEquals(out.value, {
          version,
          source: { host: src, port: sport },
          dest: { host: dst, port: dport },
        });
        const rest = [...r.takeBuffered()];
        const buf = new Uint8Array(64);
        for (let n; (n = await src2.read(buf)) !== null;) rest.push(...buf.subarray(0, n));
        assertEquals(rest, [...tail]);
      },
    ),
    fuzzParams(200),
  );
});

Deno.test("proxyproto: truncated, mutated and random input end cleanly; v2 length bounded", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(1 as const, 2 as const),
      v4,
      mutationArb,
      fc.nat(),
      bytesArb,
      splitArb,
      async (version, ip, muts, at, garbage, sizes) => {
        const whole = encodeProxyHeader(version, { host: ip, port: 1 }, { host: ip, port: 2 });
        const cut = await clean(() =>
          readProxyHeader(
            new BufferedReader(splitSource(whole.subarray(0, at % whole.length), sizes)),
          )
        );
        assert(cut.kind === "error" && cut.error instanceof UnexpectedEofError, "truncated: EOF");
        for (const input of [mutate(whole, muts), garbage, cat(whole.subarray(0, 12), garbage)]) {
          await clean(() => readProxyHeader(new BufferedReader(splitSource(input, sizes))));
        }
      },
    ),
    fuzzParams(300),
  );
  // A v2 header announcing a 64 KiB block is refused before anything is read past it.
  const huge = encodeProxyHeader(2, { host: "1.2.3.4", port: 1 }, { host: "5.6.7.8", port: 2 });
  huge[14] = 0xff;
  huge[15] = 0xff;
  const out = await clean(() => readProxyHeader(new BufferedReader(splitSource(huge, [5]))));
  assertEquals(out.kind === "error" && out.error.reason, "bad-proxy-header");
  // v1 UNKNOWN and v2 LOCAL carry no address.
  const unknown = new TextEncoder().encode("PROXY UNKNOWN\r\n");
  assertEquals(await readProxyHeader(new BufferedReader(splitSource(unknown, [3]))), {
    version: 1,
  });
  const local = encodeProxyHeader(2, { host: "1.2.3.4", port: 1 }, { host: "5.6.7.8", port: 2 });
  local[12] = 0x20;
  assertEquals(await readProxyHeader(new BufferedReader(splitSource(local, [4]))), { version: 2 });
});

Deno.test("proxyproto: haproxy send-proxy-v2 -> seaprox -> nginx proxy_protocol keeps the client", async () => {
  const origin = startOrigin();
  const nginx = await startNginxProxyProtocol(origin.port);
  const sp = await startSeaproxService([
    `static://127.0.0.1:0?to=127.0.0.1:${nginx.port}&proxy-protocol=1&send-proxy=2`,
  ]);
  const haproxy = await startHaproxySendProxyV2(portFor(sp, "static"));
  try {
    const who = await run("curl", [
      "-sS",
      "--max-time",
      "30",
      "-w",
      "|%{local_port}",
      `http://127.0.0.1:${haproxy.port}/who`,
    ]);
    assertEquals(who.code, 0, who.stderr);
    const [body, localPort] = who.stdout.split("|");
    // nginx saw curl's own address and port: carried by haproxy's v2 header through seaprox.
    assertEquals(body, `127.0.0.1 ${localPort}`);
    await sp.waitFor(new RegExp(`proxy="static\\[ipv4\\[127\\.0\\.0\\.1:${localPort}\\]->`));

    const big = await run("curl", [
      "-sS",
      "--max-time",
      "60",
      `http://127.0.0.1:${haproxy.port}/bytes/${4 << 20}?seed=9`,
    ]);
    assertEquals(big.code, 0, big.stderr);
    assertEquals(sha256(big.raw), blockStreamSha256(4 << 20, 9));

    // A trusted peer that sends no header is refused, not relayed with a made-up client.
    const c = await Deno.connect({ hostname: "127.0.0.1", port: portFor(sp, "static") });
    await c.write(new TextEncoder().encode("GET /who HTTP/1.0\r\n\r\n"));
    assertEquals(await within(c.read(new Uint8Array(16)), "the refusal's close"), null);
    c.close();
    await sp.waitFor(/end=handshake-failed failure=bad-proxy-header/);
  } finally {
    await haproxy.stop();
    assertEquals(await sp.stop(), 0);
    await nginx.stop();
    await origin.close();
  }
});

Deno.test("proxyproto: a peer outside --proxy-protocol-from is refused and logged", async () => {
  const sp = await startSeaproxService(
    ["static://127.0.0.1:0?to=127.0.0.1:9&proxy-protocol=1"],
    ["--proxy-protocol-from", "10.9.9.0/24"],
  );
  try {
    const c = await Deno.connect({ hostname: "127.0.0.1", port: portFor(sp, "static") });
    await c.write(
      encodeProxyHeader(1, { host: "203.0.113.7", port: 4242 }, { host: "127.0.0.1", port: 1 }),
    );
    assertEquals(await within(c.read(new Uint8Array(16)), "the refusal's close"), null);
    c.close();
    const line = await sp.waitFor(/failure=untrusted-proxy-header/);
    assertMatch(line, /127\.0\.0\.1 is not a trusted balancer/);
    assert(!line.includes("203.0.113.7"), "the claimed address is not believed");
  } finally {
    assertEquals(await sp.stop(), 0);
  }
});

Deno.test("proxyproto: tunnel-server --proxy-protocol behind haproxy sees the real client", async () => {
  const app = startApp();
  const id = "identifier-proxy-protocol-0001";
  const ts = await startService(
    "tunnel-server.ts",
    ["--listen", "127.0.0.1:0", "--proxy-protocol", "--host", "app.test=env:PP_APP_ID"],
    { env: { PP_APP_ID: id } },
  );
  const port = portOf(ts.addrs.get("http")!);
  const haproxy = await startHaproxySendProxyV2(port);
  // The client too reaches the server only through the balancer (the control path shares the port).
  const client = startClient({
    server: `http://127.0.0.1:${haproxy.port}`,
    identifier: id,
    local: { host: "127.0.0.1", port: app.port },
  });
  try {
    await client.connected();
    // curl from 127.0.0.2: haproxy connects from 127.0.0.1, the header says 127.0.0.2.
    const r = await run("curl", [
      "-sS",
      "--max-time",
      "30",
      "--interface",
      "127.0.0.2",
      "-H",
      "Host: app.test",
      `http://127.0.0.1:${haproxy.port}/headers`,
    ]);
    assertEquals(r.code, 0, r.stderr);
    const headers = JSON.parse(r.stdout).headers as Record<string, string>;
    assertEquals(headers["x-forwarded-for"], "127.0.0.2");

    // A connection without the header (straight to the port) is closed and logged.
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    await c.write(new TextEncoder().encode("GET /headers HTTP/1.1\r\nHost: app.test\r\n\r\n"));
    assertEquals(await within(c.read(new Uint8Array(16)), "the refusal's close"), null);
    c.close();
    await ts.waitFor(/msg="bad PROXY header"/);
  } finally {
    await client.stop();
    await haproxy.stop();
    assertEquals(await ts.stop(), 0);
    await app.close();
  }
});

Deno.test("proxyproto: tunnel-server --tcp-send-proxy 2 tells nginx behind a TCP tunnel the client", async () => {
  const origin = startOrigin();
  const nginx = await startNginxProxyProtocol(origin.port);
  const publicPort = freePort();
  const id = "identifier-tcp-send-proxy-0001";
  const ts = await startService("tunnel-server.ts", [
    "--listen",
    "127.0.0.1:0",
    "--tcp-ports",
    `${publicPort}-${publicPort}`,
    "--tcp-send-proxy",
    "2",
    "--host",
    "app.test=env:PP_TCP_ID",
  ], { env: { PP_TCP_ID: id } });
  const client = startClient({
    server: `http://${ts.addrs.get("http")}`,
    identifier: id,
    local: { host: "127.0.0.1", port: nginx.port },
    tcp: [{ publicPort, local: { host: "127.0.0.1", port: nginx.port } }],
  });
  try {
    await client.connected();
    await ts.waitFor(new RegExp(`name=tcp-${publicPort}`));
    const who = await run("curl", [
      "-sS",
      "--max-time",
      "30",
      "-w",
      "|%{local_port}",
      `http://127.0.0.1:${publicPort}/who`,
    ]);
    assertEquals(who.code, 0, who.stderr);
    const [body, localPort] = who.stdout.split("|");
    assertEquals(body, `127.0.0.1 ${localPort}`);
    const big = await run("curl", [
      "-sS",
      "--max-time",
      "60",
      `http://127.0.0.1:${publicPort}/bytes/${4 << 20}?seed=10`,
    ]);
    assertEquals(big.code, 0, big.stderr);
    assertEquals(sha256(big.raw), blockStreamSha256(4 << 20, 10));
  } finally {
    await client.stop();
    assertEquals(await ts.stop(), 0);
    await nginx.stop();
    await origin.close();
  }
});
