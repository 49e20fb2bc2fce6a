/**
 * seaprox's flags and their validation: the one check a start, `--check-config` and a reload
 * run (listener URLs parse, no open proxy, link token and TLS files present and readable).
 * @module
 */

import { minSecretChars } from "../../lib/net/secret.ts";
import { FlagError } from "../../lib/config/mod.ts";
import {
  proxyFlags,
  proxyFromFlags,
  tlsClientFlags,
  tlsClientFromFlags,
  tlsServerFlags,
  tlsServerFromFlags,
  transportFlags,
} from "../../lib/cli_security.ts";
import {
  type ProxySettings,
  quicAvailable,
  QuicUnavailableError,
  type TlsClientConfig,
  type TlsServerConfig,
} from "../../lib/transport/mod.ts";
import { Acl, errorMessage, type HostPort, parseHostPort } from "../../lib/net/mod.ts";
import {
  chainUdpRefusal,
  type ForwardSpec,
  isUdpListenUrl,
  type ListenerSpec,
  listenerUnavailable,
  openProxyProblem,
  parseForwardUrl,
  parseListenUrl,
  parseUdpListenUrl,
  type UdpListenerSpec,
} from "../../lib/proxy/mod.ts";
import { aclFromFlags } from "./acl.ts";
import type { ServiceFlags } from "../_kit.ts";

/** seaprox's command line. */
export const command = {
  name: "seaprox",
  summary:
    "static, SOCKS5, HTTP and redir (transparent) proxy listeners by URL, optionally through a chain of hops",
  flags: {
    listen: {
      kind: "string",
      multiple: true,
      arg: "url",
      env: "SEAPROX_LISTEN",
      live: true,
      help:
        "static://host:port?to=host:port[&send-proxy=1|2] | socks5://[user:pass@]host:port (SOCKS4/4a too " +
        "when there is no user:pass) | " +
        "http://[user:pass@]host:port | redir://host:port (transparent: connections an iptables " +
        "REDIRECT rule sent here go to their original destination; needs --allow-ffi) | " +
        "link://host:port (accept seaprox links; restart to change) | " +
        "quic://host:port (seaprox links over QUIC/UDP: needs --tls-cert and --unstable-net) | " +
        "udp://host:port?to=host:port[&max-flows=N] (a UDP forward; restart to change); " +
        "?proxy-protocol=1 on any of the first three takes a PROXY header from --proxy-protocol-from",
    },
    via: {
      kind: "string",
      multiple: true,
      arg: "url",
      env: "SEAPROX_VIA",
      help:
        "carry every outgoing connection over a seaprox link to that node (link://host:port, or " +
        "quic://host:port over QUIC: first hop only, needs --unstable-net); " +
        "takes the same hops as --forward",
    },
    "link-token": {
      kind: "secret",
      min: minSecretChars,
      arg: "secret",
      env: "SEAPROX_LINK_TOKEN",
      help: "shared secret of link:// peers (required with link:// or --via)",
    },
    ...tlsServerFlags,
    ...tlsClientFlags,
    ...transportFlags,
    ...proxyFlags,
    allow: {
      kind: "string",
      multiple: true,
      arg: "rule",
      help: "only these destinations: CIDR, host glob, [:ports] (10.0.0.0/8:443, *.internal)",
    },
    deny: {
      kind: "string",
      multiple: true,
      arg: "rule",
      help: "never these destinations (checked on resolved addresses too; deny wins)",
    },
    "proxy-protocol-from": {
      kind: "string",
      multiple: true,
      arg: "cidr",
      help: "balancers whose PROXY headers ?proxy-protocol=1 listeners take (default: loopback)",
    },
    "allow-open": {
      kind: "boolean",
      live: true,
      help: "allow a SOCKS5/HTTP listener without user:pass on a non-loopback address",
    },
    forward: {
      kind: "string",
      multiple: true,
      arg: "url",
      env: "SEAPROX_FORWARD",
      help: "send every outgoing connection through this hop: socks5://[user:pass@]host:port, " +
        "http://[user:pass@]host:port (CONNECT) or link://host:port; repeat for a chain, " +
        "in order (--tls/--transport apply to a first link hop; later ones ride the chain); " +
        "SOCKS5 UDP ASSOCIATE and udp:// follow the chain too (link, quic and SOCKS5 hops carry " +
        "UDP; an http:// hop cannot)",
    },
    "prefer-ipv6": { kind: "boolean", help: "try IPv6 addresses first when dialling (default)" },
    "prefer-ipv4": { kind: "boolean", help: "try IPv4 addresses first when dialling" },
    "max-conns": {
      kind: "int",
      min: 1,
      default: "1024",
      help: "connections at once across all listeners; more are closed at once",
    },
    workers: {
      kind: "int",
      min: 1,
      max: 64,
      arg: "n",
      default: "1",
      env: "SEAPROX_WORKERS",
      help: "run n worker processes on the same ports (SO_REUSEPORT, Linux; each worker has " +
        "its own --max-conns; worker i serves --metrics/--status on port+i-1); not with " +
        "udp:// or quic:// listeners",
    },
    "idle-timeout": {
      kind: "duration",
      default: "5m",
      help: "close a relayed connection idle this long (0 = never)",
    },
    "handshake-timeout": {
      kind: "duration",
      default: "10s",
      help: "close a client that has not finished its proxy handshake by then (0 = off)",
    },
    "dial-timeout": {
      kind: "duration",
      default: "10s",
      help: "give up reaching a destination after this long",
    },
    "drain-timeout": {
      kind: "duration",
      default: "5s",
      help: "on SIGINT/SIGTERM, let live connections finish this long",
    },
  },
  examples: [
    "seaprox --listen socks5://127.0.0.1:1080",
    "seaprox --listen 'static://127.0.0.1:9000?to=example.org:80' --prefer-ipv4",
    "seaprox --listen http://alice:s3cret@127.0.0.1:8080 --forward socks5://10.0.0.2:1080",
    "seaprox --listen socks5://127.0.0.1:1080 --forward socks5://10.0.0.2:1080 " +
    "--forward http://10.0.1.3:3128 --forward link://10.0.2.4:7400 --link-token-file t",
  ],
} as const;

