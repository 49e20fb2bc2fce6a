/**
 * The cluster flags tunnel-server and depot-server share (`--registry`, `--cluster-tls-*`),
 * apart from either service's own config so that depot-server does not load lib/tunnel at
 * start for them (issue 20, process weight: every module loaded is heap each full GC marks).
 * @module
 */

import { FlagError, type FlagValues } from "../../lib/config/mod.ts";
import type { ClusterTls } from "../../lib/tunnel/cluster.ts";
import { loadTlsClientConfig, loadTlsServerConfig, TlsError } from "../../lib/transport/mod.ts";

/** `--cluster-tls-*`: TLS on the links between instances (etcd-style peer TLS). */
export const clusterTlsFlags = {
  "cluster-tls-cert": {
    kind: "string",
    arg: "file",
    help: "TLS on the cluster's links: this instance's certificate chain (PEM), served on " +
      "--cluster-listen and, with --cluster-tls-ca, presented to the peers it dials",
  },
  "cluster-tls-key": { kind: "string", arg: "file", help: "private key of --cluster-tls-cert" },
  "cluster-tls-ca": {
    kind: "string",
    arg: "file",
    help: "trust this CA (PEM) for the peers' certificates, and require one of every peer " +
      "(mutual TLS; the certificate then needs serverAuth and clientAuth); default: system CAs",
  },
  "cluster-tls-server-name": {
    kind: "string",
    arg: "name",
    help: "verify the peers' certificates for this name instead of their --advertise host",
  },
} as const;

/**
 * The links' TLS from `--cluster-tls-*` (files read and checked), or undefined.
 */
export function clusterTlsFromFlags(
  f: FlagValues<typeof clusterTlsFlags>,
): ClusterTls | undefined {
  const cert = f["cluster-tls-cert"], key = f["cluster-tls-key"], ca = f["cluster-tls-ca"];
  if (!cert && !key) {
    if (ca || f["cluster-tls-server-name"]) {
      throw new FlagError(
        "cluster-tls-cert",
        "--cluster-tls-ca/-server-name need --cluster-tls-cert",
      );
    }
    return undefined;
  }
  if (!cert || !key) {
    throw new FlagError("cluster-tls-cert", "--cluster-tls-cert and --cluster-tls-key go together");
  }
  try {
    return {
      server: loadTlsServerConfig({ certFile: cert, keyFile: key, caFile: ca }),
      client: loadTlsClientConfig({
        caFile: ca,
        serverName: f["cluster-tls-server-name"],
        ...(ca ? { certFile: cert, keyFile: key } : {}),
      }),
    };
  } catch (err) {
    if (err instanceof TlsError) {
      throw new FlagError("cluster-tls-cert", `--cluster-tls-*: ${err.message}`);
    }
    throw err;
  }
}

/** A `--registry` value: redis:// or rediss:// with a host and port. */
export function parseRegistry(v: string): { url: string; addr: string } {
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw new FlagError("registry", "--registry: not a URL (redis://[:password@]host:port[/db])");
  }
  if ((u.protocol !== "redis:" && u.protocol !== "rediss:") || !u.hostname || !u.port) {
    throw new FlagError("registry", "--registry: expected redis://[:password@]host:port[/db]");
  }
  if (!/^\/?\d*$/.test(u.pathname)) {
    throw new FlagError("registry", "--registry: the database is a number (/0 ... /15)");
  }
  return { url: v, addr: `${u.protocol}//${u.host}${u.pathname}` };
}
