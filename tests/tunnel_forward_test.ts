/**
 * The standalone front's per-request Host check and X-Forwarded-* splice keep the last value
 * they made (a kept-alive connection repeats it): what they give must never depend on what came
 * before. Requests alternating between hosts, ports, bad Hosts and client addresses get exactly
 * what a fresh call gives.
 */

import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { BufferedReader } from "../lib/net/mod.ts";
import { HttpError, readRequestHeadRawWithin, type RequestHead } from "../lib/http/mod.ts";
import { forwardHeadBytes, routedTarget } from "../lib/tunnel/forward.ts";

const head = (host: string | undefined, target = "/x"): RequestHead => ({
  method: "GET",
  target,
  version: "HTTP/1.1",
  headers: host === undefined ? [] : [["Host", host]],
});

Deno.test("tunnel forward: the Host check answers each value on its own, whatever came before", () => {
  const cases: [string | undefined, string | null][] = [
    ["App.Test", "app.test"],
    ["App.Test", "app.test"],
    ["app.test:99999", null], // port out of range, after the same name was accepted
    ["App.Test", "app.test"],
    ["other.test:8080", "other.test"],
    ["bad host", null],
    ["bad host", null], // a refusal is not remembered as an answer
    ["other.test:8080", "other.test"],
    ["", null],
    [undefined, null],
    ["App.Test", "app.test"],
  ];
  for (const [host, vhost] of cases) {
    if (vhost === null) {
      const e = assertThrows(() => routedTarget(head(host)), `Host ${host}`);
      assert(e instanceof HttpError, `Host ${host}: ${e}`);
    } else {
      const r = routedTarget(head(host));
      assertEquals([r.vhost, r.hostHeader], [vhost, host!.trim()], `Host ${host}`);
    }
  }
  // An absolute-form target is still checked against the Host it came with.
  assertEquals(routedTarget(head("app.test", "http://app.test/y")).head.target, "/y");
  const e = assertThrows(() => routedTarget(head("app.test", "http://other.test/y")));
  assert(e instanceof HttpError, String(e));
});

Deno.test("tunnel forward: the spliced X-Forwarded-* fields are each request's own address, scheme and Host", async () => {
  const read = async (text: string) => {
    const wire = new TextEncoder().encode(text);
    const r = new BufferedReader({
      read: (p: Uint8Array) => (p.set(wire), Promise.resolve(wire.length)),
    });
    return (await readRequestHeadRawWithin(r, 1000, () => {}))!;
  };
  const a = await read("GET / HTTP/1.1\r\nHost: a.test\r\n\r\n");
  const b = await read("GET / HTTP/1.1\r\nHost: b.test\r\n\r\n");
  const p1 = { ip: "10.0.0.1", remote: "10.0.0.1:1" };
  const p2 = { ip: "10.0.0.22", remote: "10.0.0.22:1" };
  const expect = (host: string, ip: string, proto: string) =>
    `GET / HTTP/1.1\r\nHost: ${host}\r\nX-Forwarded-For: ${ip}\r\n` +
    `X-Forwarded-Proto: ${proto}\r\nX-Forwarded-Host: ${host}\r\n\r\n`;
  const got = (r: typeof a, peer: typeof p1, proto: string) =>
    new TextDecoder().decode(forwardHeadBytes(r.raw!, r.head, peer, proto));
  for (const [r, host] of [[a, "a.test"], [b, "b.test"]] as const) {
    for (const peer of [p1, p2, p1]) {
      for (const proto of ["http", "https", "http"]) {
        assertEquals(got(r, peer, proto), expect(host, peer.ip, proto));
      }
    }
  }
  // A result is the caller's: changing it does not change the next one.
  const first = forwardHeadBytes(a.raw!, a.head, p1, "http")!;
  first.fill(0);
  assertEquals(got(a, p1, "http"), expect("a.test", p1.ip, "http"));
});
