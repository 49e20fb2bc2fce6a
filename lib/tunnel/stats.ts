/**
 * Per-host counters of a tunnel server: requests by outcome, relayed bytes, open streams.
 * Plain numbers, no metrics library: the status page and admin API read them, and
 * lib/tunnel/metrics.ts exports them to Prometheus at scrape time.
 * @module
 */

import { type Histogram, histogram } from "../stats.ts";
import type { RouteOrigin } from "./registry.ts";
import type { HostRewriteInfo } from "./rewrite.ts";

/**
 * Duration of each tunnel stream the public front opens (a request, or a kept-alive run of
 * requests to one host), from the request head to the last response byte, by outcome.
 */
export const tunnelRequestSeconds: Histogram<"outcome"> = histogram(
  "warren_tunnel_request_duration_seconds",
  "Tunnel streams from the request head to the last response byte, by outcome",
  ["outcome"],
);

/** Live counters of one virtual host (kept across client reconnects). */
export interface HostStats {
  /** Requests proxied to the client. */
  requests: number;
  /** Bytes from the public side to the client. */
  bytesIn: number;
  /** Bytes from the client to the public side. */
  bytesOut: number;
  /** Tunnel streams open now. */
  openStreams: number;
  /** Requests answered by the tunnel itself with 502/504. */
  errors: number;
}

/** Status of one registered host (admin API, status page). */
export interface HostStatus extends HostStats {
  /** The virtual host. */
  host: string;
  /** Fingerprint of the identifier serving it. */
  client: string;
  /** Whether its client is connected and ready (on any instance of a cluster). */
  connected: boolean;
  /** Clients connected for it (more than one: a group sharing the load). */
  members: number;
  /** Of those, the ones whose health check passes (or that have none): in rotation. */
  healthy: number;
  /** In a cluster (shared registry): the instance holding its client, if one does. */
  instance?: string;
  /** Where the host was defined: a flag, a hosts file, the admin API or a claim. */
  origin: RouteOrigin;
  /**
   * Its access rules (counts and CIDRs, no secret), when it has any: the server's, else
   * those its connected client set (`from: "client"`).
   */
  access?: { basic: number; bearer: number; allow: string[]; from?: "client" };
  /** Its header rewrites set on the server (names, no values). */
  rewrite?: HostRewriteInfo;
  /** The header rewrites its connected client set (names, no values). */
  clientRewrite?: HostRewriteInfo;
}

/** Distinct unknown hosts the status page lists (the most recent ones). */
export const recentUnknownHostsKept = 20;
/** Longest unknown host name kept in that list (a DNS name has at most 253 characters). */
const maxUnknownHostChars = 253;

/** One host asked for that no entry serves (a 404), as the status page lists it. */
export interface UnknownHost {
  /** The name asked for (normalised; "" for a malformed Host). */
  host: string;
  /** 404s for it since it entered the list. */
  requests: number;
  /** Epoch ms of the last one. */
  lastMs: number;
}

/**
 * The counters of every host a server has seen, and the request count per (host, outcome)
 * that `warren_tunnel_requests_total` exports (404 and 400 under host "": an unregistered
 * or malformed Host must not grow the label set). Unknown hosts are counted in one number
 * and a list of the last {@linkcode recentUnknownHostsKept} names (a typo'd DNS entry or a
 * client that never connected shows there; a scan of random names cannot grow it).
 */
export class TunnelStats {
  #hosts = new Map<string, HostStats>();
  #outcomes = new Map<string, Map<string, number>>();
  /** Requests answered 404 because no entry serves their Host. */
  unknownHostRequests = 0;
  /** The recent unknown hosts, least recent first (Map order: re-inserted on each hit). */
  #unknown = new Map<string, UnknownHost>();

  /** Counters of `host` (created on first use). */
  host(host: string): HostStats {
    let s = this.#hosts.get(host);
    if (!s) {
      s = { requests: 0, bytesIn: 0, bytesOut: 0, openStreams: 0, errors: 0 };
      this.#hosts.set(host, s);
    }
    return s;
  }

  /** Counters of every host seen so far. */
  hosts(): [string, HostStats][] {
    return [...this.#hosts];
  }

  /** Count one request to `host` with its outcome ("proxied", "404", "502", ...). */
  countRequest(host: string, outcome: string): void {
    if (outcome === "proxied") this.host(host).requests++;
    else if (outcome === "502" || outcome === "504") this.host(host).errors++;
    else if (outcome === "404") this.#countUnknown(host);
    const label = outcome === "404" || outcome === "400" ? "" : host;
    let byOutcome = this.#outcomes.get(label);
    if (!byOutcome) {
      byOutcome = new Map();
      this.#outcomes.set(label, byOutcome);
    }
    byOutcome.set(outcome, (byOutcome.get(outcome) ?? 0) + 1);
  }

  #countUnknown(host: string): void {
    this.unknownHostRequests++;
    const name = host.slice(0, maxUnknownHostChars);
    const prev = this.#unknown.get(name);
    this.#unknown.delete(name);
    this.#unknown.set(name, {
      host: name,
      requests: (prev?.requests ?? 0) + 1,
      lastMs: Date.now(),
    });
    if (this.#unknown.size > recentUnknownHostsKept) {
      this.#unknown.delete(this.#unknown.keys().next().value!);
    }
  }

  /** The recent unknown hosts, most recent first (at most {@linkcode recentUnknownHostsKept}). */
  recentUnknownHosts(): UnknownHost[] {
    return [...this.#unknown.values()].reverse().map((u) => ({ ...u }));
  }

  /** Requests counted so far as `[host, outcome, count]`. */
  outcomes(): [string, string, number][] {
    const out: [string, string, number][] = [];
    for (const [host, byOutcome] of this.#outcomes) {
      for (const [outcome, n] of byOutcome) out.push([host, outcome, n]);
    }
    return out;
  }
}
