/**
 * lib/net/tls: the right certificate connects and bytes pass (SHA-256, half-close), a wrong
 * CA / host name / expired certificate is refused with a typed reason on the client and a
 * clear log line on the server, plaintext to a TLS port fails cleanly while the server keeps
 * serving, and mutual TLS refuses a client without a certificate or with a stranger's.
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { blockStreamSha256, drainHash, readWithin, sendBlocks, TimedOutError } from "./_util.ts";
import { makePki, type Pki } from "./_tls.ts";
import { Logger } from "../lib/log.ts";
import { closeQuietly, NetError, serve, type Server, writeAll } from "../lib/net/mod.ts";
import {
  connectTls,
  loadTlsClientConfig,
  loadTlsServerConfig,
  peerCommonName,
  TlsError,
  type TlsListener,
} from "../lib/transport/mod.ts";
import { listenTls, type TlsServerOptions } from "../lib/transport/tls.ts";

const payloadBytes = 8 * 1024 * 1024;

/** An echo server over `listenTls` that logs into `lines`. */
async function echoServer(
  opts: TlsServerOptions,
  handshakeTimeoutMs = 5000,
): Promise<{ listener: TlsListener; server: Server; lines: string[]; peers: string[] }> {
  const lines: string[] = [];
  const peers: string[] = [];
  const log = new Logger("debug", { svc: "tls-test" }, (l) => lines.push(l));
  const listener = await listenTls(
    { hostname: "127.0.0.1", port: 0 },
    loadTlsServerConfig(opts),
    { log, handshakeTimeoutMs },
  );
  const server = serve(listener, async (conn, ctx) => {
    ctx.handshakeDone();
    const cn = peerCommonName(conn);
    if (cn) peers.push(cn);
    const buf = new Uint8Array(64 * 1024);
    while (true) {
      const n = await conn.read(buf);
      if (n === null) break;
      await writeAll(conn, buf.subarray(0, n));
    }
    await conn.closeWrite();
  }, { log });
  return { listener, server, lines, peers };
}

/** Send the block stream, half-close, read the echo back; returns its hash. */
async function echoRoundTrip(conn: Deno.Conn): Promise<string> {
  const sending = (async () => {
    await sendBlocks(conn, payloadBytes, 7);
    await conn.closeWrite();
  })();
  const got = await drainHash(conn);
  await sending;
  closeQuietly(conn);
  assertEquals(got.bytes, payloadBytes);
  return got.sha256;
}

async function waitLine(lines: string[], re: RegExp, ms = 60_000): Promise<string> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const hit = lines.find((l) => re.test(l));
    if (hit) return hit;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`no log line matching ${re}:\n${lines.join("\n")}`);
}

/** Connect and expect a refusal: either connectTls rejects, or the first read fails/EOFs. */
async function expectRefused(p: Promise<Deno.Conn>): Promise<Error | null> {
  let conn: Deno.Conn;
  try {
    conn = await p;
  } catch (err) {
    return err as Error;
  }
  let n: number | null = null;
  try {
    // TLS 1.3: the client's handshake ends before the server judges its certificate, so
    // the refusal shows up on the first read.
    await writeAll(conn, new Uint8Array([1]));
    n = await readWithin(conn, new Uint8Array(16), "the server's refusal");
  } catch (err) {
    if (err instanceof TimedOutError) throw err;
    // an alert or reset: refused as expected
  } finally {
    closeQuietly(conn);
  }
  // (Asserted here: inside the try, the catch above took its failure for a refusal.)
  assertEquals(n, null, "a refused client must not get data");
  return null;
}

async function withPki(fn: (pki: Pki) => Promise<void>): Promise<void> {
  const pki = await makePki();
  try {
    await fn(pki);
  } finally {
    await pki.remove();
  }
}

Deno.test("tls: the right CA connects, bytes pass both ways with half-close", async () => {
  await withPki(async (pki) => {
    const s = await echoServer({ certFile: pki.serverCert, keyFile: pki.serverKey });
    try {
      const want = blockStreamSha256(payloadBytes, 7);
      const cfg = loadTlsClientConfig({ caFile: pki.ca });
      // By name, by IP (SAN 127.0.0.1), and with a bound local address (node:tls client).
      assertEquals(
        await echoRoundTrip(await connectTls("localhost", s.listener.addr.port, cfg)),
        want,
      );
      assertEquals(
        await echoRoundTrip(await connectTls("127.0.0.1", s.listener.addr.port, cfg)),
        want,
      );
      const bound = await connectTls("127.0.0.1", s.listener.addr.port, cfg, {
        localAddress: "127.0.0.1",
      });
      assertEquals(await echoRoundTrip(bound), want);
      assertEquals(s.listener.stats.handshakes, 3);
      assert(!s.listener.mutual);
      // By IP, verifying another name the certificate holds (--tls-server-name).
      const byName = loadTlsClientConfig({ caFile: pki.ca, serverName: "other.example" });
      const other = await echoServer({ certFile: pki.otherCert, keyFile: pki.otherKey });
      try {
        assertEquals(
          await echoRoundTrip(await connectTls("127.0.0.1", other.listener.addr.port, byName)),
          want,
        );
      } finally {
        await other.server.stop(0);
      }
    } finally {
      await s.server.stop(0);
    }
  });
});

