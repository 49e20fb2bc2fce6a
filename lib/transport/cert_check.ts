/**
 * Why a certificate would be refused, found by reading it: Deno 2.9.6's node:tls reports every
 * refused client certificate as UNABLE_TO_VERIFY_LEAF_SIGNATURE (an expired one, one made for
 * servers only, one from a stranger's CA alike) and sends the client no alert, so the server
 * reads the certificate itself to log the real failure, and a client checks its own certificate
 * when it loads it (it would otherwise only see the connection close after the handshake).
 *
 * The validity dates and the extended key usage are read from the DER here, by hand, so a
 * client loading its certificate loads no node layer (~2 MB of heap, bench/RESULTS.md
 * weight2); whether a CA issued it needs its signature checked: lib/transport/cert_issuer.ts,
 * loaded by the mutual-TLS listener only.
 * @module
 */

/** What is wrong with a certificate for its use, or why it is not trusted. */
export type CertProblem = "expired" | "wrong-usage" | "unknown-ca";

/** A problem and its one-line explanation. */
export interface CertFinding {
  problem: CertProblem;
  detail: string;
}

// DER of the OIDs involved (tag 06, length, value).
const ekuExtensionOid = [0x06, 0x03, 0x55, 0x1d, 0x25]; // 2.5.29.37 extendedKeyUsage
const purposeOids: Record<"clientAuth" | "serverAuth", number[]> = {
  serverAuth: [0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01],
  clientAuth: [0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02],
};
const anyPurposeOid = [0x06, 0x04, 0x55, 0x1d, 0x25, 0x00]; // 2.5.29.37.0

function indexOf(hay: Uint8Array, needle: number[], from = 0): number {
  outer: for (let i = from; i <= hay.length - needle.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

/** Length of a DER element at `at` (its length octets), as [content start, content length]. */
function derLength(der: Uint8Array, at: number): [number, number] {
  const first = der[at + 1];
  if (first < 0x80) return [at + 2, first];
  const n = first & 0x7f;
  let len = 0;
  for (let i = 0; i < n; i++) len = (len << 8) | der[at + 2 + i];
  return [at + 2 + n, len];
}

/**
 * The extended key usage extension's value (the DER of its OIDs), or null when the
 * certificate has none (then any purpose is allowed).
 */
function extendedKeyUsage(der: Uint8Array): Uint8Array | null {
  const at = indexOf(der, ekuExtensionOid);
  if (at < 0) return null;
  let i = at + ekuExtensionOid.length;
  if (der[i] === 0x01) i += 3; // critical BOOLEAN
  if (der[i] !== 0x04) return null; // not the OCTET STRING expected: treat as absent
  const [start, len] = derLength(der, i);
  return der.subarray(start, start + len);
}

/** Whether the certificate may be used for `purpose` (no EKU extension: any purpose). */
export function allowsPurpose(der: Uint8Array, purpose: "clientAuth" | "serverAuth"): boolean {
  const eku = extendedKeyUsage(der);
  return eku === null || indexOf(eku, purposeOids[purpose]) >= 0 ||
    indexOf(eku, anyPurposeOid) >= 0;
}

/** DER tags read below. */
const derSequence = 0x30, derInteger = 0x02, derUtcTime = 0x17, derGeneralizedTime = 0x18;
/** `[0] EXPLICIT` (the certificate's version, optional). */
const derVersionTag = 0xa0;
/** The longest DER time: GeneralizedTime `YYYYMMDDHHMMSSZ` (UTCTime is 13 bytes). */
const derTimeMaxBytes = 15;

/** The DER of the first certificate of `cert` (DER already, or PEM), or null. */
function certificateDer(cert: Uint8Array | string): Uint8Array | null {
  if (typeof cert !== "string") return cert;
  const m = /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]*)-----END CERTIFICATE-----/.exec(cert);
  if (!m) return null;
  try {
    return Uint8Array.from(atob(m[1].replace(/\s+/g, "")), (c) => c.charCodeAt(0));
  } catch {
    return null; // not base64
  }
}

/** The element at `at` with tag `tag`: [content start, content end], or null past `end`. */
function element(der: Uint8Array, at: number, tag: number, end: number): [number, number] | null {
  if (at + 2 > end || der[at] !== tag) return null;
  const first = der[at + 1];
  const n = first < 0x80 ? 0 : first & 0x7f;
  if (n > 3 || at + 2 + n > end) return null; // lengths up to 16 MiB: far past a certificate
  const [start, len] = derLength(der, at);
  return start + len <= end ? [start, start + len] : null;
}

