/**
 * Service adapter for security flags, shared by every service: TLS server and client flags,
 * secrets from flag / environment / file, and a TLS-aware `listenOrExit`. Library code never
 * imports this; services do (like lib/cli.ts).
 *
 * Flag names (the same in every service):
 * - server side of a link: `--tls-cert`, `--tls-key`, and `--tls-client-ca` to require and
 *   verify client certificates (mutual TLS);
 * - client side: `--tls` (TLS with the system roots), `--tls-ca`, `--tls-server-name`,
 *   `--tls-client-cert` + `--tls-client-key` (any of them implies `--tls`).
 * @module
 */

import { fail, type FlagDef } from "./cli.ts";
import type { HostPort } from "./net/addr.ts";
import { errorMessage } from "./net/errors.ts";
import type { Logger } from "./log.ts";
import { counter } from "./stats.ts";
import {
  listenTls,
  loadTlsClientConfig,
  loadTlsServerConfig,
  type TlsClientConfig,
  TlsError,
  type TlsListener,
  type TlsServerConfig,
} from "./transport/tls.ts";
import { type TransportName, transportNames } from "./transport/endpoint.ts";

/**
 * Failed TLS handshakes per listener and reason (`--metrics`): a client without a certificate,
 * a wrong CA or plaintext to a TLS port shows here, not only in the log.
 */
export const tlsHandshakeFailures = counter(
  "warren_tls_handshake_failures_total",
  "TLS handshakes that failed, by listener and reason",
  ["listener", "reason"],
);

/** Flags of a TLS server (listener of a warren-to-warren link). */
export const tlsServerFlags = {
  "tls-cert": {
    type: "string",
    arg: "file",
    env: "WARREN_TLS_CERT",
    help: "serve TLS with this certificate chain (PEM); needs --tls-key",
  },
  "tls-key": { type: "string", arg: "file", env: "WARREN_TLS_KEY", help: "private key (PEM)" },
  "tls-client-ca": {
    type: "string",
    arg: "file",
    env: "WARREN_TLS_CLIENT_CA",
    help: "require client certificates signed by this CA (mutual TLS)",
  },
} as const satisfies Record<string, FlagDef>;

/** Flags of a TLS client (dialler of a warren-to-warren link). */
export const tlsClientFlags = {
  tls: { type: "boolean", help: "connect with TLS (system CAs unless --tls-ca)" },
  "tls-ca": {
    type: "string",
    arg: "file",
    env: "WARREN_TLS_CA",
    help: "trust this CA (PEM) for the server certificate; implies --tls",
  },
  "tls-server-name": {
    type: "string",
    arg: "name",
    help: "verify the server certificate for this name instead of the dialled host",
  },
  "tls-client-cert": {
    type: "string",
    arg: "file",
    env: "WARREN_TLS_CLIENT_CERT",
    help: "present this client certificate (mutual TLS); needs --tls-client-key",
  },
  "tls-client-key": {
    type: "string",
    arg: "file",
    env: "WARREN_TLS_CLIENT_KEY",
    help: "key of --tls-client-cert",
  },
} as const satisfies Record<string, FlagDef>;

/**
 * `--transport tcp|ws`: what carries a warren-to-warren link (both ends must say the same;
 * TLS comes from the TLS flags, so ws with TLS is wss). WebSocket passes HTTP-only proxies.
 */
export const transportFlags = {
  transport: {
    type: "string",
    arg: "tcp|ws",
    default: "tcp",
    env: "WARREN_TRANSPORT",
    help: "carrier of the link: tcp, or ws (WebSocket; wss with TLS); both ends must agree",
  },
} as const satisfies Record<string, FlagDef>;

/** The `--transport` value; exits 2 with one line on anything but tcp or ws. */
export function transportFromFlags(f: { transport?: string }): TransportName {
  const v = (f.transport ?? "tcp").toLowerCase();
  if (!(transportNames as readonly string[]).includes(v)) {
    fail(`--transport must be one of ${transportNames.join(", ")}: ${f.transport}`, 2);
  }
  return v as TransportName;
}

