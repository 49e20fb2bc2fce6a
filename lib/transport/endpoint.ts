/**
 * Where a transport goes: `tcp://`, `tls://`, `ws://` and `wss://` endpoints, and the
 * name a service flag gives the carrier (`--transport tcp|ws`).
 * @module
 */

import { AddressError, joinHostPort, parseHostPort } from "../net/addr.ts";

/** What carries a byte stream: TCP, TLS, WebSocket, WebSocket over TLS. */
export type TransportKind = "tcp" | "tls" | "ws" | "wss";

/**
 * The carrier a service flag names; TLS comes from the TLS flags: "tcp" with TLS is "tls",
 * "ws" with TLS is "wss". WebSocket passes HTTP-only proxies and CDNs, at the cost of framing.
 */
export type TransportName = "tcp" | "ws";

/** Every {@linkcode TransportName}, for flag validation. */
export const transportNames: readonly TransportName[] = ["tcp", "ws"];

/** One endpoint of a transport. */
export interface Endpoint {
  kind: TransportKind;
  host: string;
  port: number;
  /** Request target of the WebSocket upgrade. @default "/" */
  path: string;
}

/** The kind for carrier `name`, secured with TLS or not. */
export function transportKind(name: TransportName, tls: boolean): TransportKind {
  if (name === "ws") return tls ? "wss" : "ws";
  return tls ? "tls" : "tcp";
}

/** Whether `kind` runs over TLS. */
export function isTlsKind(kind: TransportKind): boolean {
  return kind === "tls" || kind === "wss";
}

/** Whether `kind` is WebSocket (needs the upgrade handshake). */
export function isWebSocketKind(kind: TransportKind): boolean {
  return kind === "ws" || kind === "wss";
}

const endpointShape = /^(tcp|tls|ws|wss):\/\/([^/?#]+)(\/[^?#]*)?$/i;

/**
 * Parse `kind://host:port[/path]` (kind tcp, tls, ws or wss; ws/wss default to ports 80/443
 * when none is given) or a bare `host:port` (then `defaultKind`).
 * @throws {AddressError} for anything else.
 */
export function parseEndpoint(s: string, defaultKind: TransportKind = "tcp"): Endpoint {
  const m = endpointShape.exec(s.trim());
  if (!m) {
    if (s.includes("://")) {
      throw new AddressError(`not a transport URL (tcp, tls, ws, wss): ${JSON.stringify(s)}`);
    }
    return { kind: defaultKind, ...parseHostPort(s), path: "/" };
  }
  const kind = m[1].toLowerCase() as TransportKind;
  const hasPort = /:\d+$/.test(m[2]) && !/^\[[^\]]*\]$/.test(m[2]);
  const defaultPort = kind === "wss" ? 443 : kind === "ws" ? 80 : undefined;
  if (!hasPort && defaultPort === undefined) {
    throw new AddressError(`${kind}:// needs a port: ${JSON.stringify(s)}`);
  }
  const { host, port } = parseHostPort(hasPort ? m[2] : `${m[2]}:${defaultPort}`);
  return { kind, host, port, path: m[3] ?? "/" };
}

/** Render an endpoint as its URL (for logs). */
export function formatEndpoint(ep: Endpoint): string {
  const path = isWebSocketKind(ep.kind) && ep.path !== "/" ? ep.path : "";
  return `${ep.kind}://${joinHostPort(ep.host, ep.port)}${path}`;
}
