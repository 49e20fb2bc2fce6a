/**
 * Property-based tests of the SOCKS5 codec (lib/socks5): server handshake and client reply
 * parsing round-trip arbitrary addresses, credentials and leftovers on any read split;
 * mutated and random input ends in a result, a typed error or a defined reply.
 */

import fc from "./_fc.ts";
import { assert, assertEquals } from "./_assert.ts";
import {
  acceptSocks5,
  AddrType,
  encodeAddress,
  Method,
  parseIPv6,
  Reply,
  socks5Connect,
  Socks5ReplyError,
} from "../lib/socks5/mod.ts";
import type { HostPort } from "../lib/net/mod.ts";
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

const enc = new TextEncoder();

const labelArb = fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?$/);
const domainArb = fc.array(labelArb, { minLength: 2, maxLength: 6 })
  .map((ls) => ls.join(".") + ".example")
  .filter((d) => d.length <= 255);
const destArb: fc.Arbitrary<HostPort> = fc.record({
  host: fc.oneof(fc.ipV4(), fc.ipV6(), domainArb),
  port: fc.integer({ min: 0, max: 65535 }),
});
const credArb = fc.option(
  fc.record({
    user: fc.string({ unit: "grapheme-ascii", minLength: 0, maxLength: 60 }),
    pass: fc.string({ unit: "grapheme-ascii", minLength: 0, maxLength: 60 }),
  }),
);

/** The bytes a client sends: greeting, optional RFC 1929 auth, CONNECT request, payload. */
function clientBytes(
  dest: HostPort,
  cred: { user: string; pass: string } | null,
  leftover: Uint8Array,
): Uint8Array {
  const greeting = cred
    ? Uint8Array.of(5, 2, Method.noAuth, Method.userPass)
    : Uint8Array.of(5, 1, Method.noAuth);
  const auth = cred
    ? cat(
      Uint8Array.of(1, enc.encode(cred.user).length),
      enc.encode(cred.user),
      Uint8Array.of(enc.encode(cred.pass).length),
      enc.encode(cred.pass),
    )
    : new Uint8Array(0);
  return cat(greeting, auth, Uint8Array.of(5, 1, 0), encodeAddress(dest), leftover);
}

function sameHost(a: string, b: string): boolean {
  const a6 = a.includes(":") ? parseIPv6(a) : null;
  const b6 = b.includes(":") ? parseIPv6(b) : null;
  if (a6 && b6) return a6.every((x, i) => x === b6[i]);
  return a === b;
}

Deno.test("fuzz socks5: server handshake round-trips any request on any split", async () => {
  await fc.assert(
    fc.asyncProperty(
      destArb,
      credArb,
      fc.uint8Array({ maxLength: 64 }),
      splitArb,
      async (dest, cred, leftover, sizes) => {
        const src = splitSource(clientBytes(dest, cred, leftover), sizes);
        const out = await clean(() =>
          acceptSocks5(src, {
            authenticate: cred ? (u, p) => u === cred.user && p === cred.pass : undefined,
          })
        );
        assertEquals(out.kind, "ok", out.kind === "error" ? out.error.message : "");
        if (out.kind !== "ok") return;
        assert(sameHost(out.value.dest.host, dest.host), `${out.value.dest.host} != ${dest.host}`);
        assertEquals(out.value.dest.port, dest.port);
        assertEquals(out.value.username, cred ? cred.user : undefined);
        // Leftover read past the request comes back whole (the rest is still in the source).
        const rest = new Uint8Array(1024);
        const tail = [...out.value.leftover];
        while (true) {
          const n = await src.read(rest);
          if (n === null) break;
          tail.push(...rest.subarray(0, n));
        }
        assertEquals(tail, [...leftover]);
      },
    ),
    fuzzParams(300),
  );
});

/** A server's answer: method choice, optional auth status, reply with a bound address. */
function serverBytes(
  method: number,
  reply: number,
  bound: HostPort,
  leftover: Uint8Array,
): Uint8Array {
  return cat(
    Uint8Array.of(5, method),
    method === Method.userPass ? Uint8Array.of(1, 0) : new Uint8Array(0),
    Uint8Array.of(5, reply, 0),
    encodeAddress(bound),
    leftover,
  );
}

