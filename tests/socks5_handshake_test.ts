/** SOCKS5 server and client handshakes on every read split, truncated and random input. */

import { assert, assertEquals, assertRejects, assertThrows } from "./_assert.ts";
import { ChunkedSource, splits } from "./_chunked.ts";
import { concat, dec, enc, userPassMsg } from "./_socks5.ts";
import { readAll } from "./_util.ts";
import {
  closeQuietly,
  type Duplex,
  type NetFailureReason,
  ProtocolError,
  relayPool,
  UnexpectedEofError,
  withPrefix,
} from "../lib/net/mod.ts";
import {
  acceptSocks5,
  encodeAddress,
  formatIPv6,
  parseIPv4,
  parseIPv6,
  reasonForReply,
  Reply,
  replyForReason,
  sendSocks5Reply,
  socks5Connect,
  Socks5Error,
  Socks5ReplyError,
  staticCredentials,
} from "../lib/socks5/mod.ts";

const auth = { authenticate: staticCredentials("alice", "s3cret") };
const greetNoAuth = [5, 1, 0];
const connectV4 = [5, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x90];
const connectDomain = concat([5, 1, 0, 3, 11], enc.encode("example.org"), [0, 80]);
const connectV6 = concat([5, 1, 0, 4], parseIPv6("2001:db8::1")!, [1, 0xbb]);

/** Read what is left of the source after a handshake, leftover first. */
async function payloadAfter(src: Duplex, leftover: Uint8Array): Promise<string> {
  return dec.decode(await readAll(withPrefix(src, leftover)));
}