/** A UTCTime or GeneralizedTime element's instant (DER: UTC, seconds, `Z`), or null. */
function derTime(der: Uint8Array, at: number, end: number): [Date, number] | null {
  const tag = der[at];
  const el = element(der, at, tag, end);
  if (!el || (tag !== derUtcTime && tag !== derGeneralizedTime)) return null;
  // Longer is no DER time (and spread into fromCharCode, 125k bytes and up would throw).
  if (el[1] - el[0] > derTimeMaxBytes) return null;
  const text = String.fromCharCode(...der.subarray(el[0], el[1]));
  const m = (tag === derUtcTime ? /^(\d{2})(\d{10})Z$/ : /^(\d{4})(\d{10})Z$/).exec(text);
  if (!m) return null;
  // UTCTime years: 50-99 are 19xx, 00-49 are 20xx (RFC 5280 4.1.2.5.1).
  const year = tag === derUtcTime
    ? Number(m[1]) + (Number(m[1]) >= 50 ? 1900 : 2000)
    : Number(m[1]);
  const [mo, d, h, mi, s] = m[2].match(/\d{2}/g)!.map(Number);
  const date = new Date(Date.UTC(year, mo - 1, d, h, mi, s));
  return date.getUTCMonth() === mo - 1 && date.getUTCDate() === d ? [date, el[1]] : null;
}

/**
 * notBefore and notAfter of a certificate's DER (its TBSCertificate's validity), or null when
 * it is not one as far as that.
 */
export function certValidity(der: Uint8Array): { notBefore: Date; notAfter: Date } | null {
  const cert = element(der, 0, derSequence, der.length);
  const tbs = cert && element(der, cert[0], derSequence, cert[1]);
  if (!tbs) return null;
  let at = tbs[0];
  const skip = (tag: number) => {
    const el = element(der, at, tag, tbs[1]);
    if (el) at = el[1];
    return el !== null;
  };
  if (der[at] === derVersionTag && !skip(derVersionTag)) return null;
  // serialNumber, signature (AlgorithmIdentifier), issuer (Name), then validity.
  if (!skip(derInteger) || !skip(derSequence) || !skip(derSequence)) return null;
  const validity = element(der, at, derSequence, tbs[1]);
  const notBefore = validity && derTime(der, validity[0], validity[1]);
  const notAfter = notBefore && derTime(der, notBefore[1], validity[1]);
  return notAfter ? { notBefore: notBefore[0], notAfter: notAfter[0] } : null;
}

const monthNames = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(" ");

/** A date as OpenSSL prints a certificate's (node's `validTo`): `Feb  1 00:00:00 2020 GMT`. */
export function opensslDate(d: Date): string {
  const two = (n: number) => String(n).padStart(2, "0");
  return `${monthNames[d.getUTCMonth()]} ${String(d.getUTCDate()).padStart(2, " ")} ` +
    `${two(d.getUTCHours())}:${two(d.getUTCMinutes())}:${two(d.getUTCSeconds())} ` +
    `${d.getUTCFullYear()} GMT`;
}

/**
 * What is wrong with `cert` (DER or PEM; of a chain, the first) for `purpose` at `now`:
 * outside its validity ("expired"), or an extended key usage without the purpose
 * ("wrong-usage"). Undefined when neither, or when `cert` cannot be read (the caller keeps
 * its generic finding). Whether a CA issued it: lib/transport/cert_issuer.ts.
 */
export function certProblem(
  cert: Uint8Array | string,
  purpose: "clientAuth" | "serverAuth",
  opts: { now?: Date } = {},
): CertFinding | undefined {
  const der = certificateDer(cert);
  const validity = der && certValidity(der);
  if (!der || !validity) return undefined;
  const now = opts.now ?? new Date();
  if (now > validity.notAfter) {
    return { problem: "expired", detail: `expired ${opensslDate(validity.notAfter)}` };
  }
  if (now < validity.notBefore) {
    return { problem: "expired", detail: `not valid before ${opensslDate(validity.notBefore)}` };
  }
  if (!allowsPurpose(der, purpose)) {
    return {
      problem: "wrong-usage",
      detail: `its extended key usage does not include ${purpose}`,
    };
  }
  return undefined;
}
