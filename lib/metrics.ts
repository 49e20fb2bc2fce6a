/**
 * Prometheus metrics: one registry per process (prom-client) and a small HTTP endpoint
 * for `--metrics host:port`. Library modules register their counters here so every
 * service exports the same names.
 * @module
 */

import client from "prom-client";
import type { Logger } from "./log.ts";
import { liveServers } from "./net/serve.ts";
import { type StatusHub, statusUiApp } from "./status/mod.ts";

/** The process-wide registry every warren metric lives in. */
export const registry: client.Registry = new client.Registry();

/** A counter in the shared registry (created once per name). */
export function counter<L extends string>(
  name: string,
  help: string,
  labelNames: readonly L[] = [],
): client.Counter<L> {
  const found = registry.getSingleMetric(name);
  if (found) return found as client.Counter<L>;
  return new client.Counter({ name, help, labelNames, registers: [registry] });
}

/** A gauge in the shared registry (created once per name). */
export function gauge<L extends string>(
  name: string,
  help: string,
  labelNames: readonly L[] = [],
  collect?: (this: client.Gauge<L>) => void,
): client.Gauge<L> {
  const found = registry.getSingleMetric(name);
  if (found) return found as client.Gauge<L>;
  return new client.Gauge({
    name,
    help,
    labelNames,
    registers: [registry],
    ...(collect ? { collect } : {}),
  });
}

/**
 * A counter whose value is read at scrape time from live state (cumulative counts kept by
 * the code that owns them), per label set: `read` returns `[labels, value]` pairs.
 */
export function collectedCounter<L extends string>(
  name: string,
  help: string,
  labelNames: readonly L[],
  read: () => [Partial<Record<L, string>>, number][],
): client.Counter<L> {
  const found = registry.getSingleMetric(name);
  if (found) return found as client.Counter<L>;
  return new client.Counter<L>({
    name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      this.reset();
      for (const [labels, v] of read()) if (v >= 0) this.inc(labels, v);
    },
  });
}

// Every service's listeners (every lib/net serve() loop): connections and refusals by reason.
gauge("warren_listener_connections_active", "Connections open now, by listener", [
  "listener",
], function () {
  this.reset();
  for (const s of liveServers) this.set({ listener: formatListener(s.addr) }, s.stats.active);
});
collectedCounter(
  "warren_listener_connections_total",
  "Connections accepted, by listener (refused ones included)",
  ["listener"],
  () => [...liveServers].map((s) => [{ listener: formatListener(s.addr) }, s.stats.total]),
);
collectedCounter(
  "warren_listener_errors_total",
  "Connections refused or failed at the listener, by reason (limit, handshake-timeout, " +
    "handler-error)",
  ["listener", "reason"],
  () =>
    [...liveServers].flatMap((s) => {
      const listener = formatListener(s.addr);
      return [
        [{ listener, reason: "limit" }, s.stats.rejected],
        [{ listener, reason: "handshake-timeout" }, s.stats.handshakeTimeouts],
        [{ listener, reason: "handler-error" }, s.stats.errors],
      ] as [Partial<Record<"listener" | "reason", string>>, number][];
    }),
);

function formatListener(a: Deno.NetAddr): string {
  return a.hostname.includes(":") ? `[${a.hostname}]:${a.port}` : `${a.hostname}:${a.port}`;
}

/** Extra routes a service adds beside `/metrics` (a status JSON, a page). */
export type ExtraRoutes = Record<string, () => Response | Promise<Response>>;

/** Options of `serveMetrics`. */
export interface ServeMetricsOptions {
  /**
   * Serve the live status page of this hub (`/`, `/status/ui`, `/status/ui/data`, uPlot's
   * files) beside `/metrics`; the hub samples while the server runs.
   */
  status?: StatusHub;
}

/**
 * Serve `/metrics` (Prometheus text), `extra` routes and, with `opts.status`, the live status
 * page on `hostname:port`. Returns the server so the caller can shut it down with the service.
 */
export function serveMetrics(
  hostname: string,
  port: number,
  log: Logger,
  extra: ExtraRoutes = {},
  opts: ServeMetricsOptions = {},
): Deno.HttpServer<Deno.NetAddr> {
  const ui = opts.status ? statusUiApp(opts.status) : undefined;
  const server = Deno.serve({
    hostname,
    port,
    onListen: (a) => log.info("metrics listening", { addr: `${a.hostname}:${a.port}` }),
  }, async (req) => {
    const path = new URL(req.url).pathname;
    if (path === "/metrics") {
      return new Response(await registry.metrics(), {
        headers: { "content-type": registry.contentType },
      });
    }
    const route = extra[path];
    if (route) return await route();
    if (ui) return await ui.fetch(req);
    return new Response("not found\n", { status: 404 });
  });
  if (opts.status) {
    opts.status.start();
    void server.finished.then(() => opts.status?.stop());
  }
  return server;
}
