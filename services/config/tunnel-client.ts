/**
 * tunnel-client's flags and their validation: the one check a start and `--check-config` run
 * (server URL, identifier present and resolvable, ports, TLS files).
 * @module
 */

import { minSecretChars } from "../../lib/net/secret.ts";
import { FlagError } from "../../lib/config/mod.ts";
import {
  proxyFlags,
  proxyFromFlags,
  tlsClientFlags,
  tlsClientFromFlags,
} from "../../lib/cli_security.ts";
import { errorMessage, joinHostPort, parseHostPort } from "../../lib/net/mod.ts";
import { resolveSecret } from "../../lib/config/secret.ts";
// lib/tunnel's modules one by one, not its mod.ts: that one also loads the server side and the
// Hono apps (the embeddable front, the admin API), none of which a tunnel-client runs.
import { HostAccess, type HostAccessSpec } from "../../lib/tunnel/access.ts";
import {
  headerRule,
  HostRewrite,
  type HostRewriteSpec,
  mergeRewriteSpecs,
} from "../../lib/tunnel/rewrite.ts";
import { isDnsLabel } from "../../lib/tunnel/subdomains.ts";
import { isHealthPath } from "../../lib/tunnel/health.ts";
import type { TcpTunnelSpec } from "../../lib/tunnel/client.ts";
import type { UdpTunnelSpec } from "../../lib/tunnel/udp_client.ts";
import { defaultInspectBodyBytes, defaultInspectMaxRequests } from "../../lib/inspect/record.ts";
import type { ProxySettings, TlsClientConfig } from "../../lib/transport/mod.ts";
import type { ServiceFlags, ValidateContext } from "../_kit.ts";

