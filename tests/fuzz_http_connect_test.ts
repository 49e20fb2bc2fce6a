/**
 * Property-based tests of the HTTP CONNECT client (lib/http `httpConnect`, used by chain
 * hops and egress proxies): any 2xx answer on any read split hands back exactly the bytes
 * after it; any other status is an `HttpConnectError` carrying it; truncated, mutated and
 * random answers end in a clean typed error, never a hang or a crash.
 */

import fc from "./_fc.ts";
import { assert, assertEquals } from "./_assert.ts";
import { httpConnect, HttpConnectError, reasonForConnectStatus } from "../lib/http/mod.ts";
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
const dest = { host: "example.org", port: 443 };

const headerArb = fc.array(
  fc.tuple(
    fc.stringMatching(/^[A-Za-z][A-Za-z0-9-]{0,15}$/),
    fc.stringMatching(/^[ -~]{0,40}$/).map((v) => v.trim()),
  ),
  { maxLength: 6 },
);

function answer(status: number, headers: [string, string][], tail: Uint8Array): Uint8Array {
  const head = `HTTP/1.1 ${status} Whatever\r\n` +
    headers.map(([k, v]) => `${k}: ${v}\r\n`).join("") + "\r\n";
  return cat(enc.encode(head), tail);
}

Deno.test("fuzz http connect: any answer on any split: 2xx keeps the tail, others typed", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 100, max: 599 }).filter((s) => s >= 200),
      headerArb,
      fc.uint8Array({ maxLength: 64 }),
      splitArb,
      async (status, headers, tail, sizes) => {
        const src = splitSource(answer(status, headers, tail), sizes);
        const out = await clean(() =>
          httpConnect(src, dest, { auth: { username: "u", password: "p" } })
        );
        // The request went out whole, with the credentials.
        const sent = new TextDecoder().decode(src.output());
        assert(sent.startsWith("CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n"));
        assert(sent.includes("Proxy-Authorization: Basic dTpw\r\n") && sent.endsWith("\r\n\r\n"));
        if (status <= 299) {
          assertEquals(out.kind, "ok", out.kind === "error" ? out.error.message : "");
          if (out.kind !== "ok") return;
          const rest = [...out.value.leftover];
          const buf = new Uint8Array(64);
          for (let n; (n = await src.read(buf)) !== null;) rest.push(...buf.subarray(0, n));
          assertEquals(rest, [...tail]);
        } else {
          assert(out.kind === "error" && out.error instanceof HttpConnectError, String(status));
          assertEquals((out.error as HttpConnectError).status, status);
          assertEquals(out.error.reason, reasonForConnectStatus(status));
        }
      },
    ),
    fuzzParams(300),
  );
});

Deno.test("fuzz http connect: truncated, mutated and random answers end cleanly", async () => {
  await fc.assert(
    fc.asyncProperty(
      headerArb,
      fc.nat(),
      mutationArb,
      bytesArb,
      splitArb,
      async (headers, at, muts, garbage, sizes) => {
        const whole = answer(200, headers, new Uint8Array(0));
        const cut = await clean(() =>
          httpConnect(splitSource(whole.subarray(0, at % whole.length), sizes), dest)
        );
        assertEquals(cut.kind, "error", "a truncated answer is not a tunnel");
        for (const input of [mutate(whole, muts), garbage]) {
          await clean(() => httpConnect(splitSource(input, sizes), dest));
        }
      },
    ),
    fuzzParams(300),
  );
});

Deno.test("http connect: a 2xx head far longer than the reader's first buffer keeps the tail", async () => {
  // The answer's reader starts at 512 bytes: a proxy's long head (~10 KB, one field line of
  // 3,000 bytes among them, under the 16 KiB limit) on any read size is read whole, and the
  // bytes after it kept.
  const headers: [string, string][] = Array.from(
    { length: 28 },
    (_, i) => [`X-Field-${i}`, "v".repeat(250)],
  );
  headers.splice(3, 0, ["X-Long", "w".repeat(3000)]);
  const tail = enc.encode("first bytes of the tunnel");
  for (const sizes of [[7], [512], [4096]]) {
    const src = splitSource(answer(200, headers, tail), sizes);
    const { leftover } = await httpConnect(src, dest);
    const rest = [...leftover];
    const buf = new Uint8Array(64);
    for (let n; (n = await src.read(buf)) !== null;) rest.push(...buf.subarray(0, n));
    assertEquals(rest, [...tail], `reads of ${sizes[0]}`);
  }
});
