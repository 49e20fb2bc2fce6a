/**
 * Why a certificate would be refused, found by reading it: Deno 2.9.6's node:tls reports every
 * refused client certificate as UNABLE_TO_VERIFY_LEAF_SIGNATURE (an expired one, one made for
 * servers only, one from a stranger's CA alike) and sends the client no alert, so the server
 * reads the certificate itself to log the real failure, and a client checks its own certificate
 * when it loads it (it would otherwise only see the connection close after the handshake).
 * @module
 */

import { X509Certificate } from "node:crypto";

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

function x509(cert: Uint8Array | string): X509Certificate | null {
  try {
    return new X509Certificate(cert);
  } catch {
    return null; // not a certificate we can read: the caller keeps its generic finding
  }
}

/**
 * What is wrong with `cert` (DER or PEM) for `purpose` at `now`, checked against `caPem`
 * when given: not issued by it ("unknown-ca"), outside its validity ("expired"), or an
 * extended key usage without the purpose ("wrong-usage"). Undefined when none of these.
 */
export function certProblem(
  cert: Uint8Array | string,
  purpose: "clientAuth" | "serverAuth",
  opts: { caPem?: string; now?: Date } = {},
): CertFinding | undefined {
  const c = x509(cert);
  if (!c) return undefined;
  if (opts.caPem !== undefined) {
    const ca = x509(opts.caPem);
    if (ca && !(c.checkIssued(ca) && c.verify(ca.publicKey))) {
      return { problem: "unknown-ca", detail: `issued by ${c.issuer.replace(/\n/g, ", ")}` };
    }
  }
  const now = opts.now ?? new Date();
  if (now > new Date(c.validTo)) return { problem: "expired", detail: `expired ${c.validTo}` };
  if (now < new Date(c.validFrom)) {
    return { problem: "expired", detail: `not valid before ${c.validFrom}` };
  }
  if (!allowsPurpose(new Uint8Array(c.raw), purpose)) {
    return {
      problem: "wrong-usage",
      detail: `its extended key usage does not include ${purpose}`,
    };
  }
  return undefined;
}
