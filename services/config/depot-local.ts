/**
 * depot-local's flags and their validation: the one check a start and `--check-config` run
 * (addresses, the exit's name, access rules, secrets and TLS files).
 * @module
 */

import { minSecretChars } from "../../lib/net/secret.ts";
import { FlagError } from "../../lib/config/mod.ts";
import {
  proxyFlags,
  proxyFromFlags,
  tlsClientFlags,
  tlsClientFromFlags,
  transportFlags,
} from "../../lib/cli_security.ts";
import type { Acl } from "../../lib/net/mod.ts";
import type { ProxySettings, TlsClientConfig } from "../../lib/transport/mod.ts";
import { aclFromFlags } from "./acl.ts";
import { defaultControlPort, exitNamePattern } from "../../lib/depot/mod.ts";
import type { ServiceFlags, ValidateContext } from "../_kit.ts";

/** depot-local's command line. */
export const command = {
  name: "depot-local",
  summary: "exit of the depot reverse SOCKS5 proxy: dials depot-server, connects from here",
  flags: {
    server: {
      kind: "hostport",
      arg: "host:port",
      default: `127.0.0.1:${defaultControlPort}`,
      env: "DEPOT_SERVER",
      help: "depot-server control address",
    },
    tunnel: {
      kind: "hostport",
      arg: "host:port",
      env: "DEPOT_TUNNEL_ADDR",
      help: "tunnel address (default: the --server host and the port the server announces)",
    },
    token: {
      kind: "secret",
      min: minSecretChars,
      arg: "secret",
      env: "DEPOT_TOKEN",
      help: "shared secret of the server (prefer the env variable or --token-file)",
    },
    ...tlsClientFlags,
    ...transportFlags,
    ...proxyFlags,
    name: {
      kind: "string",
      arg: "name",
      default: "default",
      env: "DEPOT_NAME",
      help: "exit name; SOCKS clients choose this exit with it as username",
    },
    "socks-password": {
      kind: "secret",
      min: minSecretChars,
      arg: "secret",
      env: "DEPOT_SOCKS_PASSWORD",
      help: "password SOCKS clients of this exit must send (username = --name)",
    },
    "dial-timeout": {
      kind: "duration",
      default: "10s",
      aliases: ["dial-timeout-ms"],
      help: "give up reaching a target (or the server) after this long",
    },
    "idle-timeout": {
      kind: "duration",
      default: "0",
      aliases: ["idle-timeout-ms"],
      help: "close a relayed connection idle this long (0 = never)",
    },
    "backoff-max": {
      kind: "duration",
      default: "30s",
      aliases: ["max-backoff-ms"],
      help: "longest wait between reconnect attempts (at least 250ms)",
    },
    allow: {
      kind: "string",
      multiple: true,
      arg: "rule",
      env: "DEPOT_ALLOW",
      help: "only these destinations: host glob, CIDR, [:port|lo-hi|list] (e.g. " +
        "'*.corp.example:443', '10.0.0.0/8'); others get SOCKS reply 0x02 (default: all; " +
        "DEPOT_ALLOW: space-separated)",
    },
    deny: {
      kind: "string",
      multiple: true,
      arg: "rule",
      env: "DEPOT_DENY",
      help: "never these destinations, checked on resolved addresses too (e.g. 169.254.0.0/16); " +
        "deny wins (DEPOT_DENY: space-separated)",
    },
    "spare-tunnels": {
      kind: "int",
      min: 0,
      default: "2",
      help: "tunnel connections kept pre-dialled (skips a TCP handshake per request; 0 = off)",
    },
    "no-udp": {
      kind: "boolean",
      env: "DEPOT_NO_UDP",
      help: "refuse SOCKS5 UDP ASSOCIATE through this exit (clients get 0x07); otherwise " +
        "datagrams leave from here, through --allow/--deny like connections",
    },
    mux: {
      kind: "boolean",
      env: "DEPOT_MUX",
      help: "carry all tunnels as streams of one yamux session (one tunnel connection)",
    },
    status: {
      kind: "hostport",
      arg: "host:port",
      env: "DEPOT_LOCAL_STATUS",
      help: "serve GET /status (JSON), /metrics and /healthz here (also on --metrics)",
    },
  },
  examples: [
    "DEPOT_TOKEN=s3cret depot-local --server depot.example:7000",
    "depot-local --server depot.example:7000 --name office --socks-password-file pw.txt",
    "depot-local --server depot.example:7000 --mux   # one tunnel connection, streams in it",
  ],
} as const;

/** What depot-local runs with, beyond the typed flags. */
export interface DepotLocalServiceConfig {
  acl: Acl;
  socksPassword?: string;
  tls?: TlsClientConfig;
  /** How the server is reached through a proxy, if at all. */
  proxy?: ProxySettings;
}

/** depot-local's config from its flags; throws to refuse. */
export function validate(
  f: ServiceFlags<typeof command.flags>,
  ctx: ValidateContext,
): DepotLocalServiceConfig {
  if (!exitNamePattern.test(f.name)) {
    throw new FlagError("name", `${ctx.where("name")} must match ${exitNamePattern}`);
  }
  const socksPassword = f["socks-password"];
  if (socksPassword !== undefined && new TextEncoder().encode(socksPassword).length > 255) {
    throw new FlagError(
      "socks-password",
      "--socks-password is longer than 255 bytes (SOCKS5 limit)",
    );
  }
  const proxy = proxyFromFlags(f);
  return { acl: aclFromFlags(f), socksPassword, tls: tlsClientFromFlags(f), proxy };
}