const isLink = (url: string) => url.startsWith("link://");
const isQuic = (url: string) => url.startsWith("quic://");
/**
 * `link://host:port` / `quic://host:port` -> its address; link schemes are served here, not
 * by startSeaprox.
 */
function linkAddr(url: string, flag: string, scheme = "link"): HostPort {
  try {
    return parseHostPort(url.slice(`${scheme}://`.length).replace(/\/$/, ""));
  } catch {
    throw new FlagError(flag, `--${flag}: not ${scheme}://host:port: ${url}`);
  }
}

/** What seaprox runs with, beyond the typed flags. */
export interface SeaproxServiceConfig {
  /** The proxy listener URLs (not link://), as written: their identity across reloads. */
  urls: string[];
  listeners: ListenerSpec[];
  linkListens: HostPort[];
  /** The `udp://` static UDP forwards (restart to change). */
  udpListens: UdpListenerSpec[];
  /** `quic://` listeners (the link over QUIC). */
  quicListens: HostPort[];
  /** The upstream chain (`--forward` or `--via` hops, in order); empty: dial directly. */
  hops: ForwardSpec[];
  tlsServer?: TlsServerConfig;
  tlsClient?: TlsClientConfig;
  /** How the first hop is reached through an egress proxy (`--proxy` ...), if at all. */
  proxy?: ProxySettings;
  acl: Acl;
  /** `--proxy-protocol-from`, checked; undefined: loopback only. */
  proxyProtocolFrom?: string[];
  prefer: "ipv4" | "ipv6";
}

