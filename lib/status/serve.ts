/**
 * `serveObservability()`: the one HTTP listener of a service's `--metrics` (and depot's
 * `--status`): Prometheus text at `/metrics`, the service's JSON at `/status`, `/healthz`,
 * and the live status page. This is the top layer: it composes lib/metrics (the registry)
 * with the status hub, so neither the registry nor any protocol module knows of the page.
 * @module
 */

import type { Logger } from "../log.ts";
import { metricsContentType, metricsText } from "../metrics.ts";
import { serveHttp } from "../http/server.ts";
import { formatAddr } from "../net/serve.ts";
import { timingSafeEqual } from "../net/secret.ts";
import { workerOwnPort, workerSlot } from "../net/worker_slot.ts";
import { gauge } from "../stats.ts";
import { denoVersion, warrenVersion } from "../version.ts";
import { StatusHub, type StatusProvider } from "./hub.ts";
import { jsonStatusProvider } from "./json.ts";

gauge("warren_build_info", "warren's version and Deno's (always 1)", ["version", "deno"])
  .set({ version: warrenVersion, deno: denoVersion }, 1);

/** What a service shows: its name, its JSON status, its page's tables and charts. */
export interface ObservabilityOptions {
  /** The service's name, the status page's title (`depot-local edge-1`). */
  service: string;
  log: Logger;
  /** The JSON answered at `/status` (live connections, sessions...); none: 404. */
  status?: () => unknown | Promise<unknown>;
  /**
   * The status page's providers, in page order.
   * @default a provider showing `status` as tables (or nothing without `status`)
   */
  providers?: StatusProvider[];
  /**
   * The listener's name in the log: `metrics` logs `metrics listening`, any other name the
   * standard `listening` line with `name`. @default "metrics"
   */
  name?: string;
  /**
   * Who may read the page, `/status` and `/metrics` (`/healthz` stays open): `user:pass`
   * (HTTP Basic) or `bearer:<token>`; a function is read at each request (a reload changes
   * it). None: open, which is why `--metrics` binds loopback unless told otherwise.
   */
  auth?: string | (() => string | undefined);
}

/** A running observability listener. */
export interface ObservabilityServer {
  readonly addr: Deno.NetAddr;
  /** Stop listening and sampling; resolves when the listener is closed. */
  shutdown(): Promise<void>;
  /** Resolves when the listener has ended. */
  readonly finished: Promise<void>;
}

/**
 * The request handler of {@linkcode serveObservability}, for an embedding that runs its own
 * HTTP server: `/metrics`, `/status`, `/healthz`, the page (`/`, `/status/ui`, its data and
 * uPlot's files). The hub is sampled only while the returned `hub` is started.
 */
export function observabilityHandler(
  opts: ObservabilityOptions,
): { hub: StatusHub; fetch: (req: Request, remote?: string) => Promise<Response> } {
  const hub = new StatusHub({ service: opts.service });
  const providers = opts.providers ?? (opts.status ? [jsonStatusProvider(opts.status)] : []);
  for (const p of providers) hub.register(p);
  // The page's app (Hono, uPlot's ~50 KB of text, the page) is loaded at the first request
  // that is not /healthz, /metrics or /status: a process nobody opens the page of never carries
  // it in its heap, which every full GC marks (issue 20).
  let ui: Promise<{ fetch(req: Request): Response | Promise<Response> }> | undefined;
  const status = opts.status;
  const authOf = typeof opts.auth === "function"
    ? opts.auth
    : () => opts.auth as string | undefined;
  const slot = workerSlot();
  const answer = async (req: Request, remote = ""): Promise<Response> => {
    const path = new URL(req.url).pathname;
    if (path === "/healthz") return new Response("ok\n");
    const auth = authOf();
    if (auth && !authorized(req, auth)) {
      opts.log.warn("status authentication failed", { remote, path, failure: "auth-failed" });
      return new Response("authentication required\n", {
        status: 401,
        headers: { "www-authenticate": 'Basic realm="warren", charset="UTF-8"' },
      });
    }
    if (path === "/metrics") {
      return new Response(await metricsText(), {
        headers: { "content-type": metricsContentType },
      });
    }
    if (path === "/status" && status) return Response.json(await status());
    ui ??= import("./app.ts").then((m) => m.statusUiApp(hub));
    return await (await ui).fetch(req);
  };
  // One of several workers (`--workers`): every answer says whose it is.
  const fetch = !slot ? answer : async (req: Request, remote?: string) => {
    const res = await answer(req, remote);
    const headers = new Headers(res.headers);
    headers.set("x-warren-worker", `${slot.index}/${slot.count}`);
    return new Response(res.body, { status: res.status, headers });
  };
  if (slot) {
    gauge("warren_worker_info", "which of the --workers processes answered (always 1)", [
      "worker",
      "workers",
    ]).set({ worker: String(slot.index), workers: String(slot.count) }, 1);
  }
  return { hub, fetch };
}

