/**
 * Whether a CA issued a certificate (its issuer name and signature), for the mutual-TLS
 * listener's log: node:crypto's X509Certificate checks the signature. A module of its own so
 * only that listener loads node:crypto (lib/transport/tls.ts imports it when it starts one).
 * @module
 */

import { X509Certificate } from "node:crypto";
import type { CertFinding } from "./cert_check.ts";

function x509(cert: Uint8Array | string): X509Certificate | null {
  try {
    return new X509Certificate(cert);
  } catch {
    return null; // not a certificate we can read: the caller keeps its generic finding
  }
}

/**
 * "unknown-ca" when `cert` (DER or PEM) was not issued by `caPem` (issuer name and signature);
 * undefined when it was, or when either cannot be read.
 */
export function issuerProblem(cert: Uint8Array | string, caPem: string): CertFinding | undefined {
  const c = x509(cert);
  const ca = x509(caPem);
  if (!c || !ca || (c.checkIssued(ca) && c.verify(ca.publicKey))) return undefined;
  return { problem: "unknown-ca", detail: `issued by ${c.issuer.replace(/\n/g, ", ")}` };
}
