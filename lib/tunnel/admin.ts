/**
 * The token-protected admin API of a tunnel server: list, add and remove hosts, see
 * connected clients and status. Mount it on its own (loopback) listener.
 * @module
 */

// Pinned inline, not through warren's deno.json: lib is imported from anywhere.
// deno-lint-ignore no-import-prefix
import { type Context, Hono } from "npm:hono@4.13.19";
import type { AuthFailureLimiter } from "../net/ratelimit.ts";
import { timingSafeEqual } from "../net/secret.ts";
import { errorMessage } from "../net/mod.ts";
import { remoteOf } from "./app.ts";
import { bearerToken } from "./forward.ts";
import { HostTakenError, type TunnelServer } from "./server.ts";
import { HostAccessError, type HostAccessSpec } from "./access.ts";
import { normalizeHostPattern, RegistryUnavailableError } from "./registry.ts";
import { PortTunnelError, type PortTunnelFailure, type PortTunnelSpec } from "./port_tunnels.ts";
import { clusterView } from "./cluster_view.ts";
import type { HostRewriteSpec } from "./rewrite.ts";

/** A JSON list of strings, or undefined (a wrong type fails HostAccess's own checks). */
function list(v: unknown): string[] | undefined {
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || v.some((x) => typeof x !== "string")) {
    throw new HostAccessError("basic, bearer and allow must be lists of strings");
  }
  return v;
}

/** A refused rule change: 503 when the cluster's Redis is down, else 400 (a bad rule). */
function ruleRefused(c: Context, err: unknown): Response {
  return err instanceof RegistryUnavailableError
    ? c.json({ error: errorMessage(err), reason: "registry-unavailable" }, 503)
    : c.json({ error: errorMessage(err) }, 400);
}

/** HTTP status of each refused `POST /tcp` or `POST /udp`. */
const portFailureStatus: Readonly<Record<PortTunnelFailure, 400 | 403 | 409>> = {
  "bad-request": 400,
  "not-allowed": 403,
  "in-use": 409,
};

/** Options of {@linkcode createAdminApp}. */
export interface AdminAppOptions {
  /** Bearer token every request must carry. */
  token: string;
  /** Limits wrong-token attempts per source address (answered 429 while limited). */
  authLimiter?: AuthFailureLimiter;
  /**
   * Run after every change the API made (hosts, TCP/UDP tunnels), before it answers: the state
   * file is written here. A failure answers 500 naming it (the change itself stays in force).
   */
  onChange?: () => Promise<void>;
}

/**
 * The admin API (all routes need `Authorization: Bearer <token>`):
 * `GET /hosts` (each with its `origin`: flag, file or admin), `POST /hosts {host,
 * identifier?, replace?}` (201 with the identifier, generated when absent; 409 when the host
 * is served already, unless `replace: true`), `DELETE /hosts/:host`, `GET /clients`,
 * `GET /status`, `PUT /hosts/:host/access {basic?: ["user:pw"], bearer?: [token],
 * allow?: [cidr]}` (rules checked before a request reaches the client: 401/403; answered
 * without secrets), `DELETE /hosts/:host/access`, `PUT /hosts/:host/rewrite {host?,
 * request?: {set?, add?, remove?}, response?: {...}}` (header rewrites, lib/tunnel/rewrite.ts;
 * answered with header names only), `DELETE /hosts/:host/rewrite`, and server-defined TCP
 * tunnels: `GET /tcp`, `POST /tcp {publicPort, identifier, localPort?}` (201; 400 bad
 * request, 403 outside the TCP port range, 409 port taken; the identifier needs no host),
 * `DELETE /tcp/:port` (204, or 404); server-defined UDP tunnels the same under `/udp` (its
 * list shows each port's flows and datagram counters). In a cluster (shared registry)
 * `GET /hosts`, `/clients` and `/status` show every instance's (`instance` names the holder)
 * and `GET /cluster` adds the live instances ({@linkcode clusterView}).
 */