for (const [name, split] of splits) {
  Deno.test(`socks5 server: no-auth CONNECT to IPv4, IPv6 and domain on ${name}`, async () => {
    const cases: [Uint8Array, string, number][] = [
      [new Uint8Array(connectV4), "127.0.0.1", 8080],
      [connectV6, "2001:db8::1", 443],
      [connectDomain, "example.org", 80],
    ];
    for (const [req, host, port] of cases) {
      const src = new ChunkedSource(concat(greetNoAuth, req, enc.encode("GET / payload")), split);
      const got = await acceptSocks5(src);
      assertEquals(got.dest, { host, port });
      assertEquals(got.username, undefined);
      assertEquals([...src.output()], [5, 0]);
      assertEquals(await payloadAfter(src, got.leftover), "GET / payload");
    }
  });

  Deno.test(`socks5 server: username/password accepted and refused on ${name}`, async () => {
    const ok = new ChunkedSource(
      concat([5, 2, 0, 2], userPassMsg("alice", "s3cret"), connectDomain, enc.encode("x")),
      split,
    );
    const got = await acceptSocks5(ok, auth);
    assertEquals(got.username, "alice");
    assertEquals(got.dest, { host: "example.org", port: 80 });
    assertEquals([...ok.output()], [5, 2, 1, 0]);
    assertEquals(await payloadAfter(ok, got.leftover), "x");

    const bad = new ChunkedSource(
      concat([5, 1, 2], userPassMsg("alice", "wrong"), connectDomain),
      split,
    );
    const e = await assertRejects(acceptSocks5(bad, auth));
    assert(e instanceof Socks5Error && e.reason === "auth-failed", String(e));
    assertEquals([...bad.output()], [5, 2, 1, 1]);
  });

  Deno.test(`socks5 server: defined refusals get their reply on ${name}`, async () => {
    const cases: {
      input: Uint8Array;
      out: number[];
      err: "Socks5Error" | "ProtocolError";
      reason: string;
      opts?: typeof auth;
    }[] = [
      // zero methods and no acceptable method: 0xFF
      { input: concat([5, 0]), out: [5, 0xff], err: "Socks5Error", reason: "no-acceptable-method" },
      {
        input: concat([5, 2, 1, 0x80]),
        out: [5, 0xff],
        err: "Socks5Error",
        reason: "no-acceptable-method",
      },
      {
        input: concat(greetNoAuth, connectV4),
        out: [5, 0xff],
        err: "Socks5Error",
        reason: "no-acceptable-method",
        opts: auth,
      },
      // bad greeting version: no reply defined, just an error
      {
        input: concat([4, 1, 0, 80, 127, 0, 0, 1, 0]),
        out: [],
        err: "ProtocolError",
        reason: "bad-version",
      },
      // bad request version: general failure
      {
        input: concat(greetNoAuth, [4, 1, 0, 1, 1, 2, 3, 4, 0, 80]),
        out: [5, 0, 5, 1, 0, 1, 0, 0, 0, 0, 0, 0],
        err: "ProtocolError",
        reason: "bad-version",
      },
      // bad auth sub-negotiation version: status 0x01
      {
        input: concat([5, 1, 2], [5, 5, 65, 65, 65, 65, 65, 0]),
        out: [5, 2, 1, 1],
        err: "ProtocolError",
        reason: "bad-version",
        opts: auth,
      },
      // domain length 0: general failure
      {
        input: concat(greetNoAuth, [5, 1, 0, 3, 0, 0, 80]),
        out: [5, 0, 5, 1, 0, 1, 0, 0, 0, 0, 0, 0],
        err: "ProtocolError",
        reason: "empty-domain",
      },
      // ... answered before its port arrives (a client may wait for the answer)
      {
        input: concat(greetNoAuth, [5, 1, 0, 3, 0]),
        out: [5, 0, 5, 1, 0, 1, 0, 0, 0, 0, 0, 0],
        err: "ProtocolError",
        reason: "empty-domain",
      },
      // a name that is not UTF-8, or holds NUL or another control character: general failure
      // (a malformed request, like an empty name; no host was tried, so not 0x04)
      ...[[0xff, 0x61], [0x61, 0x00, 0x62], [0x61, 0x0a], [0xc3]].map((name) => ({
        input: concat(greetNoAuth, [5, 1, 0, 3, name.length], name, [0, 80]),
        out: [5, 0, 5, 1, 0, 1, 0, 0, 0, 0, 0, 0],
        err: "ProtocolError" as const,
        reason: "bad-domain",
      })),
      // unknown address type: 0x08
      {
        input: concat(greetNoAuth, [5, 1, 0, 9, 1, 2, 3, 4, 0, 80]),
        out: [5, 0, 5, 8, 0, 1, 0, 0, 0, 0, 0, 0],
        err: "ProtocolError",
        reason: "bad-address-type",
      },
      // BIND, UDP ASSOCIATE, unknown command: 0x07
      ...[2, 3, 0x7f].map((cmd) => ({
        input: concat(greetNoAuth, [5, cmd, 0, 1, 1, 2, 3, 4, 0, 80]),
        out: [5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0],
        err: "Socks5Error" as const,
        reason: "command-not-supported",
      })),
    ];
    for (const c of cases) {
      const src = new ChunkedSource(c.input, split);
      const e = await assertRejects(acceptSocks5(src, c.opts));
      const cls = e instanceof Socks5Error
        ? "Socks5Error"
        : e instanceof ProtocolError
        ? "ProtocolError"
        : "other";
      assertEquals([cls, (e as ProtocolError).reason], [c.err, c.reason], `input ${[...c.input]}`);
      assertEquals([...src.output()], c.out, `reply to ${[...c.input]}`);
    }
  });

  Deno.test(`socks5 client: CONNECT with and without auth on ${name}`, async () => {
    const plain = new ChunkedSource(
      concat([5, 0], [5, 0, 0, 1, 10, 0, 0, 7, 0x30, 0x39], enc.encode("banner")),
      split,
    );
    const res = await socks5Connect(plain, { host: "example.org", port: 80 });
    assertEquals(res.bound, { host: "10.0.0.7", port: 12345 });
    assertEquals([...plain.output()], [...greetNoAuth, ...connectDomain]);
    assertEquals(await payloadAfter(plain, res.leftover), "banner");

    const withAuth = new ChunkedSource(
      concat([5, 2], [1, 0], [5, 0, 0, 4], parseIPv6("::1")!, [0, 22]),
      split,
    );
    const res2 = await socks5Connect(withAuth, { host: "2001:db8::1", port: 443 }, {
      username: "alice",
      password: "s3cret",
    });
    assertEquals(res2.bound, { host: "::1", port: 22 });
    assertEquals(
      [...withAuth.output()],
      [...[5, 2, 0, 2], ...userPassMsg("alice", "s3cret"), ...connectV6],
    );
  });

  Deno.test(`socks5 client: failure replies, refusals and garbage on ${name}`, async () => {
    for (let code = 1; code <= 8; code++) {
      const src = new ChunkedSource(concat([5, 0], [5, code, 0, 1, 0, 0, 0, 0, 0, 0]), split);
      const e = await assertRejects(socks5Connect(src, { host: "10.1.1.1", port: 1 }));
      assert(e instanceof Socks5ReplyError, String(e));
      assertEquals([e.reply, e.reason], [code, reasonForReply(code)]);
    }
    const cases: [Uint8Array, string, string][] = [
      [concat([5, 0xff]), "Socks5Error", "no-acceptable-method"],
      [concat([5, 2], [1, 1]), "Socks5Error", "auth-failed"],
      [concat([4, 0]), "ProtocolError", "bad-version"],
      [concat([5, 0], [4, 0, 0, 1]), "ProtocolError", "bad-version"],
      [concat([5, 0], [5, 0, 0, 7, 1, 2]), "ProtocolError", "bad-address-type"],
      [concat([5, 0], [5, 0, 0, 3, 0, 0, 0]), "ProtocolError", "empty-domain"],
      [concat([5, 0], [5, 0, 0, 3, 2, 0xff, 0x61, 0, 0]), "ProtocolError", "bad-domain"],
      [concat([5, 1]), "ProtocolError", "protocol"], // chose GSSAPI, which we never offer
    ];
    for (const [input, cls, reason] of cases) {
      const src = new ChunkedSource(input, split);
      const e = await assertRejects(
        socks5Connect(src, { host: "h", port: 1 }, { username: "u", password: "p" }),
      );
      const got = e instanceof Socks5Error
        ? "Socks5Error"
        : e instanceof ProtocolError
        ? "ProtocolError"
        : "other";
      assertEquals([got, (e as ProtocolError).reason], [cls, reason], `input ${[...input]}`);
    }
  });
}

