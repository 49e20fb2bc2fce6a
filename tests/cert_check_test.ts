/**
 * lib/transport/cert_check reads a certificate's validity dates from its DER by hand (node:crypto's
 * X509Certificate did, and is the oracle here): the same notBefore/notAfter and the same
 * OpenSSL-style date text as `validFrom`/`validTo` for every certificate of the system's store
 * and for a self-signed one valid past 2050 (GeneralizedTime); the findings on the test PKI
 * (expired, server-only, fine); and truncated, random or oversized bytes are read as "not a
 * certificate" (undefined), never a throw.
 */

import { X509Certificate } from "node:crypto";
import { assert, assertEquals } from "./_assert.ts";
import fc from "./_fc.ts";
import { makePki } from "./_tls.ts";
import { run } from "./_util.ts";
import { certProblem, certValidity, opensslDate } from "../lib/transport/cert_check.ts";

const der = (pem: string) => new Uint8Array(new X509Certificate(pem).raw);

function sameAsNode(pem: string, what: string): void {
  const x = new X509Certificate(pem);
  const v = certValidity(new Uint8Array(x.raw));
  assert(v, `${what}: not read`);
  assertEquals(v.notBefore.getTime(), new Date(x.validFrom).getTime(), `${what}: notBefore`);
  assertEquals(v.notAfter.getTime(), new Date(x.validTo).getTime(), `${what}: notAfter`);
  assertEquals(opensslDate(v.notBefore), x.validFrom, what);
  assertEquals(opensslDate(v.notAfter), x.validTo, what);
}

/** The system store's certificates (Debian's /etc/ssl/certs), none where there is none. */
function storePems(): string[] {
  const dir = "/etc/ssl/certs";
  try {
    return [...Deno.readDirSync(dir)].filter((e) => e.name.endsWith(".pem")).sort((a, b) =>
      a.name < b.name ? -1 : 1
    ).map((e) => Deno.readTextFileSync(`${dir}/${e.name}`));
  } catch {
    return [];
  }
}

Deno.test("cert_check: validity dates as node:crypto reads them (system store, past 2050)", async () => {
  const store = storePems();
  store.forEach((pem, i) => sameAsNode(pem, `store certificate ${i}`));
  const tmp = await Deno.makeTempDir({ prefix: "warren-cert-" });
  try {
    const r = await run("openssl", [
      ..."req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes".split(" "),
      ...["-days", "20000", "-subj", "/CN=far", "-keyout", `${tmp}/k.pem`, "-out", `${tmp}/c.pem`],
    ]);
    assertEquals(r.code, 0, r.stderr);
    const pem = Deno.readTextFileSync(`${tmp}/c.pem`);
    sameAsNode(pem, "20,000 days");
    assert(certValidity(der(pem))!.notAfter.getUTCFullYear() > 2050);
    // PEM in, a chain's first certificate read, as node's X509Certificate does.
    assertEquals(certProblem(pem + pem, "clientAuth"), undefined);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
  console.log(`${store.length} certificates of the system store compared`);
});

Deno.test("cert_check: findings on the test PKI", async () => {
  const pki = await makePki();
  try {
    const read = (p: string) => Deno.readTextFileSync(p);
    const expired = certProblem(read(pki.expiredCert), "clientAuth");
    assertEquals(expired, { problem: "expired", detail: "expired Feb  1 00:00:00 2020 GMT" });
    assertEquals(certProblem(read(pki.serverCert), "clientAuth")?.problem, "wrong-usage");
    assertEquals(certProblem(read(pki.serverCert), "serverAuth"), undefined);
    assertEquals(certProblem(read(pki.clientCert), "clientAuth"), undefined);
    assertEquals(certProblem(read(pki.peerCert), "clientAuth"), undefined);
    const early = certProblem(read(pki.clientCert), "clientAuth", { now: new Date(0) });
    assertEquals(early?.problem, "expired");
    assert(/^not valid before \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4} GMT$/.test(early!.detail));
    // Truncated at every length: not read (undefined), never a throw or a wrong finding.
    const full = der(read(pki.expiredCert));
    for (let i = 0; i < full.length; i++) {
      assertEquals(certValidity(full.subarray(0, i)), null, `cut at ${i}`);
    }
    assertEquals(
      certProblem("-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----", "clientAuth"),
      undefined,
    );
    assertEquals(certProblem("no pem", "clientAuth"), undefined);
  } finally {
    await pki.remove();
  }
});

Deno.test("cert_check: random and mutated bytes never throw", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (b) => {
      certValidity(b);
      certProblem(b, "serverAuth");
    }),
    { numRuns: 5_000 },
  );
  // A validity whose time is 200,000 bytes long (a certificate file or a peer's DER): not
  // read, never a throw (its text was spread into String.fromCharCode: a RangeError).
  const len = (n: number) => n < 0x80 ? [n] : [0x83, n >> 16, (n >> 8) & 255, n & 255];
  const el = (tag: number, body: number[]) => [tag, ...len(body.length), ...body];
  const longTime = el(0x17, new Array(200_000).fill(0x31));
  const tbs = el(0x30, [...el(0x02, [1]), ...el(0x30, []), ...el(0x30, []), ...el(0x30, longTime)]);
  const huge = new Uint8Array(el(0x30, tbs));
  assertEquals(certValidity(huge), null);
  assertEquals(certProblem(huge, "clientAuth"), undefined);
  // A real certificate with one byte changed: read or not, never a throw.
  const pem = storePems()[0];
  if (pem === undefined) return; // no store here
  const base = der(pem);
  fc.assert(
    fc.property(fc.nat(base.length - 1), fc.nat(255), (at, v) => {
      const b = base.slice();
      b[at] = v;
      certValidity(b);
    }),
    { numRuns: 3_000 },
  );
});