/** seaprox's config from its flags; throws (FlagError, ProxyUrlError, ...) to refuse. */
export function validate(f: ServiceFlags<typeof command.flags>): SeaproxServiceConfig {
  if (f.listen.length === 0) {
    throw new FlagError("listen", "at least one --listen URL is required (see --help)");
  }
  if ([...f.listen, ...f.via, ...f.forward].some(isQuic) && !quicAvailable()) {
    throw new FlagError(
      f.listen.some(isQuic) ? "listen" : "via",
      new QuicUnavailableError().message,
    );
  }
  const urls = f.listen.filter((u) => !isLink(u) && !isQuic(u) && !isUdpListenUrl(u));
  const listeners = urls.map(parseListenUrl);
  for (const spec of listeners) {
    const problem = openProxyProblem(spec, f["allow-open"]) ?? listenerUnavailable(spec);
    if (problem) throw new FlagError("listen", problem);
  }
  const linkListens = f.listen.filter(isLink).map((u) => linkAddr(u, "listen"));
  const udpListens = f.listen.filter(isUdpListenUrl).map(parseUdpListenUrl);
  const quicListens = f.listen.filter(isQuic).map((u) => linkAddr(u, "listen", "quic"));
  if (f.via.length > 0 && f.forward.length > 0) {
    throw new FlagError("via", "give the chain with --forward or --via, not both (order matters)");
  }
  const hops = (f.via.length > 0 ? f.via : f.forward).map(parseForwardUrl);
  const viaLink = hops.some((h) => h.scheme === "link" || h.scheme === "quic");
  const noUdp = udpListens.length > 0 ? chainUdpRefusal(hops) : undefined;
  if (noUdp) {
    throw new FlagError("listen", `udp:// listeners cannot go through this chain: ${noUdp}`);
  }
  const tlsServer = tlsServerFromFlags(f), tlsClient = tlsClientFromFlags(f);
  if (tlsServer && linkListens.length === 0 && quicListens.length === 0) {
    throw new FlagError("tls-cert", "--tls-cert is for link:// and quic:// listeners");
  }
  if (tlsClient && hops[0]?.scheme !== "link" && hops[0]?.scheme !== "quic") {
    throw new FlagError("tls", "--tls/--tls-ca/--tls-client-cert are for a first hop link://");
  }
  if ((linkListens.length > 0 || viaLink) && !f["link-token"]) {
    throw new FlagError(
      "link-token",
      "--link-token (or SEAPROX_LINK_TOKEN) is required with link:// listeners or hops",
    );
  }
  checkQuic(quicListens.length > 0, hops, tlsServer);
  if (f.workers > 1 && (udpListens.length > 0 || quicListens.length > 0)) {
    // A UDP port is not shared: each worker would hold its own flows for the same peers.
    throw new FlagError("workers", "--workers: udp:// and quic:// listeners run in one process");
  }
  if (f.workers > 1 && [...listeners.map((l) => l.addr), ...linkListens].some((a) => !a.port)) {
    throw new FlagError("workers", "--workers: port 0 would give each worker its own port");
  }
  if (f["prefer-ipv6"] && f["prefer-ipv4"]) {
    throw new FlagError("prefer-ipv4", "--prefer-ipv6 and --prefer-ipv4 are exclusive");
  }
  const acl = aclFromFlags(f);
  const ppFrom = f["proxy-protocol-from"];
  try {
    new Acl({ allow: ppFrom });
  } catch (err) {
    throw new FlagError("proxy-protocol-from", `--proxy-protocol-from: ${errorMessage(err)}`);
  }
  return {
    urls,
    listeners,
    linkListens,
    udpListens,
    quicListens,
    hops,
    proxy: proxyFromFlags(f),
    tlsServer,
    tlsClient,
    acl,
    proxyProtocolFrom: ppFrom.length > 0 ? ppFrom : undefined,
    prefer: f["prefer-ipv4"] ? "ipv4" : "ipv6",
  };
}

/** quic:// needs a certificate (no client CA: Deno's QUIC cannot check one); a quic hop comes first. */
function checkQuic(
  listens: boolean,
  hops: readonly ForwardSpec[],
  tlsServer: TlsServerConfig | undefined,
): void {
  const hop = hops.findIndex((h) => h.scheme === "quic");
  if (!listens && hop < 0) return;
  const flag = listens ? "listen" : "via";
  if (hop > 0) throw new FlagError(flag, "a quic:// hop must be the first of the chain");
  if (listens && !tlsServer) {
    throw new FlagError("tls-cert", "quic:// listeners need --tls-cert/--tls-key (QUIC is TLS)");
  }
  if (listens && tlsServer?.ca) {
    throw new FlagError(
      "tls-client-ca",
      "--tls-client-ca cannot apply to quic:// (Deno's QUIC has no client certificates; " +
        "the link token authenticates the dialler)",
    );
  }
}
