/**
 * Property-based tests of the SOCKS4/4a codec on the SOCKS listener (lib/socks5 `acceptSocks`):
 * any request round-trips on any read split with the bytes after it kept; truncated input
 * ends in EOF without an answer; mutated and random input ends in a result, a typed error or
 * the one defined refusal (0x5B); with a password required SOCKS4 is always refused.
 */

import fc from "./_fc.ts";
import { assert, assertEquals } from "./_assert.ts";
import { acceptSocks, Socks4Reply } from "../lib/socks5/mod.ts";
import { UnexpectedEofError } from "../lib/net/mod.ts";
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
const domainArb = fc.array(labelArb, { minLength: 1, maxLength: 6 })
  .map((ls) => ls.join(".") + ".example")
  .filter((d) => d.length <= 255);
/** A SOCKS4 destination (an IPv4 literal outside 0.0.0.x) or a SOCKS4a name. */
const destArb = fc.record({
  host: fc.oneof(fc.ipV4().filter((ip) => !ip.startsWith("0.0.0.")), domainArb),
  port: fc.integer({ min: 0, max: 65535 }),
});
const userIdArb = fc.string({ unit: "grapheme-ascii", maxLength: 60 })
  .filter((s) => !s.includes("\0"));

/** What curl --socks4 / --socks4a sends: VN CD PORT IP USERID NUL [NAME NUL], then payload. */
function requestBytes(
  dest: { host: string; port: number },
  userId: string,
  leftover: Uint8Array,
  cmd = 1,
): Uint8Array {
  const v4 = /^\d+\.\d+\.\d+\.\d+$/.test(dest.host) ? dest.host.split(".").map(Number) : null;
  const head = Uint8Array.of(4, cmd, dest.port >> 8, dest.port & 0xff, ...(v4 ?? [0, 0, 0, 1]));
  const name = v4 ? new Uint8Array(0) : cat(enc.encode(dest.host), Uint8Array.of(0));
  return cat(head, enc.encode(userId), Uint8Array.of(0), name, leftover);
}

async function rest(src: { read(p: Uint8Array): Promise<number | null> }): Promise<number[]> {
  const out: number[] = [];
  const buf = new Uint8Array(256);
  while (true) {
    const n = await src.read(buf);
    if (n === null) return out;
    out.push(...buf.subarray(0, n));
  }
}

Deno.test("fuzz socks4: any SOCKS4/4a request round-trips on any split, payload kept", async () => {
  await fc.assert(
    fc.asyncProperty(
      destArb,
      userIdArb,
      fc.uint8Array({ maxLength: 64 }),
      splitArb,
      async (dest, userId, leftover, sizes) => {
        const src = splitSource(requestBytes(dest, userId, leftover), sizes);
        const out = await clean(() => acceptSocks(src));
        assertEquals(out.kind, "ok", out.kind === "error" ? out.error.message : "");
        if (out.kind !== "ok") return;
        assertEquals(out.value.version, 4);
        assertEquals(out.value.dest, { host: dest.host, port: dest.port });
        assertEquals(out.value.socks4a, !/^\d+\.\d+\.\d+\.\d+$/.test(dest.host));
        assertEquals(out.value.username, undefined, "a SOCKS4 user id is not an identity");
        assertEquals([...out.value.leftover, ...await rest(src)], [...leftover]);
        assertEquals(src.output().length, 0, "the reply is the caller's, after its dial");
      },
    ),
    fuzzParams(300),
  );
});

Deno.test("fuzz socks4: every truncation ends in EOF, unanswered", async () => {
  await fc.assert(
    fc.asyncProperty(destArb, userIdArb, fc.nat(), splitArb, async (dest, userId, at, sizes) => {
      const whole = requestBytes(dest, userId, new Uint8Array(0));
      const src = splitSource(whole.subarray(0, at % whole.length), sizes);
      const out = await clean(() => acceptSocks(src));
      assertEquals(out.kind, "error");
      if (out.kind !== "error") return;
      assert(out.error instanceof UnexpectedEofError, out.error.message);
      assertEquals(src.output().length, 0);
    }),
    fuzzParams(200),
  );
});

Deno.test("fuzz socks4: refusals are 0x5B (BIND, long fields, password required)", async () => {
  await fc.assert(
    fc.asyncProperty(destArb, userIdArb, splitArb, async (dest, userId, sizes) => {
      const bind = splitSource(requestBytes(dest, userId, new Uint8Array(0), 2), sizes);
      const b = await clean(() => acceptSocks(bind));
      assertEquals(b.kind === "error" && b.error.reason, "command-not-supported");
      assertEquals([...bind.output()], [0, Socks4Reply.rejected, 0, 0, 0, 0, 0, 0]);

      const authed = splitSource(requestBytes(dest, userId, new Uint8Array(0)), sizes);
      const a = await clean(() => acceptSocks(authed, { authenticate: () => true }));
      assertEquals(a.kind === "error" && a.error.reason, "auth-required");
      assertEquals(authed.output()[1], Socks4Reply.rejected);
    }),
    fuzzParams(100),
  );
  // A user id (or name) that never ends is cut at 255 bytes and refused, not buffered.
  const long = splitSource(
    cat(Uint8Array.of(4, 1, 0, 80, 1, 2, 3, 4), new Uint8Array(4096).fill(65)),
    [7],
  );
  const out = await clean(() => acceptSocks(long));
  assertEquals(out.kind === "error" && out.error.reason, "too-long");
  assertEquals(long.output()[1], Socks4Reply.rejected);
  const empty = splitSource(Uint8Array.of(4, 1, 0, 80, 0, 0, 0, 9, 0, 0), [3]);
  const e = await clean(() => acceptSocks(empty));
  assertEquals(e.kind === "error" && e.error.reason, "empty-domain");
  // A SOCKS4a name that is not UTF-8, or holds a control character, is refused at once.
  for (const name of [[0xff, 0x61], [0x61, 0x0d, 0x62]]) {
    const bad = splitSource(Uint8Array.of(4, 1, 0, 80, 0, 0, 0, 9, 0, ...name, 0), [3]);
    const b = await clean(() => acceptSocks(bad));
    assertEquals(b.kind === "error" && b.error.reason, "bad-domain");
    assertEquals(bad.output()[1], Socks4Reply.rejected);
  }
});

Deno.test("fuzz socks4: mutated and random requests end cleanly", async () => {
  await fc.assert(
    fc.asyncProperty(
      destArb,
      userIdArb,
      mutationArb,
      splitArb,
      bytesArb,
      async (dest, userId, muts, sizes, garbage) => {
        for (
          const input of [
            mutate(requestBytes(dest, userId, new Uint8Array(0)), muts),
            cat(Uint8Array.of(4), garbage),
          ]
        ) {
          const src = splitSource(input, sizes);
          const out = await clean(() => acceptSocks(src));
          const w = src.output();
          // Answered at most once, with a SOCKS4 (VN 0) or SOCKS5 (VER 5 / RFC 1929 1) message.
          if (w.length > 0) assert(w[0] === 0 || w[0] === 5 || w[0] === 1, `reply ${w[0]}`);
          if (out.kind === "ok" && out.value.version === 4) {
            assert(out.value.dest.host.length > 0 && w.length === 0);
          }
        }
      },
    ),
    fuzzParams(400),
  );
});
