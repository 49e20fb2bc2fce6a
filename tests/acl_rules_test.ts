/** lib/net/acl: IPv4/IPv6 CIDR, ports, host globs, deny wins, resolved addresses, bad rules. */

import { assert, assertEquals, assertThrows } from "./_assert.ts";
import {
  Acl,
  aclDial,
  AclError,
  closeQuietly,
  NetError,
  parseInetAton,
  parseIp,
} from "../lib/net/mod.ts";

const ok = (acl: Acl, host: string, port: number, addr?: string) =>
  acl.check({ host, port }, addr).allowed;

Deno.test("acl: IP parsing covers v4, v6, compressed, mapped and embedded forms", () => {
  assertEquals(parseIp("10.0.0.1"), { v: 4, bits: 0x0a000001n });
  assertEquals(parseIp("::ffff:10.0.0.1"), { v: 4, bits: 0x0a000001n });
  assertEquals(parseIp("[::1]"), { v: 6, bits: 1n });
  assertEquals(parseIp("2001:db8::")?.bits, 0x20010db8n << 96n);
  assertEquals(parseIp("fe80::1%eth0")?.v, 6);
  assertEquals(parseIp("example.org"), null);
  assertEquals(parseIp("10.1"), null);
});

Deno.test("acl: numeric IPv4 spellings are read as the resolver reads them", () => {
  for (const s of ["127.0.0.1", "127.1", "0x7f.1", "0177.0.0.1", "2130706433", "0x7f000001"]) {
    assertEquals(parseInetAton(s), 0x7f000001n, s);
  }
  for (const s of ["0", "0x0", "0x", "00", "0.0"]) assertEquals(parseInetAton(s), 0n, s);
  for (const s of ["256.1.1.1", "1.2.3.4.5", "1.2.3.256", "09", "x", "1..2", "", "4294967296"]) {
    assertEquals(parseInetAton(s), null, s);
  }
});

Deno.test("acl: the unspecified address is the local host, in every spelling", () => {
  const acl = new Acl({ deny: ["127.0.0.0/8", "::1"] });
  const spellings = [
    "0",
    "0.0.0.0",
    "0.0.0.0.",
    "0x0",
    "0.1.2.3",
    "[::]",
    "::",
    "::ffff:0.0.0.0",
    "[::ffff:0:0]",
    "::ffff:127.0.0.1",
    "::ffff:7f00:1",
    "0x7f.1",
    "2130706433",
  ];
  for (const h of spellings) assert(!ok(acl, h, 80), h);
  for (const a of ["0.0.0.0", "::", "::ffff:0.0.0.0"]) assert(!ok(acl, "x.example", 80, a), a);
  assert(ok(acl, "8.8.8.8", 80));
  assert(ok(acl, "x.example", 80, "192.0.2.1"));
  // An allow must admit what the connection reaches, not the unspecified address.
  const only = new Acl({ allow: ["0.0.0.0/8", "::/128"] });
  assert(!ok(only, "0.0.0.0", 80));
  assert(!ok(only, "::", 80));
  const local = new Acl({ allow: ["127.0.0.1:80", "[::1]:80"] });
  assert(ok(local, "0", 80));
  assert(ok(local, "[::]", 80));
  assert(!ok(local, "0", 81));
  // A deny of the unspecified network itself still applies.
  assert(!ok(new Acl({ deny: ["0.0.0.0/8"] }), "0x0", 80));
  // refusesName reads numeric spellings as literals (no resolution can allow them).
  assert(new Acl({ allow: ["10.0.0.0/8"] }).refusesName({ host: "0x7f.1", port: 80 }) !== null);
});

Deno.test("acl: IPv4 networks and ports", () => {
  const acl = new Acl({ allow: ["10.0.0.0/8:443", "192.0.2.7:8000-8999,22"] });
  assert(ok(acl, "10.20.30.40", 443));
  assert(!ok(acl, "10.20.30.40", 80));
  assert(!ok(acl, "11.0.0.1", 443));
  assert(ok(acl, "192.0.2.7", 8500));
  assert(ok(acl, "192.0.2.7", 22));
  assert(!ok(acl, "192.0.2.7", 9000));
  assert(ok(acl, "::ffff:10.1.1.1", 443), "mapped IPv6 is checked as IPv4");
  // A name is judged by what it resolves to.
  assert(ok(acl, "svc.example", 443, "10.0.0.9"));
  assert(!ok(acl, "svc.example", 443, "8.8.8.8"));
  assert(!ok(acl, "svc.example", 443), "a name with no address is not in an IP allow list");
});

