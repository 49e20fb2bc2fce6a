/**
 * fusion-client's flags and their validation: the one check a start and `--check-config` run
 * (paths, token, TLS files, session values).
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
import { parsePathSpec, type PathSpec } from "../../lib/fusion/mod.ts";
import { errorMessage } from "../../lib/net/mod.ts";
import type { ServiceFlags } from "../_kit.ts";
import type { ProxySettings, TlsClientConfig } from "../../lib/transport/mod.ts";
import {
  fusionSessionFlags,
  type FusionSessionOptions,
  fusionSessionOptions,
} from "./fusion_session.ts";

/** fusion-client's command line. */
export const command = {
  name: "fusion-client",
  summary: "multipath client: each accepted connection travels over N paths to fusion-server",
  flags: {
    listen: {
      kind: "hostport",
      arg: "host:port",
      default: "127.0.0.1:5021",
      env: "FUSION_LISTEN",
      help: "where to accept connections (point ssh -p here)",
    },
    server: {
      kind: "hostport",
      arg: "host:port",
      env: "FUSION_SERVER",
      help: "fusion-server address, used by --paths N when no --path is given",
    },
    paths: { kind: "int", min: 1, max: 64, default: "2", help: "number of paths to --server" },
    path: {
      kind: "string",
      arg: "[local_ip>]host:port",
      multiple: true,
      help: "one path: server address, optionally bound to a local address (one link each)",
    },
    token: {
      kind: "secret",
      min: minSecretChars,
      arg: "secret",
      env: "FUSION_TOKEN",
      help: "shared secret (prefer the env variable or --token-file)",
    },
    ...tlsClientFlags,
    ...transportFlags,
    ...proxyFlags,
    ...fusionSessionFlags(
      "a path silent this long (no acks, no heartbeats) is dropped and redialled",
    ),
    "max-conns": { kind: "int", min: 1, default: "64", help: "connections (sessions) at once" },
    "drain-timeout": {
      kind: "duration",
      default: "2s",
      aliases: ["drain-timeout-ms"],
      help: "on SIGINT/SIGTERM, let live sessions finish this long",
    },
  },
  examples: [
    "FUSION_TOKEN=s3cret fusion-client --server 203.0.113.5:5022 --paths 4",
    "FUSION_TOKEN=s3cret fusion-client --path '192.168.1.10>203.0.113.5:5022' --path '10.0.0.7>203.0.113.5:5022'",
    "FUSION_TOKEN=s3cret fusion-client --server fusion.example:5022 --tls-ca ca.pem",
    "ssh -p 5021 user@127.0.0.1",
  ],
} as const;

/** What fusion-client runs with, beyond the typed flags. */
export interface FusionClientServiceConfig {
  token: string;
  paths: PathSpec[];
  tls?: TlsClientConfig;
  /** How the server is reached through a proxy, if at all. */
  proxy?: ProxySettings;
  session: FusionSessionOptions;
}

/** fusion-client's config from its flags; throws to refuse. */
export function validate(f: ServiceFlags<typeof command.flags>): FusionClientServiceConfig {
  const token = f.token ?? "";
  if (token === "") {
    throw new FlagError("token", "a token is required: --token, FUSION_TOKEN or --token-file");
  }
  const paths: PathSpec[] = f.path.map((p) => {
    try {
      return parsePathSpec(p);
    } catch (err) {
      throw new FlagError("path", `--path ${JSON.stringify(p)}: ${errorMessage(err)}`);
    }
  });
  for (let i = 0; f.server && i < f.paths; i++) paths.push(f.server);
  if (paths.length === 0) {
    throw new FlagError("path", "give --server host:port (with --paths N) or --path, repeatable");
  }
  return {
    token,
    paths,
    tls: tlsClientFromFlags(f),
    proxy: proxyFromFlags(f),
    session: fusionSessionOptions(f),
  };
}