/** tunnel-client's command line. */
export const command = {
  name: "tunnel-client",
  summary: "expose a local app through a tunnel-server",
  flags: {
    server: {
      kind: "string",
      arg: "url",
      env: "TUNNEL_SERVER",
      help: "tunnel server base URL (http://, https://, ws://, wss://); a comma-separated " +
        "list names the instances of a cluster, tried in turn when one fails",
    },
    local: {
      kind: "hostport",
      arg: "host:port",
      default: "127.0.0.1:80",
      help: "local app that receives the requests",
    },
    identifier: {
      kind: "secret",
      min: minSecretChars,
      arg: "secret",
      env: "TUNNEL_IDENTIFIER",
      help: "this client's secret identifier (prefer the env variable: argv shows in ps)",
    },
    "allow-port": {
      kind: "int",
      min: 1,
      max: 65535,
      multiple: true,
      arg: "port",
      help: "a Host header naming this port is sent to local-host:port (default: --local)",
    },
    tcp: {
      kind: "string",
      multiple: true,
      arg: "public_port=host:port",
      help: "TCP tunnel: the server's public port relayed to this local address",
    },
    udp: {
      kind: "string",
      multiple: true,
      arg: "public_port=host:port",
      help: "UDP tunnel: the server's public UDP port relayed to this local UDP service " +
        "(one flow, with its own socket, per public peer)",
    },
    transport: {
      kind: "choice",
      choices: ["auto", "websocket", "raw"],
      arg: "auto|websocket|raw",
      default: "auto",
      help: "raw (HTTP Upgrade, no framing: fastest), websocket (any proxy, both server " +
        "fronts), or auto: raw, falling back to websocket when refused on the way",
    },
    "tls-ca": {
      ...tlsClientFlags["tls-ca"],
      aliases: ["ca-file"],
      help: "trust this CA (PEM) for an https/wss server's certificate",
    },
    "tls-server-name": tlsClientFlags["tls-server-name"],
    "tls-client-cert": {
      ...tlsClientFlags["tls-client-cert"],
      help: "present this client certificate to an https/wss server that requires one " +
        "(tunnel-server --tls-client-ca); needs --tls-client-key",
    },
    "tls-client-key": tlsClientFlags["tls-client-key"],
    ...proxyFlags,
    heartbeat: {
      kind: "duration",
      min: 100,
      default: "2s",
      help: "ping the server this often; reconnect after 3 missed intervals",
    },
    "backoff-max": {
      kind: "duration",
      default: "30s",
      help: "longest wait between reconnection attempts",
    },
    subdomain: {
      kind: "string",
      arg: "name",
      help: "claim name.<the server's --domain> (the identifier must be an account token)",
    },
    "random-subdomain": {
      kind: "boolean",
      help: "claim a random free subdomain of the server's --domain (kept across reconnects)",
    },
    "basic-auth": {
      kind: "string",
      multiple: true,
      arg: "user:password",
      help: "the server asks public requests for these credentials (HTTP Basic, 401 without; " +
        "env:VAR or file:PATH); any of --basic-auth/--bearer-auth passes",
    },
    "bearer-auth": {
      kind: "string",
      multiple: true,
      arg: "token",
      help: "the server asks public requests for this bearer token (env:VAR or file:PATH)",
    },
    "allow-cidr": {
      kind: "string",
      multiple: true,
      arg: "cidr",
      help: "the server lets only these source addresses reach this client (403 for others)",
    },
    "host-header": {
      kind: "string",
      arg: "host[:port]|local",
      help: "the Host header the local app sees (local: the --local address) instead of the " +
        "public one",
    },
    "request-header-set": {
      kind: "string",
      multiple: true,
      arg: "Name: value",
      help: "set this header on every request to the local app (replaces it)",
    },
    "request-header-add": {
      kind: "string",
      multiple: true,
      arg: "Name: value",
      help: "add this header to every request to the local app",
    },
    "request-header-remove": {
      kind: "string",
      multiple: true,
      arg: "Name",
      help: "remove this header from every request to the local app",
    },
    "response-header-set": {
      kind: "string",
      multiple: true,
      arg: "Name: value",
      help: "set this header on every response to the public client (replaces it)",
    },
    "response-header-add": {
      kind: "string",
      multiple: true,
      arg: "Name: value",
      help: "add this header to every response to the public client",
    },
    "response-header-remove": {
      kind: "string",
      multiple: true,
      arg: "Name",
      help: "remove this header from every response to the public client",
    },
    inspect: {
      kind: "hostport",
      arg: "host:port",
      help: "serve the request inspector (page + JSON API, replay) here, e.g. :4040 " +
        "(loopback unless a host is named)",
    },
    "inspect-requests": {
      kind: "int",
      min: 1,
      max: 10000,
      default: String(defaultInspectMaxRequests),
      help: "requests the inspector keeps (the oldest is dropped)",
    },
    "inspect-body-bytes": {
      kind: "int",
      min: 0,
      max: 1 << 20,
      default: String(defaultInspectBodyBytes),
      help: "bytes of each request and response body the inspector keeps",
    },
    "health-check": {
      kind: "string",
      arg: "path",
      help: "GET this path on --local every --health-interval: the server sends this client " +
        "nothing until it answers 2xx, and nothing while --health-failures checks in a row " +
        "fail (the other clients of its group take the requests)",
    },
    "health-interval": {
      kind: "duration",
      min: 100,
      default: "5s",
      help: "time between two health checks",
    },
    "health-timeout": {
      kind: "duration",
      min: 100,
      default: "3s",
      help: "time one health check may take",
    },
    "health-failures": {
      kind: "int",
      min: 1,
      max: 100,
      default: "3",
      help: "failed health checks in a row that take this client out of rotation",
    },
    "keep-trying": {
      kind: "boolean",
      help: "keep reconnecting when the server refuses the identifier (default: exit with " +
        "status 4 after 3 refusals in a row)",
    },
  },
  examples: [
    "TUNNEL_IDENTIFIER=s3cret tunnel-client --server http://tunnel.example.com --local 127.0.0.1:3000",
    "tunnel-client --server https://t.example.com --identifier-file ~/.tunnel-id --tcp 20022=127.0.0.1:22",
    "tunnel-client --server https://t.example.com --identifier-file ~/.tunnel-id --udp 20053=127.0.0.1:53",
    "tunnel-client --server wss://t.example.com --tls-ca ca.pem --tls-client-cert me.pem --tls-client-key me.key",
    "tunnel-client --server http://tunnel.example.com --local 127.0.0.1:3000 --inspect :4040",
    "tunnel-client --server http://tunnel.example.com --local 127.0.0.1:3000 --health-check /healthz",
    "tunnel-client --server http://t.example.com --subdomain app --basic-auth env:APP_LOGIN " +
    "--host-header local --response-header-remove Server",
  ],
} as const;

/** What tunnel-client runs with, beyond the typed flags. */
export interface TunnelClientServiceConfig {
  server: string;
  /** The other instances of a cluster (`--server a,b,...`), tried in turn after the first. */
  servers: string[];
  identifier: string;
  tcp: TcpTunnelSpec[];
  udp: UdpTunnelSpec[];
  tls?: TlsClientConfig;
  /** How the server is reached through a proxy, if at all. */
  proxy?: ProxySettings;
  /** Access rules the server checks for this client's hosts (resolved secrets). */
  access?: HostAccessSpec;
  /** Header rewrites the server applies for this client's hosts. */
  rewrite?: HostRewriteSpec;
}

/** `--basic-auth`/`--bearer-auth`/`--allow-cidr` as access rules (checked), or undefined. */
function accessFromFlags(f: ServiceFlags<typeof command.flags>): HostAccessSpec | undefined {
  const secret = (v: string) => /^(env|file):/.test(v) ? resolveSecret(v) : v;
  const spec: HostAccessSpec = {
    ...(f["basic-auth"].length ? { basic: f["basic-auth"].map(secret) } : {}),
    ...(f["bearer-auth"].length ? { bearer: f["bearer-auth"].map(secret) } : {}),
    ...(f["allow-cidr"].length ? { allow: f["allow-cidr"] } : {}),
  };
  if (Object.keys(spec).length === 0) return undefined;
  try {
    new HostAccess(spec);
  } catch (err) {
    const flag = /bearer/.test(errorMessage(err))
      ? "bearer-auth"
      : /allow/.test(errorMessage(err))
      ? "allow-cidr"
      : "basic-auth";
    throw new FlagError(flag, `--${flag}: ${errorMessage(err)}`);
  }
  return spec;
}

