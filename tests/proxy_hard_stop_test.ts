/**
 * A hard stop (the drain deadline passing) cuts every live proxied connection as "aborted":
 * static, SOCKS5 and an HTTP CONNECT tunnel, each mid-relay. serveProxy hands serve()'s
 * connection context to the dial and the relay as their abort (no AbortSignal per
 * connection): the context's own listeners must cut them. Were they not called, the relay
 * would end only through its client socket's close, as a failure ("error"/"reset"), and the
 * client would read an ordinary end instead of a reset.
 */

import { assertEquals, assertMatch } from "./_assert.ts";
import { rawServer } from "./_seaprox.ts";
import { readWithin, within } from "./_util.ts";
import { closeQuietly, dial } from "../lib/net/mod.ts";
import { httpConnect } from "../lib/http/mod.ts";
import { socks5Connect } from "../lib/socks5/mod.ts";
import {
  directDialer,
  httpProxy,
  type ProxyConnectionRecord,
  type ProxyType,
  serveProxy,
  socks5Proxy,
  staticProxy,
} from "../lib/proxy/mod.ts";

const ping = new TextEncoder().encode("ping");

/** An origin that echoes what it reads and holds the connection until the client leaves. */
function echoOrigin() {
  return rawServer(async (c) => {
    const buf = new Uint8Array(64);
    for (let n = await readWithin(c, buf, "the client's bytes"); n !== null;) {
      await c.write(buf.subarray(0, n));
      n = await readWithin(c, buf, "the client's bytes");
    }
  });
}

for (const kind of ["static", "socks5", "http"] as const) {
  Deno.test(`serveProxy ${kind}: a hard stop ends a relaying connection as aborted, the client reset`, async () => {
    const origin = echoOrigin();
    const to = { host: "127.0.0.1", port: origin.port };
    const type: ProxyType = kind === "static"
      ? staticProxy(to)
      : kind === "socks5"
      ? socks5Proxy()
      : httpProxy();
    const closed = Promise.withResolvers<ProxyConnectionRecord>();
    const proxy = serveProxy(Deno.listen({ hostname: "127.0.0.1", port: 0 }), type, {
      dialer: directDialer({ prefer: "ipv4" }),
      hooks: { onClose: (r) => closed.resolve(r) },
    });
    const c = await within(dial("127.0.0.1", proxy.addr.port), "a connection to the proxy");
    try {
      let leftover: Uint8Array = new Uint8Array(0);
      if (kind === "socks5") {
        leftover = (await within(socks5Connect(c, to), "the SOCKS5 handshake")).leftover;
      }
      if (kind === "http") leftover = (await within(httpConnect(c, to), "the CONNECT")).leftover;
      assertEquals(leftover.length, 0);
      await c.write(ping);
      const buf = new Uint8Array(4);
      for (let got = 0; got < 4;) {
        got += (await readWithin(c, buf.subarray(got), "the echo through the proxy", got)) ??
          Infinity;
      }
      await within(proxy.stop(50), "the proxy's hard stop");
      const rec = await within(closed.promise, "the connection's close record");
      assertEquals(rec.end, "aborted", `the record: ${JSON.stringify(rec)}`);
      const cut = await within(
        c.read(buf).then((n) => `read ${n}`, (e: Error) => e.name),
        "the client's cut",
      );
      assertMatch(cut, /ConnectionReset/);
    } finally {
      closeQuietly(c);
      await origin.close();
    }
  });
}
