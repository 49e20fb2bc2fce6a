/**
 * Per-host counters of a tunnel server: requests by outcome, relayed bytes, open streams.
 * Plain numbers, no metrics library: the status page and admin API read them, and
 * lib/tunnel/metrics.ts exports them to Prometheus at scrape time.
 * @module
 */

import { type Histogram, histogram } from "../stats.ts";
import type { RouteOrigin } from "./registry.ts";

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
  /** Whether its client is connected and ready. */
  connected: boolean;
  /** Where the host was defined: a flag, a hosts file, the admin API or a claim. */
  origin: RouteOrigin;
  /** Its access rules (counts and CIDRs, no secret), when it has any. */
  access?: { basic: number; bearer: number; allow: string[] };
}

/**
 * The counters of every host a server has seen, and the request count per (host, outcome)
 * that `warren_tunnel_requests_total` exports (404 and 400 under host "": an unregistered
 * or malformed Host must not grow the label set).
 */
export class TunnelStats {
  #hosts = new Map<string, HostStats>();
  #outcomes = new Map<string, Map<string, number>>();

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

  /** Count one request to `host` with its outcome ("proxied", "404", "502", …). */
  countRequest(host: string, outcome: string): void {
    if (outcome === "proxied") this.host(host).requests++;
    else if (outcome === "502" || outcome === "504") this.host(host).errors++;
    const label = outcome === "404" || outcome === "400" ? "" : host;
    let byOutcome = this.#outcomes.get(label);
    if (!byOutcome) {
      byOutcome = new Map();
      this.#outcomes.set(label, byOutcome);
    }
    byOutcome.set(outcome, (byOutcome.get(outcome) ?? 0) + 1);
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