/** Values of the TLS server flags. */
export type TlsServerFlagValues = {
  "tls-cert"?: string;
  "tls-key"?: string;
  "tls-client-ca"?: string;
};

/** Values of the TLS client flags. */
export type TlsClientFlagValues = {
  tls?: boolean;
  "tls-ca"?: string;
  "tls-server-name"?: string;
  "tls-client-cert"?: string;
  "tls-client-key"?: string;
};

/** The server's TLS config from flags, or undefined (plaintext); exits 2 on a bad file. */
export function tlsServerFromFlags(f: TlsServerFlagValues): TlsServerConfig | undefined {
  const cert = f["tls-cert"], key = f["tls-key"], ca = f["tls-client-ca"];
  if (!cert && !key) {
    if (ca) fail("--tls-client-ca needs --tls-cert and --tls-key", 2);
    return undefined;
  }
  if (!cert || !key) fail("--tls-cert and --tls-key go together", 2);
  try {
    return loadTlsServerConfig({ certFile: cert, keyFile: key, caFile: ca });
  } catch (err) {
    if (err instanceof TlsError) fail(`TLS: ${err.message}`, 2);
    throw err;
  }
}

/** The client's TLS config from flags, or undefined (plaintext); exits 2 on a bad file. */
export function tlsClientFromFlags(f: TlsClientFlagValues): TlsClientConfig | undefined {
  const any = f.tls || f["tls-ca"] || f["tls-server-name"] || f["tls-client-cert"] ||
    f["tls-client-key"];
  if (!any) return undefined;
  try {
    return loadTlsClientConfig({
      caFile: f["tls-ca"],
      serverName: f["tls-server-name"],
      certFile: f["tls-client-cert"],
      keyFile: f["tls-client-key"],
    });
  } catch (err) {
    if (err instanceof TlsError) {
      fail(`TLS: ${err.message} (--tls-client-cert/--tls-client-key)`, 2);
    }
    throw err;
  }
}

/**
 * `--<name>-file` flag definition for a secret: a file whose first line is the secret (mode
 * 0600 recommended), so it never shows in `ps` or the environment of child processes.
 */
export function secretFileFlag(what: string): FlagDef {
  return { type: "string", arg: "file", help: `read the ${what} from this file (first line)` };
}

/**
 * How every value of deploy/warren.env.example starts: a secret that still does was copied
 * without being replaced, and anyone who read the example knows it.
 */
export const placeholderSecretPrefix = "change-me";

/** A secret that is still the example file's placeholder. */
export class PlaceholderSecretError extends Error {
  constructor(readonly what: string) {
    super(
      `${what} is a placeholder ("${placeholderSecretPrefix}…" from deploy/warren.env.example): ` +
        "set a real secret, e.g. openssl rand -hex 32",
    );
    this.name = "PlaceholderSecretError";
  }
}

/**
 * `secret` itself, or a PlaceholderSecretError when it is still an example placeholder
 * (`what` names where it came from: a flag, a variable, a file).
 */
export function refusePlaceholder(secret: string, what: string): string {
  if (secret.trim().toLowerCase().startsWith(placeholderSecretPrefix)) {
    throw new PlaceholderSecretError(what);
  }
  return secret;
}

/**
 * `refusePlaceholder` for a service starting: exits 2 with one line instead of throwing.
 * Returns `secret` (undefined stays undefined).
 */
export function refusePlaceholderOrExit<T extends string | undefined>(secret: T, what: string): T {
  if (secret === undefined) return secret;
  try {
    refusePlaceholder(secret, what);
  } catch (err) {
    fail(errorMessage(err), 2);
  }
  return secret;
}

/**
 * The secret in `file` (its first line, trimmed). Throws an Error naming the file when it
 * cannot be read, is empty or is an example placeholder (for config reloads, which must not
 * exit).
 */
