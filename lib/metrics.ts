/**
 * Prometheus metrics: one registry per process (prom-client) and a small HTTP endpoint
 * for `--metrics host:port`. Library modules register their counters here so every
 * service exports the same names.
 * @module
 */

import client from "prom-client";
import type { Logger } from "./log.ts";
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