Deno.test("socks5 server: every truncated prefix of a valid handshake is an EOF error", async () => {
  const full = concat([5, 2, 0, 2], userPassMsg("alice", "s3cret"), connectDomain);
  for (let len = 0; len < full.length; len++) {
    const e = await assertRejects(acceptSocks5(new ChunkedSource(full.slice(0, len), 3), auth));
    assert(e instanceof UnexpectedEofError, `prefix ${len}: ${e}`);
  }
  const full2 = concat(greetNoAuth, connectV6);
  for (let len = 0; len < full2.length; len++) {
    const e = await assertRejects(acceptSocks5(new ChunkedSource(full2.slice(0, len), 1)));
    assert(e instanceof UnexpectedEofError, `prefix ${len}: ${e}`);
  }
});

Deno.test("socks5 client: every truncated prefix of a server's answers is an EOF error", async () => {
  const full = concat([5, 2], [1, 0], [5, 0, 0, 3, 4], enc.encode("host"), [0, 80]);
  for (let len = 0; len < full.length; len++) {
    const e = await assertRejects(
      socks5Connect(new ChunkedSource(full.slice(0, len), 2), { host: "a", port: 1 }, {
        username: "u",
      }),
    );
    assert(e instanceof UnexpectedEofError, `prefix ${len}: ${e}`);
  }
});

/** Random bytes, sometimes mutated from a valid exchange so the fuzz reaches deep states. */
function randomInput(valid: Uint8Array): Uint8Array {
  const kind = Math.random();
  if (kind < 0.3) {
    const out = new Uint8Array(Math.floor(Math.random() * 64));
    crypto.getRandomValues(out);
    if (out.length > 0 && Math.random() < 0.5) out[0] = 5;
    return out;
  }
  const out = valid.slice(0, Math.floor(Math.random() * (valid.length + 8)));
  const flips = 1 + Math.floor(Math.random() * 3);
  for (let i = 0; i < flips && out.length > 0; i++) {
    const at = Math.floor(Math.random() * out.length);
    out[at] = Math.random() < 0.5 ? Math.floor(Math.random() * 256) : [0, 1, 2, 3, 4, 5, 255][i];
  }
  return out;
}

function isCleanError(e: unknown): boolean {
  return e instanceof ProtocolError || e instanceof Socks5Error || e instanceof Socks5ReplyError;
}

Deno.test("socks5 server: thousands of random inputs end cleanly", async () => {
  const valid = concat([5, 2, 0, 2], userPassMsg("alice", "s3cret"), connectDomain, [1, 2]);
  for (let i = 0; i < 4000; i++) {
    const input = randomInput(valid);
    const src = new ChunkedSource(input, () => 1 + Math.floor(Math.random() * 5));
    try {
      await acceptSocks5(src, i % 2 === 0 ? auth : {});
    } catch (e) {
      assert(isCleanError(e), `input ${[...input]}: unexpected ${e}`);
    }
  }
});

Deno.test("socks5 client: thousands of random server answers end cleanly", async () => {
  const valid = concat([5, 2], [1, 0], [5, 0, 0, 4], new Uint8Array(16), [0, 80]);
  for (let i = 0; i < 4000; i++) {
    const input = randomInput(valid);
    const src = new ChunkedSource(input, () => 1 + Math.floor(Math.random() * 5));
    try {
      await socks5Connect(src, { host: "example.org", port: 80 }, {
        username: i % 2 ? "u" : undefined,
        password: "p",
      });
    } catch (e) {
      assert(isCleanError(e), `input ${[...input]}: unexpected ${e}`);
    }
  }
});

