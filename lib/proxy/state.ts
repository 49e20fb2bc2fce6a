/**
 * The seed's proxy model: a connection has a source side (the accepted client) and a
 * destination side (what we dial), each with a description and a state that only moves
 * forward: IDLE -> CONNECTING -> CONNECTED -> CLOSED (any state may jump to CLOSED).
 * @module
 */

import type { HostPort } from "../net/addr.ts";
import { ipFamily, joinHostPort } from "../net/addr.ts";

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
  /** The endpoint to describe when first read (no closure for the usual case). */
  #endpoint: HostPort | Deno.Addr | undefined;
  /** Where a dial for `#endpoint` arrived, when known (`asked=reached` if they differ). */
  #reached: Deno.Addr | undefined;

  /**
   * A side described by `description`: text, an endpoint described when first read (see
   * {@linkcode describeEndpoint}), or `describe()` called then.
   */
  constructor(
    readonly kind: SideKind,
    description: string | HostPort | Deno.Addr | (() => string) = "-",
  ) {
    if (typeof description === "string") this.#description = description;
    else if (typeof description === "function") this.#describe = description;
    else this.#endpoint = description;
  }

  /** Human description such as `ipv4[1.2.3.4:3234]`, `ipv6[[::1]:80]`, `name[example.org:80]`. */
  get description(): string {
    return this.#description ??= this.#describeNow();
  }

  set description(d: string) {
    this.#description = d;
  }

  #describeNow(): string {
    if (this.#describe) return this.#describe();
    const asked = this.#endpoint;
    if (asked === undefined) return "-";
    const text = describeEndpoint(asked);
    const reached = this.#reached && describeEndpoint(this.#reached);
    return reached === undefined || reached === text ? text : `${text}=${reached}`;
  }

  /**
   * Describe the side by `describe()` when the description is first read (a log line, a
   * status page): most connections are never looked at, and the text costs on every one.
   */
  describeLater(describe: () => string): void {
    this.#description = undefined;
    this.#describe = describe;
    this.#endpoint = undefined;
  }

  /**
   * Describe the side as the endpoint `asked` (`ipv4[...]`, `name[...]`), and, once `reached` is
   * given and differs from it, as `asked=reached` (`name[example.org:80]=ipv4[...]`), when the
   * description is first read: as {@linkcode describeLater} without a closure per side.
   */
  describeEndpointLater(asked: HostPort | Deno.Addr, reached?: Deno.Addr): void {
    this.#description = undefined;
    this.#describe = undefined;
    this.#endpoint = asked;
    this.#reached = reached;
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
  const family = ipFamily(host);
  const kind = family === 4 ? "ipv4" : family === 6 ? "ipv6" : "name";
  return `${kind}[${joinHostPort(host, port)}]`;
}
