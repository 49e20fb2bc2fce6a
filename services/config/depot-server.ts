/**
 * depot-server's flags and their validation: the one check a start, `--check-config` and a
 * reload run (addresses, limits, the default exit's name, token and TLS files).
 * @module
 */

import { minSecretChars } from "../../lib/net/secret.ts";
import { FlagError } from "../../lib/config/mod.ts";
import { tlsServerFlags, tlsServerFromFlags, transportFlags } from "../../lib/cli_security.ts";
import {
  defaultControlPort,
  defaultSocksPort,
  defaultTunnelPort,
  depotOpenProblem,
  exitNamePattern,
} from "../../lib/depot/mod.ts";
import type { TlsServerConfig } from "../../lib/transport/mod.ts";
import type { ServiceFlags, ValidateContext } from "../_kit.ts";
import { clusterTlsFlags, clusterTlsFromFlags, parseRegistry } from "./cluster.ts";
import type { ClusterTls } from "../../lib/tunnel/cluster.ts";

/** depot-server's command line. */
export const command = {
  name: "depot-server",
  summary: "reverse SOCKS5 proxy: SOCKS clients here, connections exit at depot-local",
  flags: {
    control: {
      kind: "hostport",
      arg: "host:port",
      default: `127.0.0.1:${defaultControlPort}`,
      env: "DEPOT_CONTROL",
      help: "control listener depot-locals dial",
    },
    socks: {
      kind: "hostport",
      arg: "host:port",
      default: `127.0.0.1:${defaultSocksPort}`,
      env: "DEPOT_SOCKS",
      help: "SOCKS5 listener for clients",
    },
    tunnel: {
      kind: "hostport",
      arg: "host:port",
      default: `127.0.0.1:${defaultTunnelPort}`,
      env: "DEPOT_TUNNEL",
      help: "tunnel listener (one connection per request from depot-local)",
    },
    token: {
      kind: "secret",
      min: minSecretChars,
      arg: "secret",
      env: "DEPOT_TOKEN",
      live: true,
      help: "shared secret depot-locals must present (prefer the env variable or --token-file, " +
        "which SIGHUP re-reads)",
    },
    "allow-open": {
      kind: "boolean",
      help: "allow running without a token, or SOCKS on a non-loopback address",
    },
    ...tlsServerFlags,
    ...transportFlags,
    "default-exit": {
      kind: "string",
      arg: "name",
      default: "default",
      live: true,
      help: "exit used by SOCKS clients that send no username",
    },
    status: {
      kind: "hostport",
      arg: "host:port",
      env: "DEPOT_STATUS",
      help: "serve GET /status (JSON), /metrics and /healthz here (also on --metrics)",
    },
    heartbeat: {
      kind: "duration",
      min: 10,
      default: "2s",
      aliases: ["heartbeat-ms"],
      help: "control heartbeat interval; 3 silent intervals mean the local is dead",
    },
    "pending-timeout": {
      kind: "duration",
      default: "15s",
      aliases: ["pending-timeout-ms"],
      help: "a request without tunnel by then gets reply 0x06",
    },
    "max-pending": {
      kind: "int",
      min: 1,
      default: "512",
      help: "requests waiting for their exit at once; more get reply 0x01",
    },
    "standby-total": {
      kind: "int",
      min: 1,
      default: "512",
      help: "idle standby spare tunnels held across all exits (each an fd, held by the tunnel " +
        "listener beside --max-conns); each exit holds its share (at least 1, at most 64)",
    },
    "max-conns": {
      kind: "int",
      min: 1,
      default: "4096",
      help:
        "connections at once per listener (each relayed connection holds a SOCKS and a tunnel one)",
    },
    "idle-timeout": {
      kind: "duration",
      default: "0",
      aliases: ["idle-timeout-ms"],
      help: "close a relayed connection idle this long (0 = never)",
    },
    "udp-idle-timeout": {
      kind: "duration",
      default: "60s",
      help: "end a SOCKS5 UDP ASSOCIATE when no datagram moved for this long (0 = never)",
    },
    "drain-timeout": {
      kind: "duration",
      default: "2s",
      aliases: ["drain-timeout-ms"],
      help: "on SIGINT/SIGTERM, let live connections finish this long",
    },
    registry: {
      kind: "string",
      arg: "redis://[:password@]host:port[/db]",
      env: "DEPOT_REGISTRY",
      help: "run as one instance of a cluster: which instance holds each exit is kept in this " +
        "Redis, and SOCKS clients of any instance reach exits held by the others",
    },
    "cluster-listen": {
      kind: "hostport",
      arg: "host:port",
      help: "take links from the other instances of the --registry cluster here",
    },
    advertise: {
      kind: "hostport",
      arg: "host:port",
      help: "where the other instances reach --cluster-listen (default: its bound address)",
    },
    "cluster-token": {
      kind: "secret",
      min: minSecretChars,
      arg: "secret",
      env: "DEPOT_CLUSTER_TOKEN",
      help: "shared secret of the cluster's links (every instance the same)",
    },
    // The same TLS on the links as tunnel-server's cluster (etcd-style peer TLS).
    ...clusterTlsFlags,
    workers: {
      kind: "int",
      min: 1,
      max: 64,
      arg: "n",
      default: "1",
      env: "DEPOT_WORKERS",
      help: "run n worker processes on the same SOCKS and control ports (SO_REUSEPORT, Linux), " +
        "each an instance of the --registry cluster with its own tunnel port (announced to " +
        "its locals) and a loopback link port (worker i: port+i-1 of --tunnel/--cluster-listen/--status/--metrics)",
    },
  },
  examples: [
    "DEPOT_TOKEN=s3cret depot-server",
    "depot-server --socks 0.0.0.0:1080 --control 0.0.0.0:7000 --tunnel 0.0.0.0:7001 --status :7080",
    "curl --socks5-hostname 127.0.0.1:1080 http://10.0.0.5/          # via the default exit",
    "curl --proxy socks5h://office:pw@127.0.0.1:1080 http://intranet/  # via exit 'office'",
  ],
} as const;