Deno.test("acl: IPv6 networks, bracketed with ports, bare without", () => {
  const acl = new Acl({ allow: ["[fd00::/8]:22,443", "2001:db8::/32"], deny: ["[fd00:bad::/32]"] });
  assert(ok(acl, "fd12::1", 22));
  assert(!ok(acl, "fd12::1", 80));
  assert(ok(acl, "2001:db8:ffff::1", 80));
  assert(!ok(acl, "2001:db9::1", 80));
  assert(!ok(acl, "fd00:bad::1", 22), "deny wins over a broader allow");
  assert(ok(acl, "v6.example", 443, "fd99::5"));
});

Deno.test("acl: host globs, deny wins, and a name cannot bypass an IP deny", () => {
  const acl = new Acl({
    allow: ["*.internal", "*:443"],
    deny: ["169.254.0.0/16", "secret.internal", "*:25"],
  });
  assert(ok(acl, "git.internal", 22));
  assert(ok(acl, "a.b.internal", 80));
  assert(ok(acl, "GIT.Internal.", 80), "case and a trailing dot do not matter");
  assert(!ok(acl, "internal", 80));
  assert(!ok(acl, "secret.internal", 22));
  assert(ok(acl, "example.org", 443));
  assert(!ok(acl, "example.org", 80));
  assert(!ok(acl, "mail.internal", 25), "deny *:25 wins over allow *.internal");
  assert(!ok(acl, "169.254.169.254", 443), "metadata literal denied");
  assert(!ok(acl, "metadata.internal", 80, "169.254.169.254"), "resolved address denied");
  assert(!ok(acl, "x.internal", 443, "::ffff:169.254.1.1"), "mapped form denied too");
  assertEquals(
    acl.check({ host: "metadata.internal", port: 80 }, "169.254.169.254").rule,
    "deny 169.254.0.0/16",
  );
  const q = new Acl({ allow: ["db?.corp"] });
  assert(ok(q, "db1.corp", 5432));
  assert(!ok(q, "db10.corp", 5432));
});

Deno.test("acl: no rules allows everything; deny-only lists deny just those", () => {
  assert(new Acl({}).empty);
  assert(ok(new Acl({}), "anything", 1));
  const d = new Acl({ deny: ["127.0.0.0/8", "::1", "localhost"] });
  assert(ok(d, "example.org", 80, "93.184.216.34"));
  assert(!ok(d, "127.0.0.1", 80));
  assert(!ok(d, "::1", 80));
  assert(!ok(d, "localhost", 80));
  assert(!ok(d, "sneaky.example", 80, "127.0.0.2"));
});

Deno.test("acl: malformed rules are refused with a reason", () => {
  for (
    const bad of [
      "",
      "10.0.0.0/33",
      "10.0.0.0/8:99999",
      "[fd00::/8]:x",
      "a b",
      "10.0.0.1:5-3",
      "::1/129",
      "host/8",
    ]
  ) {
    const err = assertThrows(() => new Acl({ allow: [bad] }), `accepted ${JSON.stringify(bad)}`);
    assert(err instanceof AclError, String(err));
  }
});

Deno.test("acl: aclDial connects only to checked addresses and types refusals", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepting = (async () => {
    for await (const c of l) closeQuietly(c);
  })();
  try {
    const port = l.addr.port;
    const open = new Acl({ allow: ["127.0.0.1"] });
    closeQuietly(await aclDial(open, { host: "127.0.0.1", port }));
    closeQuietly(await aclDial(open, { host: "localhost", port }, { prefer: "ipv4" }));
    for (
      const [acl, host] of [
        [new Acl({ deny: ["127.0.0.0/8"] }), "localhost"],
        [new Acl({ deny: ["localhost"] }), "localhost"],
        [new Acl({ allow: ["10.0.0.0/8"] }), "127.0.0.1"],
        [new Acl({ allow: [`*:${port + 1}`] }), "127.0.0.1"],
      ] as const
    ) {
      try {
        closeQuietly(await aclDial(acl, { host, port }, { prefer: "ipv4" }));
        throw new Error(`${acl.describe()} let ${host} through`);
      } catch (err) {
        assert(err instanceof NetError, String(err));
        assertEquals(err.reason, "not-allowed");
      }
    }
  } finally {
    l.close();
    await accepting;
  }
});
