/**
 * fusion-server's flags and their validation: the one check a start and `--check-config` run
 * (token, TLS files, limits, session values).
 * @module
 */

import { minSecretChars } from "../../lib/net/secret.ts";
import { FlagError } from "../../lib/config/mod.ts";
import { tlsServerFlags, tlsServerFromFlags, transportFlags } from "../../lib/cli_security.ts";
import type { ServiceFlags } from "../_kit.ts";
import type { TlsServerConfig } from "../../lib/transport/mod.ts";
import {
  fusionSessionFlags,
  type FusionSessionOptions,
  fusionSessionOptions,
} from "./fusion_session.ts";

/** fusion-server's command line. */
export const command = {
  name: "fusion-server",
  summary: "multipath server: joins fusion paths into sessions, one target connection each",
  flags: {
    listen: {
      kind: "hostport",
      arg: "host:port",
      default: "127.0.0.1:5022",
      env: "FUSION_LISTEN",
      help: "where fusion-client paths connect",
    },
    target: {
      kind: "hostport",
      defaultHost: "localhost",
      arg: "host:port",
      default: "localhost:22",
      env: "FUSION_TARGET",
      help: "where each session goes",
    },
    token: {
      kind: "secret",
      min: minSecretChars,
      arg: "secret",
      env: "FUSION_TOKEN",
      help: "shared secret every path must present (prefer the env variable or --token-file)",
    },
    ...tlsServerFlags,
    ...transportFlags,
    ...fusionSessionFlags("a path silent this long (no acks, no heartbeats) is dropped"),
    "max-sessions": { kind: "int", min: 1, default: "256", help: "sessions at once" },
    "max-paths": { kind: "int", min: 1, default: "8", help: "paths per session" },
    "drain-timeout": {
      kind: "duration",
      default: "2s",
      aliases: ["drain-timeout-ms"],
      help: "on SIGINT/SIGTERM, let live sessions finish this long",
    },
  },
  examples: [
    "FUSION_TOKEN=s3cret fusion-server --listen 0.0.0.0:5022",
    "FUSION_TOKEN=s3cret fusion-server --listen 0.0.0.0:5022 --target 10.0.0.9:22 --metrics :9522",
    "fusion-server --listen 0.0.0.0:5022 --token-file /etc/warren/fusion.token --tls-cert cert.pem --tls-key key.pem",
  ],
} as const;

/** What fusion-server runs with, beyond the typed flags. */
export interface FusionServerServiceConfig {
  token: string;
  tls?: TlsServerConfig;
  session: FusionSessionOptions;
}

/** fusion-server's config from its flags; throws to refuse. */
export function validate(f: ServiceFlags<typeof command.flags>): FusionServerServiceConfig {
  const token = f.token ?? "";
  if (token === "") {
    throw new FlagError("token", "a token is required: --token, FUSION_TOKEN or --token-file");
  }
  return { token, tls: tlsServerFromFlags(f), session: fusionSessionOptions(f) };
}
