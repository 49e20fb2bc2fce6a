/**
 * The inspector's listener (lib/http serveHttp: capped, head-timed): the page at `/`, the
 * JSON API under `/api/requests`. It answers only requests whose Host is `localhost` or an
 * IP address (a web page elsewhere cannot read it through DNS rebinding, which needs a name),
 * and a replay needs the `X-Warren-Inspect` header (a cross-site form cannot send it).
 * @module
 */

import { type Logger, silentLogger } from "../log.ts";
import { isLoopbackHost, type Server } from "../net/mod.ts";
import { serveHttp } from "../http/mod.ts";
import { type Inspector, ReplayError } from "./inspector.ts";
import { inspectorPage } from "./page.ts";

/** The header a replay request must carry (any value). */
export const replayHeader = "x-warren-inspect";

/** Options of {@linkcode serveInspector}. */
export interface InspectorServeOptions {
  log?: Logger;
}

/** Serve `inspector`'s page and API on `listener`. */
export function serveInspector(
  listener: Deno.Listener<Deno.Conn, Deno.NetAddr>,
  inspector: Inspector,
  opts: InspectorServeOptions = {},
): Server {
  return serveHttp(listener, (req) => handle(req, inspector), {
    log: opts.log ?? silentLogger,
  });
}

const ipLiteralRe = /^(\d{1,3}\.){3}\d{1,3}$|^\[[0-9a-fA-F:.]+\]$/;

async function handle(req: Request, inspector: Inspector): Promise<Response> {
  const url = new URL(req.url);
  if (!isLoopbackHost(url.hostname) && !ipLiteralRe.test(url.hostname)) {
    return new Response("forbidden: the inspector answers to localhost or an IP address only\n", {
      status: 403,
    });
  }
  if (url.pathname === "/" && req.method === "GET") {
    return new Response(inspectorPage, {
      headers: { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" },
    });
  }
  if (url.pathname === "/api/requests" && req.method === "GET") {
    return Response.json({
      version: inspector.ring.version,
      maxRequests: inspector.ring.maxRequests,
      bodyBytes: inspector.bodyBytes,
      requests: inspector.list(),
    });
  }
  const m = /^\/api\/requests\/(\d+)(\/replay)?$/.exec(url.pathname);
  if (m && !m[2] && req.method === "GET") {
    const d = inspector.detail(Number(m[1]));
    return d ? Response.json(d) : Response.json({ error: "unknown-request" }, { status: 404 });
  }
  if (m && m[2] && req.method === "POST") {
    if (!req.headers.has(replayHeader)) {
      return Response.json({ error: `a replay needs the ${replayHeader} header` }, {
        status: 403,
      });
    }
    try {
      return Response.json(await inspector.replay(Number(m[1])), { status: 201 });
    } catch (err) {
      if (!(err instanceof ReplayError)) throw err;
      const status = err.reason === "unknown-request"
        ? 404
        : err.reason === "body-truncated"
        ? 409
        : 502;
      return Response.json({ error: err.reason, message: err.message }, { status });
    }
  }
  return Response.json({ error: "not found" }, { status: 404 });
}
