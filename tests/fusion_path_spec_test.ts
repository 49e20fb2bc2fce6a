import { AddressError } from "../lib/net/mod.ts";
import { FusionClient, parsePathSpec } from "../lib/fusion/mod.ts";
import { assert, assertEquals, assertThrows } from "./_assert.ts";

Deno.test("fusion --path: host:port, local>host:port, IPv6, and errors", () => {
  assertEquals(parsePathSpec("203.0.113.5:5022"), { host: "203.0.113.5", port: 5022 });
  assertEquals(parsePathSpec("192.168.1.10>203.0.113.5:5022"), {
    host: "203.0.113.5",
    port: 5022,
    localAddress: "192.168.1.10",
  });
  assertEquals(parsePathSpec("[fe80::1]>[2001:db8::2]:5022"), {
    host: "2001:db8::2",
    port: 5022,
    localAddress: "fe80::1",
  });
  assertEquals(parsePathSpec(":5022"), { host: "127.0.0.1", port: 5022 });
  for (const bad of [">1.2.3.4:5", "1.2.3.4>nope", "1.2.3.4>host:99999", ""]) {
    assert(assertThrows(() => parsePathSpec(bad)) instanceof AddressError, bad);
  }
});

Deno.test({
  name: "fusion: session ids are 128 random bits, distinct per session",
  sanitizeOps: true,
  sanitizeResources: true,
}, async () => {
  // Paths to a closed port: the sessions only live until closed.
  const client = new FusionClient({ token: "t", paths: [{ host: "127.0.0.1", port: 9 }] });
  const a = client.open();
  const b = client.open();
  assertEquals(a.id.length, 16);
  assert(a.idHex !== b.idHex);
  await client.close();
  assertEquals((await a.closed).end, "aborted");
});