export function readSecretFile(file: string): string {
  let text: string;
  try {
    text = Deno.readTextFileSync(file);
  } catch (err) {
    throw new Error(`${file}: ${errorMessage(err)}`);
  }
  const secret = text.split(/\r?\n/)[0].trim();
  if (secret === "") throw new Error(`${file}: empty`);
  return refusePlaceholder(secret, file);
}

/**
 * A secret from its flag (which lib/cli already fills from the env variable) or from a file.
 * Exits 2 when both are given, the file is unreadable or empty, or the secret is still an
 * example placeholder. Warns (never printing the value) when the secret was typed on the
 * command line, where `ps` shows it.
 */
export function secretFromFlags(
  value: string | undefined,
  file: string | undefined,
  opts: { flag: string; log?: Logger; args?: string[] },
): string | undefined {
  const onArgv = (opts.args ?? Deno.args).some((a) =>
    a === `--${opts.flag}` || a.startsWith(`--${opts.flag}=`)
  );
  if (file) {
    if (value !== undefined && onArgv) {
      fail(`give --${opts.flag} or --${opts.flag}-file, not both`, 2);
    }
    try {
      return readSecretFile(file);
    } catch (err) {
      fail(`--${opts.flag}-file ${errorMessage(err)}`, 2);
    }
  }
  if (value !== undefined && onArgv) {
    opts.log?.warn(
      `--${opts.flag} on the command line is visible to every local user (ps); ` +
        `prefer its environment variable or --${opts.flag}-file`,
    );
  }
  return refusePlaceholderOrExit(
    value,
    onArgv ? `--${opts.flag}` : `--${opts.flag} (its environment variable or config file)`,
  );
}

/**
 * `listenTls` on `addr`, exiting 1 with one line when the port is busy or the certificate
 * cannot be used (like lib/cli's `listenOrExit`).
 */
export async function listenTlsOrExit(
  addr: HostPort,
  cfg: TlsServerConfig,
  what: string,
  log: Logger,
): Promise<TlsListener> {
  try {
    return await listenTls({ hostname: addr.host, port: addr.port }, cfg, {
      log,
      onHandshakeFailure: (reason) => tlsHandshakeFailures.inc({ listener: what, reason }),
    });
  } catch (err) {
    if (err instanceof Deno.errors.AddrInUse) {
      fail(`${what}: address ${addr.host}:${addr.port} is already in use`);
    }
    fail(`${what}: cannot listen with TLS on ${addr.host}:${addr.port}: ${errorMessage(err)}`);
  }
}

/**
 * `Deno.listen` or `listenTls`, depending on whether `cfg` is set; exits 1 with one line on
 * failure. Plaintext stays the default: bind loopback unless the link is TLS.
 */
export async function listenMaybeTls(
  addr: HostPort,
  cfg: TlsServerConfig | undefined,
  what: string,
  log: Logger,
): Promise<Deno.Listener<Deno.Conn, Deno.NetAddr>> {
  if (cfg) return await listenTlsOrExit(addr, cfg, what, log);
  if (!isLoopbackHost(addr.host)) {
    log.warn(`${what}: plaintext link on a non-loopback address; anyone on the path reads it`, {
      addr: `${addr.host}:${addr.port}`,
      fix: "--tls-cert/--tls-key (and --tls-client-ca for mutual TLS)",
    });
  }
  try {
    return Deno.listen({ hostname: addr.host, port: addr.port });
  } catch (err) {
    if (err instanceof Deno.errors.AddrInUse) {
      fail(`${what}: address ${addr.host}:${addr.port} is already in use`);
    }
    fail(`${what}: cannot listen on ${addr.host}:${addr.port}: ${errorMessage(err)}`);
  }
}

/** Whether `host` can only be reached from this machine (127/8, ::1, localhost). */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h === "::1" || /^127\./.test(h) || /^::ffff:127\./.test(h);
}