Deno.test("tls: wrong CA, wrong name and expired certificates are refused with a reason", async () => {
  await withPki(async (pki) => {
    const s = await echoServer({ certFile: pki.serverCert, keyFile: pki.serverKey });
    const other = await echoServer({ certFile: pki.otherCert, keyFile: pki.otherKey });
    const expired = await echoServer({ certFile: pki.expiredCert, keyFile: pki.expiredKey });
    try {
      const port = s.listener.addr.port;
      const reasonOf = async (p: Promise<Deno.Conn>) => {
        try {
          closeQuietly(await p);
        } catch (err) {
          assert(err instanceof TlsError, `expected TlsError, got ${err}`);
          return { reason: err.reason, message: err.message };
        }
        throw new Error("connected but should not have");
      };
      const wrongCa = await reasonOf(
        connectTls("localhost", port, loadTlsClientConfig({ caFile: pki.ca2 })),
      );
      assertEquals(wrongCa.reason, "unknown-ca");
      assertMatch(wrongCa.message, /not signed by a trusted CA/);
      // The server says the client did not trust it.
      await waitLine(s.lines, /msg="tls handshake failed".*failure=peer-rejected/);

      const byName = await reasonOf(connectTls(
        "127.0.0.1",
        port,
        loadTlsClientConfig({ caFile: pki.ca, serverName: "wrong.example" }),
      ));
      assertEquals(byName.reason, "hostname-mismatch");
      const otherName = await reasonOf(
        connectTls("localhost", other.listener.addr.port, loadTlsClientConfig({ caFile: pki.ca })),
      );
      assertEquals(otherName.reason, "hostname-mismatch");
      // The node:tls client (bound local address) checks names too.
      const boundName = await reasonOf(connectTls(
        "127.0.0.1",
        other.listener.addr.port,
        loadTlsClientConfig({ caFile: pki.ca }),
        { localAddress: "127.0.0.1" },
      ));
      assertEquals(boundName.reason, "hostname-mismatch");
      const boundCa = await reasonOf(connectTls(
        "127.0.0.1",
        port,
        loadTlsClientConfig({ caFile: pki.ca2 }),
        { localAddress: "127.0.0.1" },
      ));
      assertEquals(boundCa.reason, "unknown-ca");

      const exp = await reasonOf(
        connectTls(
          "localhost",
          expired.listener.addr.port,
          loadTlsClientConfig({ caFile: pki.ca }),
        ),
      );
      assertEquals(exp.reason, "expired");
      // A TCP failure stays a NetError.
      const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const closedPort = l.addr.port;
      l.close();
      try {
        await connectTls("127.0.0.1", closedPort, loadTlsClientConfig({ caFile: pki.ca }));
        throw new Error("connected to a closed port");
      } catch (err) {
        assert(err instanceof NetError, `expected NetError, got ${err}`);
        assertEquals(err.reason, "refused");
      }
    } finally {
      await Promise.all([s.server.stop(0), other.server.stop(0), expired.server.stop(0)]);
    }
  });
});