Deno.test("socks5 reply table maps dial failures to codes and back", () => {
  const expect: [NetFailureReason, number][] = [
    ["resolve", 0x04],
    ["refused", 0x05],
    ["host-unreachable", 0x04],
    ["network-unreachable", 0x03],
    ["timeout", 0x06],
    ["not-allowed", 0x02],
    ["other", 0x01],
    ["aborted", 0x01],
  ];
  for (const [reason, code] of expect) assertEquals(replyForReason(reason), code, reason);
  assertEquals(reasonForReply(Reply.hostUnreachable), "host-unreachable");
  assertEquals(reasonForReply(Reply.connectionRefused), "refused");
  assertEquals(reasonForReply(Reply.ttlExpired), "timeout");
  assertEquals(reasonForReply(Reply.networkUnreachable), "network-unreachable");
  assertEquals(reasonForReply(Reply.notAllowed), "not-allowed");
  assertEquals(reasonForReply(Reply.commandNotSupported), "other");
  assertEquals(reasonForReply(0x99), "other");
});

Deno.test("socks5 addresses: IPv4/IPv6 literals parse, format and encode", () => {
  assertEquals(parseIPv4("1.2.3.4"), new Uint8Array([1, 2, 3, 4]));
  assertEquals(parseIPv4("256.1.1.1"), null);
  assertEquals(parseIPv4("1.2.3"), null);
  const v6: [string, string][] = [
    ["::", "::"],
    ["::1", "::1"],
    ["[::1]", "::1"],
    ["2001:DB8:0:0:0:0:0:1", "2001:db8::1"],
    ["2001:db8:0:1:0:0:0:1", "2001:db8:0:1::1"],
    ["1:0:0:2:0:0:0:3", "1:0:0:2::3"],
    ["1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"],
    ["1:0:3:4:5:6:7:8", "1:0:3:4:5:6:7:8"],
    ["::ffff:1.2.3.4", "::ffff:102:304"],
    ["fe80::1%eth0", "fe80::1"],
  ];
  for (const [s, want] of v6) {
    const b = parseIPv6(s);
    assert(b, `parse ${s}`);
    assertEquals(formatIPv6(b), want, s);
  }
  for (
    const bad of ["1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9", "1::2::3", ":1", "12345::", "g::1", "x"]
  ) {
    assertEquals(parseIPv6(bad), null, bad);
  }
  assertEquals([...encodeAddress({ host: "1.2.3.4", port: 258 })], [1, 1, 2, 3, 4, 1, 2]);
  assertEquals(
    [...encodeAddress({ host: "::1", port: 80 })],
    [4, ...new Array(15).fill(0), 1, 0, 80],
  );
  assertEquals([...encodeAddress({ host: "ab", port: 513 })], [3, 2, 97, 98, 2, 1]);
  // With headroom (a request's VER CMD RSV in front): the same bytes after it, for each type.
  for (const host of ["1.2.3.4", "::1", "ab", "1.2.3.256", "[::ffff:1.2.3.4]"]) {
    const plain = [...encodeAddress({ host, port: 443 })];
    const roomy = encodeAddress({ host, port: 443 }, 3);
    assertEquals([...roomy.subarray(0, 3)], [0, 0, 0], host);
    assertEquals([...roomy.subarray(3)], plain, host);
  }
  assertEquals(encodeAddress({ host: "1.2.3.256", port: 80 })[0], 3, "not IPv4: a name");
  const e = assertThrows(() => encodeAddress({ host: "a".repeat(256), port: 1 }));
  assert(e instanceof Socks5Error && e.reason === "bad-argument");
});

Deno.test("socks5 reply: 2,000 replies held unwritten at once keep their own bytes", async () => {
  // Replies are views cut from a shared array: each must stay as it was built while its write
  // is pending, across the array's refills. A writer that keeps every array it was given
  // (nothing copied) and checks them all at the end; random hosts, valid IPv4 or not.
  const held: Uint8Array[] = [];
  const keeper = { write: (p: Uint8Array) => (held.push(p), Promise.resolve(p.length)) };
  const want: number[][] = [];
  let seed = 7; // xorshift32
  const rand = (n: number) => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  for (let i = 0; i < 2000; i++) {
    const port = rand(65536);
    const reply = rand(9);
    const octets = [rand(256), rand(256), rand(256), rand(256)];
    const kind = rand(4);
    const host = kind === 0 ? "::1" : kind === 1 ? `${octets.join(".")}.9` : octets.join(".");
    await sendSocks5Reply(keeper, reply, { host, port });
    want.push(
      kind === 0
        ? [5, reply, 0, 4, ...parseIPv6("::1")!, port >> 8, port & 0xff]
        : kind === 1
        ? [5, reply, 0, 3, host.length, ...enc.encode(host), port >> 8, port & 0xff]
        : [5, reply, 0, 1, ...octets, port >> 8, port & 0xff],
    );
  }
  assertEquals(held.map((p) => [...p]), want);
});

