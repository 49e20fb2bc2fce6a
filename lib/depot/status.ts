/**
 * The status endpoint of depot-server and depot-local: a Hono app (a fetch handler, so
 * the service decides where it listens: `--status host:port` or beside `/metrics`).
 * @module
 */

import { Hono } from "hono";
import { registry } from "../metrics.ts";

/** Anything with a JSON-able status snapshot. */
export interface HasStatus {
  /** A JSON-serialisable snapshot. */
  status(): object;
}

/**
 * `GET /status` (JSON snapshot), `GET /metrics` (Prometheus text), `GET /healthz` ("ok").
 *
 * @example
 * ```ts ignore
 * Deno.serve({ hostname: "127.0.0.1", port: 7080 }, statusApp(server).fetch);
 * ```
 */
export function statusApp(source: HasStatus): Hono {
  const app = new Hono();
  app.get("/status", (c) => c.json(source.status()));
  app.get("/healthz", (c) => c.text("ok\n"));
  app.get("/metrics", async (c) => {
    c.header("content-type", registry.contentType);
    return c.body(await registry.metrics());
  });
  return app;
}