/** What depot-server runs with, beyond the typed flags. */
export interface DepotServerServiceConfig {
  /** The token depot-locals present ("" = none: any program may become an exit). */
  token: string;
  defaultExit: string;
  tls?: TlsServerConfig;
  /** `--registry`: the Redis URL, and its address without the password for the log. */
  registry?: { url: string; addr: string };
  /** `--cluster-tls-*`: TLS on the links between instances. */
  clusterTls?: ClusterTls;
}

/** depot-server's config from its flags; throws to refuse. */
export function validate(
  f: ServiceFlags<typeof command.flags>,
  ctx: ValidateContext,
): DepotServerServiceConfig {
  const defaultExit = f["default-exit"];
  if (!exitNamePattern.test(defaultExit)) {
    throw new FlagError(
      "default-exit",
      `${ctx.where("default-exit")} must match ${exitNamePattern}`,
    );
  }
  const token = f.token ?? "";
  const open = depotOpenProblem({ token, socks: f.socks, allowOpen: f["allow-open"] ?? false });
  if (open) throw new FlagError(token === "" ? "token" : "socks", open);
  const registry = f.registry ? parseRegistry(f.registry) : undefined;
  if ((f["cluster-listen"] || f["cluster-token"] || f.advertise) && !registry) {
    throw new FlagError("cluster-listen", "--cluster-listen/--cluster-token need --registry");
  }
  if (f.workers > 1) {
    if (!registry) {
      throw new FlagError(
        "workers",
        "--workers needs --registry redis://\u2026 (the workers share which one holds each exit)",
      );
    }
    if ([f.socks, f.control].some((a) => a.port === 0)) {
      throw new FlagError("workers", "--workers: port 0 would give each worker its own port");
    }
  } else if (registry && !(f["cluster-listen"] && f["cluster-token"])) {
    throw new FlagError("registry", "--registry needs --cluster-listen and --cluster-token");
  }
  const clusterTls = clusterTlsFromFlags(f);
  if (clusterTls && !registry) {
    throw new FlagError("cluster-tls-cert", "--cluster-tls-* need --registry");
  }
  return { token, defaultExit, tls: tlsServerFromFlags(f), registry, clusterTls };
}