Deno.test("socks5 reply: bound address is encoded by family, 0.0.0.0:0 by default", async () => {
  const out = new ChunkedSource(new Uint8Array(), 1);
  await sendSocks5Reply(out, Reply.succeeded, {
    hostname: "127.0.0.1",
    port: 4242,
    transport: "tcp",
  });
  await sendSocks5Reply(out, Reply.connectionRefused);
  await sendSocks5Reply(out, Reply.succeeded, { host: "::1", port: 1 });
  assertEquals(
    [...out.output()],
    [
      ...[5, 0, 0, 1, 127, 0, 0, 1, 0x10, 0x92],
      ...[5, 5, 0, 1, 0, 0, 0, 0, 0, 0],
      ...[5, 0, 0, 4, ...parseIPv6("::1")!, 0, 1],
    ],
  );
});

for (const [name, split] of splits) {
  Deno.test(`socks5 server: allowNoAuth picks user/pass when offered, else no-auth on ${name}`, async () => {
    const opts = { ...auth, allowNoAuth: true };
    const plain = new ChunkedSource(concat(greetNoAuth, connectV4), split);
    const got = await acceptSocks5(plain, opts);
    assertEquals([got.username, [...plain.output()]], [undefined, [5, 0]]);
    const both = new ChunkedSource(
      concat([5, 2, 0, 2], userPassMsg("alice", "s3cret"), connectV4),
      split,
    );
    const got2 = await acceptSocks5(both, opts);
    assertEquals([got2.username, [...both.output()]], ["alice", [5, 2, 1, 0]]);
    const gss = new ChunkedSource(concat([5, 1, 1]), split);
    const e = await assertRejects(acceptSocks5(gss, opts));
    assert(e instanceof Socks5Error && e.reason === "no-acceptable-method");
  });
}

Deno.test("socks5: an aborted handshake closes the connection and rejects with the reason", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const silent = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const accepted = await listener.accept();
  try {
    const ac = new AbortController();
    const server = acceptSocks5(accepted, { signal: ac.signal });
    const client = socks5Connect(silent, { host: "h", port: 1 }, { signal: ac.signal });
    ac.abort(new Error("stop now"));
    const [rs, rc] = await Promise.allSettled([server, client]);
    assertEquals(rs.status === "rejected" && (rs.reason as Error).message, "stop now");
    assertEquals(rc.status === "rejected" && (rc.reason as Error).message, "stop now");
    const pre = new AbortController();
    pre.abort(new Error("already"));
    const src = new ChunkedSource(concat(greetNoAuth, connectV4), 1);
    assertEquals(
      (await assertRejects(acceptSocks5(src, { signal: pre.signal }))).message,
      "already",
    );
  } finally {
    listener.close();
    closeQuietly(silent); // the abort closed both already
    closeQuietly(accepted);
  }
});

Deno.test("socks5 server: failed handshakes give their pooled buffer back (the relay pool's budget does not shrink)", async () => {
  // Every handshake borrows a 4 KiB buffer from the relay pool. One kept after a failure
  // stayed counted in the pool's budget for good: 16,384 failed handshakes (bad greetings,
  // wrong passwords, clients leaving) and no relay could grow its buffer past 4 KiB again.
  const before = relayPool.heldBytes;
  const failures: [string, Uint8Array | number[], typeof auth | undefined][] = [
    ["a wrong version byte", [4, 1, 0], undefined],
    ["a client leaving mid-greeting", [5, 2, 0], undefined],
    ["no acceptable method", [5, 1, 0], auth],
    ["a wrong password", concat([5, 1, 2], userPassMsg("alice", "wrong"), connectV4), auth],
    ["an unsupported command", [5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80], undefined],
  ];
  for (let round = 0; round < 20; round++) {
    for (const [what, bytes, opts] of failures) {
      const src = new ChunkedSource(new Uint8Array(bytes), 1);
      await assertRejects(acceptSocks5(src, opts), what);
    }
  }
  const grew = relayPool.heldBytes - before;
  assert(grew <= 4096, `the relay pool holds ${grew} bytes more after 100 failed handshakes`);
});
