/**
 * The seed's proxy model: a connection has a source side (the accepted client) and a
 * destination side (what we dial), each with a description and a state that only moves
 * forward: IDLE → CONNECTING → CONNECTED → CLOSED (any state may jump to CLOSED).
 * @module
 */

import type { HostPort } from "../net/addr.ts";
import { joinHostPort } from "../net/addr.ts";
import { isIP } from "node:net";

/** Where a side is in its life. Ordered: a side never goes back to an earlier state. */
export type ProxyState = "idle" | "connecting" | "connected" | "closed";

/** Which end of a proxy connection a side is. */
export type SideKind = "source" | "dest";

const stateOrder: Record<ProxyState, number> = { idle: 0, connecting: 1, connected: 2, closed: 3 };

/** A state change that would move a side backwards (a bug in a proxy type, not a peer). */
export class StateError extends Error {
  override name = "StateError";
  readonly reason = "bad-state";
}

/**
 * One side of a proxy connection.
 *
 * Why a class and not bare fields: transitions are checked, so a proxy type that reports
 * CONNECTED twice or reopens a closed side fails loudly in tests instead of corrupting
 * the per-connection log line.
 */
export class ProxySide {
  #state: ProxyState = "idle";
  #description: string | undefined;
  #describe: (() => string) | undefined;

  /** A side described by `description`, or by `describe()` when its description is first read. */
  constructor(readonly kind: SideKind, description: string | (() => string) = "-") {
    if (typeof description === "string") this.#description = description;
    else this.#describe = description;
  }

  /** Human description such as `ipv4[1.2.3.4:3234]`, `ipv6[[::1]:80]`, `name[example.org:80]`. */
  get description(): string {
    return this.#description ??= this.#describe?.() ?? "-";
  }

  set description(d: string) {
    this.#description = d;
  }

  /**
   * Describe the side by `describe()` when the description is first read (a log line, a
   * status page): most connections are never looked at, and the text costs on every one.
   */
  describeLater(describe: () => string): void {
    this.#description = undefined;
    this.#describe = describe;
  }

  /** Current state. */
  get state(): ProxyState {
    return this.#state;
  }

  /** Move forward to `to`; staying in the same state is allowed (idempotent), going back is not. */
  transition(to: ProxyState): void {
    if (stateOrder[to] < stateOrder[this.#state]) {
      throw new StateError(`${this.kind} side: ${this.#state} -> ${to} goes backwards`);
    }
    this.#state = to;
  }
}

/**
 * Describe an endpoint the way the seed does: `ipv4[1.2.3.4:3234]`, `ipv6[[::1]:80]`, or
 * `name[example.org:80]` for an unresolved host name.
 */
export function describeEndpoint(ep: HostPort | Deno.Addr): string {
  let host: string;
  let port: number;
  if ("transport" in ep) {
    if (ep.transport !== "tcp" && ep.transport !== "udp") {
      return `${ep.transport}[${"path" in ep ? ep.path : "?"}]`;
    }
    host = ep.hostname;
    port = ep.port;
  } else {
    host = ep.host;
    port = ep.port;
  }
  const family = isIP(host);
  const kind = family === 4 ? "ipv4" : family === 6 ? "ipv6" : "name";
  return `${kind}[${joinHostPort(host, port)}]`;
}