export function createAdminApp(server: TunnelServer, opts: AdminAppOptions): Hono {
  if (!opts.token) throw new RangeError("admin token must not be empty");
  const app = new Hono();
  app.use("*", async (c, next) => {
    const auth = c.req.header("authorization") ?? "";
    const given = bearerToken(auth) ?? "";
    const remote = remoteOf(c).remote;
    // "-": served without connection info (an embedding's fetch): not limited.
    const limiter = remote === "-" ? undefined : opts.authLimiter;
    const right = () => !!given && timingSafeEqual(given, opts.token);
    // HTTP says "limited" itself (429, Retry-After) instead of holding the request; the right
    // token passes whatever failed before it.
    const verdict = limiter
      ? await limiter.verify(remote, right, { hold: false })
      : right()
      ? "ok"
      : "wrong";
    if (verdict === "limited") {
      const retryS = Math.max(1, Math.ceil(limiter!.penaltyMs(remote) / 1000));
      return c.json({ error: "too many failed attempts" }, 429, { "retry-after": String(retryS) });
    }
    if (verdict === "wrong") {
      return c.json({ error: "unauthorized" }, 401, { "www-authenticate": "Bearer" });
    }
    await next();
  });
  /** After a change: persist it; the error to answer (500) when that failed. */
  const unsaved = async (): Promise<string | undefined> => {
    try {
      await opts.onChange?.();
      return undefined;
    } catch (err) {
      return `applied, but not saved: ${errorMessage(err)}`;
    }
  };
  app.get("/hosts", async (c) => c.json((await clusterView(server)).hosts));
  app.post("/hosts", async (c) => {
    let body: { host?: unknown; identifier?: unknown; replace?: unknown };
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
    if (body.replace !== undefined && typeof body.replace !== "boolean") {
      return c.json({ error: "replace must be true or false" }, 400);
    }
    let identifier: string;
    try {
      identifier = await server.addHost(body.host, body.identifier as string | undefined, {
        origin: "admin",
        exclusive: body.replace !== true,
      });
    } catch (err) {
      if (err instanceof HostTakenError) {
        return c.json({ error: err.message, reason: "host-taken" }, 409);
      }
      return c.json({ error: errorMessage(err) }, 400);
    }
    const err = await unsaved();
    if (err) return c.json({ error: err }, 500);
    return c.json({ host: normalizeHostPattern(body.host), identifier }, 201);
  });
  app.delete("/hosts/:host", async (c) => {
    const ok = await server.removeHost(c.req.param("host"));
    if (!ok) return c.json({ error: "no such host" }, 404);
    const err = await unsaved();
    return err ? c.json({ error: err }, 500) : c.body(null, 204);
  });
  app.put("/hosts/:host/access", async (c) => {
    let body: HostAccessSpec;
    try {
      body = await c.req.json();
    } catch {
      return c.json({ error: "body must be JSON" }, 400);
    }
    if (typeof body !== "object" || body === null) {
      return c.json({ error: "body must be {basic?, bearer?, allow?}" }, 400);
    }
    const host = c.req.param("host");
    if (!(await server.registry.lookup(host))) return c.json({ error: "no such host" }, 404);
    try {
      await server.setAccess(host, {
        basic: list(body.basic),
        bearer: list(body.bearer),
        allow: list(body.allow),
      });
    } catch (err) {
      return ruleRefused(c, err);
    }
    const err = await unsaved();
    return err ? c.json({ error: err }, 500) : c.json(server.accessInfo(host)!, 200);
  });
  app.delete("/hosts/:host/access", async (c) => {
    const host = c.req.param("host");
    if (!server.accessInfo(host)) return c.json({ error: "no access rules" }, 404);
    try {
      await server.setAccess(host, undefined);
    } catch (err) {
      return ruleRefused(c, err);
    }
    const err = await unsaved();
    return err ? c.json({ error: err }, 500) : c.body(null, 204);
  });
  app.put("/hosts/:host/rewrite", async (c) => {
    let body: HostRewriteSpec;
    try {
      body = await c.req.json();
    } catch {
      return c.json({ error: "body must be JSON" }, 400);
    }
    const host = c.req.param("host");
    if (!(await server.registry.lookup(host))) return c.json({ error: "no such host" }, 404);
    try {
      await server.setRewrite(host, body);
    } catch (err) {
      return ruleRefused(c, err);
    }
    const err = await unsaved();
    return err ? c.json({ error: err }, 500) : c.json(server.rewriteInfo(host)!, 200);
  });
  app.delete("/hosts/:host/rewrite", async (c) => {
    const host = c.req.param("host");
    if (!server.rewriteInfo(host)) return c.json({ error: "no rewrites" }, 404);
    try {
      await server.setRewrite(host, undefined);
    } catch (err) {
      return ruleRefused(c, err);
    }
    const err = await unsaved();
    return err ? c.json({ error: err }, 500) : c.body(null, 204);
  });
  /** `GET/POST /tcp|/udp` and `DELETE /tcp|/udp/:port`: the two protocols' tunnels. */
  const portRoutes = (
    proto: "tcp" | "udp",
    ops: {
      list(): unknown;
      add(spec: PortTunnelSpec): Promise<unknown>;
      remove(port: number): Promise<boolean>;
    },
  ) => {
    app.get(`/${proto}`, (c) => c.json(ops.list()));
    app.post(`/${proto}`, async (c) => {
      let body: { publicPort?: unknown; identifier?: unknown; localPort?: unknown };
      try {
        body = await c.req.json();
      } catch {
        return c.json({ error: "body must be JSON" }, 400);
      }
      if (typeof body !== "object" || body === null) {
        return c.json({ error: "body must be a JSON object" }, 400);
      }
      // It may introduce the identifier (a TCP/UDP-only client): the same rule as POST /hosts.
      if (typeof body.identifier !== "string" || body.identifier.length < 8) {
        return c.json({ error: "identifier must be a string of at least 8 characters" }, 400);
      }
      if (typeof body.publicPort !== "number") return c.json({ error: "publicPort required" }, 400);
      if (body.localPort !== undefined && typeof body.localPort !== "number") {
        return c.json({ error: "localPort must be a number" }, 400);
      }
      try {
        const info = await ops.add({
          publicPort: body.publicPort,
          identifier: body.identifier,
          localPort: body.localPort as number | undefined,
          origin: "admin",
        });
        const err = await unsaved();
        return err ? c.json({ error: err }, 500) : c.json(info, 201);
      } catch (err) {
        if (err instanceof PortTunnelError) {
          return c.json({ error: err.message, reason: err.reason }, portFailureStatus[err.reason]);
        }
        return c.json({ error: errorMessage(err) }, 500);
      }
    });
    app.delete(`/${proto}/:port`, async (c) => {
      const port = Number(c.req.param("port"));
      if (!Number.isInteger(port)) return c.json({ error: "port must be a number" }, 400);
      const ok = await ops.remove(port);
      if (!ok) {
        return c.json({ error: `no server-defined ${proto.toUpperCase()} tunnel there` }, 404);
      }
      const err = await unsaved();
      return err ? c.json({ error: err }, 500) : c.body(null, 204);
    });
  };
  portRoutes("tcp", {
    list: () => server.tcpTunnels(),
    add: (spec) => server.addTcpTunnel(spec),
    remove: (port) => server.removeTcpTunnel(port),
  });
  portRoutes("udp", {
    list: () => server.udpTunnels(),
    add: (spec) => server.addUdpTunnel(spec),
    remove: (port) => server.removeUdpTunnel(port),
  });
  app.get("/clients", async (c) => c.json((await clusterView(server)).clients));
  app.get("/status", async (c) => {
    const { hosts, clients } = await clusterView(server);
    return c.json({ hosts, clients });
  });
  app.get("/cluster", async (c) => c.json(await clusterView(server)));
  return app;
}
