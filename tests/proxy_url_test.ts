import { assertEquals, assertThrows } from "./_assert.ts";
import {
  listenerUrl,
  parseForwardUrl,
  parseListenUrl,
  parseUdpListenUrl,
  ProxyUrlError,
  redact,
} from "../lib/proxy/mod.ts";

function reasonOf(fn: () => unknown): string {
  const err = assertThrows(fn);
  if (!(err instanceof ProxyUrlError)) throw err;
  return err.reason;
}

Deno.test("proxy url: static with to=, port 0 allowed", () => {
  const s = parseListenUrl("static://127.0.0.1:0?to=example.org:80");
  assertEquals(s.scheme, "static");
  assertEquals(s.addr, { host: "127.0.0.1", port: 0 });
  assertEquals(s.to, { host: "example.org", port: 80 });
  assertEquals(s.auth, undefined);
});

Deno.test("proxy url: socks5 and http, with and without credentials, IPv6", () => {
  assertEquals(parseListenUrl("socks5://127.0.0.1:1080").auth, undefined);
  const a = parseListenUrl("socks5://alice:s%40cret@127.0.0.1:1080");
  assertEquals(a.auth, { username: "alice", password: "s@cret" });
  assertEquals(a.display, "socks5://alice:***@127.0.0.1:1080");
  const h = parseListenUrl("http://bob:pw@[::1]:8080/");
  assertEquals(h.scheme, "http");
  assertEquals(h.addr, { host: "::1", port: 8080 });
  assertEquals(h.auth, { username: "bob", password: "pw" });
  // http's default port is kept (WHATWG URL would drop it).
  assertEquals(parseListenUrl("http://127.0.0.1:80").addr.port, 80);
  assertEquals(parseListenUrl("HTTP://:8080").addr, { host: "127.0.0.1", port: 8080 });
});

Deno.test("proxy url: udp:// forwards need to=, take max-flows, no credentials", () => {
  const u = parseUdpListenUrl("udp://[::1]:0?to=example.org:53&max-flows=64");
  assertEquals([u.addr, u.to, u.maxFlows], [{ host: "::1", port: 0 }, {
    host: "example.org",
    port: 53,
  }, 64]);
  assertEquals(parseUdpListenUrl("udp://127.0.0.1:5353?to=10.0.0.1:53").maxFlows, undefined);
  assertEquals(reasonOf(() => parseUdpListenUrl("udp://127.0.0.1:5353")), "missing-to");
  assertEquals(reasonOf(() => parseUdpListenUrl("udp://127.0.0.1:1?to=h:0")), "bad-address");
  assertEquals(
    reasonOf(() => parseUdpListenUrl("udp://a:b@127.0.0.1:1?to=h:53")),
    "bad-credentials",
  );
  assertEquals(
    reasonOf(() => parseUdpListenUrl("udp://127.0.0.1:1?to=h:53&max-flows=0")),
    "bad-option",
  );
  assertEquals(reasonOf(() => parseUdpListenUrl("udp://127.0.0.1:1?to=h:53&x=1")), "bad-option");
  assertEquals(reasonOf(() => parseUdpListenUrl("static://127.0.0.1:1?to=h:53")), "bad-scheme");
});

Deno.test("proxy url: clear errors for bad scheme, missing to=, bad port, junk", () => {
  assertEquals(reasonOf(() => parseListenUrl("ftp://127.0.0.1:21")), "bad-scheme");
  assertEquals(reasonOf(() => parseListenUrl("static://127.0.0.1:9000")), "missing-to");
  assertEquals(reasonOf(() => parseListenUrl("static://127.0.0.1:9000?to=nope")), "bad-address");
  assertEquals(reasonOf(() => parseListenUrl("static://127.0.0.1:9000?to=h:0")), "bad-address");
  assertEquals(reasonOf(() => parseListenUrl("socks5://127.0.0.1:70000")), "bad-address");
  assertEquals(reasonOf(() => parseListenUrl("socks5://127.0.0.1")), "bad-address");
  assertEquals(reasonOf(() => parseListenUrl("socks5://127.0.0.1:x")), "bad-address");
  assertEquals(reasonOf(() => parseListenUrl("socks5://")), "bad-address");
  assertEquals(reasonOf(() => parseListenUrl("127.0.0.1:1080")), "bad-url");
  assertEquals(reasonOf(() => parseListenUrl("")), "bad-url");
  assertEquals(reasonOf(() => parseListenUrl("http://h:1/path")), "bad-url");
  assertEquals(reasonOf(() => parseListenUrl("socks5://127.0.0.1:1?x=1")), "bad-option");
  assertEquals(reasonOf(() => parseListenUrl("socks5://:pw@127.0.0.1:1")), "bad-credentials");
  assertEquals(
    reasonOf(() => parseListenUrl("static://u:p@127.0.0.1:1?to=a:1")),
    "bad-credentials",
  );
  const err = assertThrows(() => parseListenUrl("socks5://u:topsecret@127.0.0.1:99999"));
  assertEquals(err.message.includes("topsecret"), false, "password must not leak into errors");
});

Deno.test("proxy url: forward is socks5 only, port required", () => {
  const f = parseForwardUrl("socks5://u:p@10.0.0.1:1080");
  assertEquals(f.addr, { host: "10.0.0.1", port: 1080 });
  assertEquals(f.auth, { username: "u", password: "p" });
  assertEquals(parseForwardUrl("socks5h://h:1").scheme, "socks5");
  assertEquals(parseForwardUrl("http://h:1").scheme, "http");
  assertEquals(parseForwardUrl("link://h:2").scheme, "link");
  assertEquals(reasonOf(() => parseForwardUrl("ftp://h:1")), "bad-scheme");
  assertEquals(reasonOf(() => parseForwardUrl("link://u:p@h:1")), "bad-credentials");
  assertEquals(reasonOf(() => parseForwardUrl("socks5://h:0")), "bad-address");
  assertEquals(reasonOf(() => parseForwardUrl("socks5://h")), "bad-address");
});

Deno.test("proxy url: redact and listenerUrl never show the password", () => {
  assertEquals(redact("socks5://u:p@h:1"), "socks5://u:***@h:1");
  assertEquals(redact("socks5://h:1"), "socks5://h:1");
  const s = parseListenUrl("socks5://u:p@127.0.0.1:0");
  assertEquals(listenerUrl(s, { host: "127.0.0.1", port: 4242 }), "socks5://u:***@127.0.0.1:4242");
});

Deno.test("proxy url: random input never throws anything but ProxyUrlError", () => {
  const alphabet = "abc:/@?=[]%.0123456789stcpkhx5&#";
  for (let i = 0; i < 3000; i++) {
    let s = "";
    const len = Math.floor(Math.random() * 40);
    for (let j = 0; j < len; j++) s += alphabet[Math.floor(Math.random() * alphabet.length)];
    if (i % 3 === 0) s = "socks5://" + s;
    if (i % 3 === 1) s = "static://" + s;
    for (const f of [parseListenUrl, parseForwardUrl]) {
      try {
        f(s);
      } catch (err) {
        if (!(err instanceof ProxyUrlError)) throw new Error(`${JSON.stringify(s)}: ${err}`);
      }
    }
  }
});