/**
 * Whether `req` carries the credentials `auth` names (`user:pass` as HTTP Basic, or
 * `bearer:<token>`), compared in constant time.
 */
function authorized(req: Request, auth: string): boolean {
  const given = req.headers.get("authorization") ?? "";
  const sp = given.indexOf(" ");
  const scheme = given.slice(0, sp < 0 ? 0 : sp).toLowerCase();
  const value = given.slice(sp + 1).trim();
  if (auth.startsWith("bearer:")) {
    return scheme === "bearer" && timingSafeEqual(value, auth.slice(7));
  }
  if (scheme !== "basic") return false;
  let decoded: string;
  try {
    decoded = new TextDecoder().decode(Uint8Array.from(atob(value), (c) => c.charCodeAt(0)));
  } catch {
    return false; // not base64: no credentials at all
  }
  return timingSafeEqual(decoded, auth);
}

/**
 * The port worker i of N (`--workers`) serves `/metrics` and the status page on: `port + i - 1`
 * (port 0: any, each its own), never a shared one. Each worker counts only its own traffic, so
 * a scrape of a shared port would get whichever worker the kernel picked; on its own port each
 * one is a scrape target of its own (sum over `worker` for the whole machine).
 */
export function workerObservabilityPort(port: number): number {
  return workerOwnPort(port);
}

/**
 * Serve {@linkcode observabilityHandler} on `listen` (with `--workers`, on
 * {@linkcode workerObservabilityPort}) through lib/http `serveHttp` (a
 * connection cap, head and exchange timers; an fd shortage pauses accepting and never ends
 * the process). Throws like `Deno.listen` when the port is busy: the service turns that into
 * its one-line exit.
 *
 * @example
 * ```ts
 * import { serveObservability } from "./serve.ts";
 * import { silentLogger } from "../log.ts";
 * const obs = serveObservability({ host: "127.0.0.1", port: 0 }, {
 *   service: "tunnel-client",
 *   log: silentLogger,
 *   status: () => ({ state: "connected", streams: 0 }),
 * });
 * const res = await fetch(`http://127.0.0.1:${obs.addr.port}/status`);
 * console.log(await res.json()); // the service's status, with its charts' series
 * await obs.shutdown();
 * ```
 */
export function serveObservability(
  listen: { host: string; port: number },
  opts: ObservabilityOptions,
): ObservabilityServer {
  const name = opts.name ?? "metrics";
  const { hub, fetch } = observabilityHandler(opts);
  const listener = Deno.listen({
    hostname: listen.host,
    port: workerObservabilityPort(listen.port),
  });
  // Capped, with head and exchange timers (not Deno.serve, which dies when fds run out).
  const server = serveHttp(listener, (req, info) => fetch(req, formatAddr(info.remoteAddr)), {
    log: opts.log.child({ listener: name }),
  });
  const addr = formatAddr(server.addr);
  if (name === "metrics") opts.log.info("metrics listening", { addr });
  else opts.log.info("listening", { name, addr });
  hub.start();
  const finished = server.finished.then(() => hub.stop());
  return {
    addr: server.addr,
    finished,
    shutdown: async () => {
      await server.stop();
      await finished;
    },
  };
}