/** `--host-header` and the `--request-header-*`/`--response-header-*` flags, or undefined. */
function rewriteFromFlags(f: ServiceFlags<typeof command.flags>): HostRewriteSpec | undefined {
  let spec: HostRewriteSpec = {};
  const flags = [
    ["request", "set"],
    ["request", "add"],
    ["request", "remove"],
    ["response", "set"],
    ["response", "add"],
    ["response", "remove"],
  ] as const;
  try {
    const host = f["host-header"] === "local"
      ? joinHostPort(f.local.host, f.local.port)
      : f["host-header"];
    if (host !== undefined) spec.host = host;
    for (const [where, action] of flags) {
      for (const v of f[`${where}-header-${action}`]) {
        const rule = headerRule(action, v, `--${where}-header-${action}`);
        spec = mergeRewriteSpecs(spec, { [where]: rule });
      }
    }
    if (Object.keys(spec).length === 0) return undefined;
    new HostRewrite(spec);
  } catch (err) {
    // The message names its flag, or the rule's place ("host ...", "response.add ...").
    const msg = errorMessage(err);
    const named = /^--([a-z-]+)/.exec(msg)?.[1];
    const m = /^(request|response)\.(set|add|remove)/.exec(msg);
    const flag = named ?? (m ? `${m[1]}-header-${m[2]}` : "host-header");
    throw new FlagError(flag, named ? msg : `--${flag}: ${msg}`);
  }
  return spec;
}

/** tunnel-client's config from its flags; throws to refuse. */
export function validate(
  f: ServiceFlags<typeof command.flags>,
  ctx: ValidateContext,
): TunnelClientServiceConfig {
  if (!f.server) throw new FlagError("server", "--server is required (or TUNNEL_SERVER)");
  const [server, ...servers] = f.server.split(",").map((u) => u.trim());
  for (const url of [server, ...servers]) {
    let scheme = "";
    try {
      scheme = new URL(url.includes("://") ? url : `http://${url}`).protocol;
    } catch {
      // Not a URL at all: refused just below with the same message as a wrong scheme.
    }
    if (!["http:", "https:", "ws:", "wss:"].includes(scheme)) {
      throw new FlagError(
        "server",
        `${ctx.where("server")}: must be an http(s):// or ws(s):// URL`,
      );
    }
  }
  const identifier = f.identifier;
  if (!identifier) {
    throw new FlagError(
      "identifier",
      "--identifier, --identifier-file or TUNNEL_IDENTIFIER is required",
    );
  }
  if (f["health-check"] !== undefined && !isHealthPath(f["health-check"])) {
    throw new FlagError(
      "health-check",
      `--health-check must be a path (/\u2026, no spaces), got ${f["health-check"]}`,
    );
  }
  if (f.subdomain !== undefined && f["random-subdomain"]) {
    throw new FlagError("subdomain", "--subdomain and --random-subdomain exclude each other");
  }
  if (f.subdomain !== undefined && !isDnsLabel(f.subdomain.toLowerCase())) {
    throw new FlagError(
      "subdomain",
      `--subdomain must be a DNS label (a-z 0-9 -), got ${f.subdomain}`,
    );
  }
  const portTunnel = (flag: "tcp" | "udp") => (spec: string): TcpTunnelSpec => {
    const m = /^(\d{1,5})=(.+)$/.exec(spec);
    if (!m || Number(m[1]) < 1 || Number(m[1]) > 65535) {
      throw new FlagError(flag, `${ctx.where(flag)}: must be public_port=host:port, got ${spec}`);
    }
    try {
      return { publicPort: Number(m[1]), local: parseHostPort(m[2]) };
    } catch (err) {
      throw new FlagError(flag, `${ctx.where(flag)}: ${errorMessage(err)}`);
    }
  };
  const tcp = f.tcp.map(portTunnel("tcp"));
  const udp: UdpTunnelSpec[] = f.udp.map(portTunnel("udp"));
  // TLS itself follows the URL scheme (https/wss); these flags only say whom to trust and
  // which client certificate to present.
  const tls = tlsClientFromFlags(f);
  if (tls && ![server, ...servers].every((u) => /^(https|wss):/i.test(u))) {
    throw new FlagError("tls-ca", "--tls-* flags need an https:// or wss:// --server");
  }
  return {
    server,
    servers,
    identifier,
    tcp,
    udp,
    tls,
    proxy: proxyFromFlags(f),
    access: accessFromFlags(f),
    rewrite: rewriteFromFlags(f),
  };
}
