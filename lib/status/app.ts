/**
 * The status web app (Hono): the live page, its JSON snapshot and uPlot's files, mounted
 * beside `/metrics` by `serveObservability` (serve.ts).
 * @module
 */

// Pinned inline, not through warren's deno.json: lib is imported from anywhere.
// deno-lint-ignore no-import-prefix
import { Hono } from "npm:hono@4.13.19";
// uPlot's browser build, embedded as text (in the module graph: served the same when the
// service is installed, compiled, or run without node_modules).
// deno-lint-ignore no-import-prefix
import uplotJs from "npm:uplot@1.6.32/dist/uPlot.iife.min.js" with { type: "text" };
// deno-lint-ignore no-import-prefix
import uplotCss from "npm:uplot@1.6.32/dist/uPlot.min.css" with { type: "text" };
import type { StatusHub } from "./hub.ts";
import { statusPageHtml } from "./page.ts";

/**
 * `GET /` and `/status/ui` (the page), `/status/ui/data` (JSON: tables + chart histories),
 * `/status/ui/uplot.js` and `/status/ui/uplot.css`.
 */
export function statusUiApp(hub: StatusHub): Hono {
  const app = new Hono();
  const html = statusPageHtml(hub.service, {
    uplotJs: "/status/ui/uplot.js",
    uplotCss: "/status/ui/uplot.css",
    data: "/status/ui/data",
  });
  const page = () =>
    new Response(html, {
      headers: { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" },
    });
  app.get("/", page);
  app.get("/status/ui", page);
  app.get("/status/ui/data", async (c) => {
    c.header("cache-control", "no-store");
    return c.json(await hub.data());
  });
  for (
    const [route, text, type] of [
      ["/status/ui/uplot.js", uplotJs, "text/javascript; charset=utf-8"],
      ["/status/ui/uplot.css", uplotCss, "text/css; charset=utf-8"],
    ] as const
  ) {
    app.get(route, (c) => {
      c.header("content-type", type);
      c.header("cache-control", "max-age=3600");
      return c.body(text);
    });
  }
  return app;
}