Deno.test("tls: plaintext to a TLS port fails cleanly and the server keeps serving", async () => {
  await withPki(async (pki) => {
    // The default handshake timeout: s must still take a real handshake at the end, which
    // on a loaded box can take longer than the 500 ms that lets mutual time out quickly.
    const s = await echoServer({ certFile: pki.serverCert, keyFile: pki.serverKey });
    const mutual = await echoServer({
      certFile: pki.serverCert,
      keyFile: pki.serverKey,
      caFile: pki.ca,
    }, 500);
    try {
      for (const srv of [s, mutual]) {
        const port = srv.listener.addr.port;
        const plain = await Deno.connect({ hostname: "127.0.0.1", port });
        await writeAll(plain, new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        // The server answers with a TLS alert (or nothing) and closes: no echo of our bytes.
        const got = await drainHash(plain).catch(() => null);
        closeQuietly(plain);
        assert(got === null || got.bytes < 16, "plaintext must not be echoed");
        await waitLine(srv.lines, /msg="tls handshake failed".*failure=not-tls/);
        // Silent client: the handshake timer closes it.
        const silent = await Deno.connect({ hostname: "127.0.0.1", port });
        await waitLine(srv.lines, /msg="tls handshake failed".*failure=timeout/);
        closeQuietly(silent);
      }
      // Still serving.
      const cfg = loadTlsClientConfig({ caFile: pki.ca });
      const want = blockStreamSha256(payloadBytes, 7);
      assertEquals(
        await echoRoundTrip(await connectTls("localhost", s.listener.addr.port, cfg)),
        want,
      );
      // And a TLS client to a plaintext port gets a typed error, not a hang.
      const plainServer = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const answer = (async () => {
        const c = await plainServer.accept();
        await writeAll(c, new TextEncoder().encode("HTTP/1.1 400 Bad Request\r\n\r\n")).catch(
          () => {},
        );
        await new Promise((r) => setTimeout(r, 100));
        closeQuietly(c);
      })();
      try {
        await connectTls("localhost", plainServer.addr.port, cfg);
        throw new Error("TLS to a plaintext port connected");
      } catch (err) {
        assert(err instanceof TlsError, `expected TlsError, got ${err}`);
        assert(["not-tls", "eof"].includes(err.reason), err.reason);
      }
      await answer;
      plainServer.close();
    } finally {
      await Promise.all([s.server.stop(0), mutual.server.stop(0)]);
    }
  });
});

Deno.test("tls: mutual TLS admits the CA's client certificate and refuses others", async () => {
  await withPki(async (pki) => {
    const s = await echoServer({
      certFile: pki.serverCert,
      keyFile: pki.serverKey,
      caFile: pki.ca,
    });
    try {
      assert(s.listener.mutual);
      const port = s.listener.addr.port;
      const good = loadTlsClientConfig({
        caFile: pki.ca,
        certFile: pki.clientCert,
        keyFile: pki.clientKey,
      });
      const want = blockStreamSha256(payloadBytes, 7);
      assertEquals(await echoRoundTrip(await connectTls("localhost", port, good)), want);
      const bound = await connectTls("127.0.0.1", port, good, { localAddress: "127.0.0.1" });
      assertEquals(await echoRoundTrip(bound), want);
      // A server name other than the host, with the client certificate.
      const named = await connectTls("127.0.0.1", port, { ...good, serverName: "localhost" });
      assertEquals(await echoRoundTrip(named), want);
      assertEquals(s.peers, ["agent-1", "agent-1", "agent-1"]);

      const none = await expectRefused(
        connectTls("localhost", port, loadTlsClientConfig({ caFile: pki.ca })),
      );
      if (none) assertEquals((none as TlsError).reason, "client-cert-required");
      await waitLine(s.lines, /msg="tls handshake failed".*failure=client-cert-required/);

      await expectRefused(connectTls(
        "localhost",
        port,
        loadTlsClientConfig({ caFile: pki.ca, certFile: pki.rogueCert, keyFile: pki.rogueKey }),
      ));
      await waitLine(s.lines, /msg="tls handshake failed".*failure=unknown-ca.*rogue/);
      assertEquals(s.peers.length, 3, "refused clients never reach the handler");
    } finally {
      await s.server.stop(0);
    }
  });
});

Deno.test("tls: unreadable or non-PEM files are a config error naming the file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/junk.pem`, "not a certificate");
    for (
      const f of [
        () => loadTlsServerConfig({ certFile: `${dir}/missing.pem`, keyFile: `${dir}/junk.pem` }),
        () => loadTlsServerConfig({ certFile: `${dir}/junk.pem`, keyFile: `${dir}/junk.pem` }),
        () => loadTlsClientConfig({ caFile: `${dir}/junk.pem` }),
        () => loadTlsClientConfig({ certFile: `${dir}/junk.pem` }),
      ]
    ) {
      try {
        f();
        throw new Error("accepted a bad file");
      } catch (err) {
        assert(err instanceof TlsError, String(err));
        assertEquals(err.reason, "config");
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tls: an expired or server-only client certificate is refused with its real reason, on both sides", async () => {
  await withPki(async (pki) => {
    const s = await echoServer({
      certFile: pki.serverCert,
      keyFile: pki.serverKey,
      caFile: pki.ca,
    });
    try {
      const port = s.listener.addr.port;
      const cases = [
        // The expired leaf is also server-only: expiry is reported first.
        { cert: pki.expiredCert, key: pki.expiredKey, reason: "expired", re: /expired .*2020/ },
        { cert: pki.serverCert, key: pki.serverKey, reason: "wrong-usage", re: /clientAuth/ },
      ];
      for (const c of cases) {
        // Client side: loading such a certificate says why at once.
        let loadErr: unknown;
        try {
          loadTlsClientConfig({ caFile: pki.ca, certFile: c.cert, keyFile: c.key });
        } catch (err) {
          loadErr = err;
        }
        assert(loadErr instanceof TlsError, String(loadErr));
        assertEquals(loadErr.reason, c.reason);
        assertMatch(loadErr.message, c.re);
        // Server side: a client presenting it anyway (Deno's own connectTls, no check) is
        // refused and logged with the real reason, not unknown-ca.
        await expectRefused(Deno.connectTls({
          hostname: "localhost",
          port,
          caCerts: [Deno.readTextFileSync(pki.ca)],
          cert: Deno.readTextFileSync(c.cert),
          key: Deno.readTextFileSync(c.key),
        }));
        const line = await waitLine(
          s.lines,
          new RegExp(`msg="tls handshake failed".*failure=${c.reason}`),
        );
        assertMatch(line, c.re);
      }
      assertEquals(s.peers.length, 0, "refused clients never reach the handler");
    } finally {
      await s.server.stop(0);
    }
  });
});
