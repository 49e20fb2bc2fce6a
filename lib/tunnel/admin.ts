/**
 * The token-protected admin API of a tunnel server: list, add and remove hosts, see
 * connected clients and status. Mount it on its own (loopback) listener.
 * @module
 */

import { Hono } from "hono";
import type { AuthFailureLimiter } from "../net/ratelimit.ts";
import { timingSafeEqual } from "../net/secret.ts";
import { errorMessage } from "../net/mod.ts";
import { remoteOf } from "./app.ts";
import type { TunnelServer } from "./server.ts";

/** Options of {@linkcode createAdminApp}. */
export interface AdminAppOptions {
  /** Bearer token every request must carry. */
  token: string;
  /** Limits wrong-token attempts per source address (answered 429 while limited). */
  authLimiter?: AuthFailureLimiter;
}

/**
 * The admin API (all routes need `Authorization: Bearer <token>`):
 * `GET /hosts`, `POST /hosts {host, identifier?}` (returns the identifier, generated when
 * absent), `DELETE /hosts/:host`, `GET /clients`, `GET /status`.
 */
export function createAdminApp(server: TunnelServer, opts: AdminAppOptions): Hono {
  if (!opts.token) throw new RangeError("admin token must not be empty");
  const app = new Hono();
  app.use("*", async (c, next) => {
    const auth = c.req.header("authorization") ?? "";
    const given = auth.toLowerCase().startsWith("bearer ") ? auth.slice(7).trim() : "";
    const remote = remoteOf(c).remote;
    // "-": served without connection info (an embedding's fetch): not limited.
    const limiter = remote === "-" ? undefined : opts.authLimiter;
    if (limiter && !limiter.allowed(remote)) {
      return c.json({ error: "too many failed attempts" }, 429, { "retry-after": "10" });
    }
    if (!given || !timingSafeEqual(given, opts.token)) {
      limiter?.failed(remote);
      return c.json({ error: "unauthorized" }, 401, { "www-authenticate": "Bearer" });
    }
    await next();
  });
  app.get("/hosts", async (c) => c.json(await server.status()));
  app.post("/hosts", async (c) => {
    let body: { host?: unknown; identifier?: unknown };
    try {
      body = await c.req.json();
    } catch {
      return c.json({ error: "body must be JSON" }, 400);
    }
    if (typeof body.host !== "string" || !body.host) return c.json({ error: "host required" }, 400);
    if (
      body.identifier !== undefined &&
      (typeof body.identifier !== "string" || body.identifier.length < 8)
    ) {
      return c.json({ error: "identifier must be a string of at least 8 characters" }, 400);
    }
    try {
      const identifier = await server.addHost(body.host, body.identifier as string | undefined);
      return c.json({ host: body.host.toLowerCase(), identifier }, 201);
    } catch (err) {
      return c.json({ error: errorMessage(err) }, 400);
    }
  });
  app.delete("/hosts/:host", async (c) => {
    const ok = await server.removeHost(c.req.param("host"));
    return ok ? c.body(null, 204) : c.json({ error: "no such host" }, 404);
  });
  app.get("/clients", (c) => c.json(server.clients()));
  app.get(
    "/status",
    async (c) => c.json({ hosts: await server.status(), clients: server.clients() }),
  );
  return app;
}
