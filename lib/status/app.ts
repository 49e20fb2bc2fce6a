/**
 * The status web app (Hono): the live page, its JSON snapshot and uPlot's files, mounted
 * beside `/metrics` by lib/metrics `serveMetrics`.
 * @module
 */

// Pinned inline, not through warren's deno.json: lib is imported from anywhere.
// deno-lint-ignore no-import-prefix
import { Hono } from "npm:hono@4.13.19";
import type { StatusHub } from "./hub.ts";
import { statusPageHtml } from "./page.ts";

/** Where uPlot's browser build lives (installed by `deno install` from deno.json). */
const uplotDist = new URL("../../node_modules/uplot/dist/", import.meta.url);

const assetCache = new Map<string, string | null>();

/** uPlot's file text, read once; null when node_modules is missing (the page then skips charts). */
function asset(name: string): string | null {
  if (!assetCache.has(name)) {
    let text: string | null = null;
    try {
      text = Deno.readTextFileSync(new URL(name, uplotDist));
    } catch {
      // Missing node_modules: served as 404; the page shows tables without charts.
      text = null;
    }
    assetCache.set(name, text);
  }
  return assetCache.get(name) ?? null;
}

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
    const [route, file, type] of [
      ["/status/ui/uplot.js", "uPlot.iife.min.js", "text/javascript; charset=utf-8"],
      ["/status/ui/uplot.css", "uPlot.min.css", "text/css; charset=utf-8"],
    ] as const
  ) {
    app.get(route, (c) => {
      const text = asset(file);
      if (text === null) return c.text("uPlot not installed\n", 404);
      c.header("content-type", type);
      c.header("cache-control", "max-age=3600");
      return c.body(text);
    });
  }
  return app;
}