Deno.test("fuzz socks5: client parses any reply code and bound address on any split", async () => {
  await fc.assert(
    fc.asyncProperty(
      destArb,
      destArb,
      fc.constantFrom(Method.noAuth, Method.userPass),
      fc.integer({ min: 0, max: 255 }),
      fc.uint8Array({ maxLength: 64 }),
      splitArb,
      async (dest, bound, method, reply, leftover, sizes) => {
        const src = splitSource(serverBytes(method, reply, bound, leftover), sizes);
        const out = await clean(() => socks5Connect(src, dest, { username: "u", password: "p" }));
        if (reply === Reply.succeeded) {
          assertEquals(out.kind, "ok", out.kind === "error" ? out.error.message : "");
          if (out.kind !== "ok") return;
          assert(sameHost(out.value.bound.host, bound.host));
          assertEquals(out.value.bound.port, bound.port);
          assert(out.value.leftover.length <= leftover.length);
        } else {
          assertEquals(out.kind, "error");
          if (out.kind !== "error") return;
          assert(out.error instanceof Socks5ReplyError, out.error.message);
          assertEquals((out.error as Socks5ReplyError).reply, reply);
        }
      },
    ),
    fuzzParams(300),
  );
});

Deno.test("fuzz socks5: mutated client handshakes end cleanly (result, typed error, reply)", async () => {
  await fc.assert(
    fc.asyncProperty(
      destArb,
      credArb,
      mutationArb,
      splitArb,
      fc.boolean(),
      async (dest, cred, muts, sizes, needAuth) => {
        const input = mutate(clientBytes(dest, cred, new Uint8Array(0)), muts);
        const src = splitSource(input, sizes);
        const out = await clean(() =>
          acceptSocks5(src, {
            authenticate: needAuth ? (u, p) => u === "u" && p === "p" : undefined,
            allowNoAuth: needAuth && !cred,
          })
        );
        // Whatever was written back is a well-formed SOCKS5/RFC 1929 message prefix.
        const w = src.output();
        if (w.length > 0) assert(w[0] === 5 || w[0] === 1, `reply starts with ${w[0]}`);
        if (out.kind === "ok") assert(out.value.dest.port >= 0 && out.value.dest.port <= 65535);
      },
    ),
    fuzzParams(400),
  );
});

Deno.test("fuzz socks5: mutated server replies end cleanly in the client", async () => {
  await fc.assert(
    fc.asyncProperty(
      destArb,
      destArb,
      fc.integer({ min: 0, max: 8 }),
      mutationArb,
      splitArb,
      async (dest, bound, reply, muts, sizes) => {
        const input = mutate(serverBytes(Method.noAuth, reply, bound, new Uint8Array(0)), muts);
        await clean(() => socks5Connect(splitSource(input, sizes), dest));
      },
    ),
    fuzzParams(400),
  );
});

Deno.test("fuzz socks5: random bytes to server and client end cleanly", async () => {
  await fc.assert(
    fc.asyncProperty(bytesArb, splitArb, async (input, sizes) => {
      // Starting with a plausible greeting makes the random tail reach deeper states.
      for (const data of [input, cat(Uint8Array.of(5, 1, 0, 5, 1, 0), input)]) {
        await clean(() => acceptSocks5(splitSource(data, sizes)));
        await clean(() =>
          socks5Connect(splitSource(data, sizes), { host: "example.org", port: 80 })
        );
      }
    }),
    fuzzParams(300),
  );
});

Deno.test("fuzz socks5: every address type in a reply round-trips exactly", () => {
  // The codec's own table (ATYP 1/3/4) is what the properties above exercise.
  assertEquals(encodeAddress({ host: "1.2.3.4", port: 80 })[0], AddrType.ipv4);
  assertEquals(encodeAddress({ host: "::1", port: 80 })[0], AddrType.ipv6);
  assertEquals(encodeAddress({ host: "a.example", port: 80 })[0], AddrType.domain);
});
