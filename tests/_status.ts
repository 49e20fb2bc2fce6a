/**
 * Helpers for the status page tests: headless Debian chromium through playwright-core
 * (closed even when the test fails), and a steady trickle of traffic through a service.
 */

// Test-only, pinned here rather than in deno.json (kept out of the image and installs).
// deno-lint-ignore no-import-prefix
import { type Browser, chromium, type Page } from "npm:playwright-core@1.65.1";

export type { Page };
import { closeQuietly, dial, writeAll } from "../lib/net/mod.ts";
import { randomBlock } from "./_util.ts";

/** Debian's chromium binary. */
export const chromiumPath = "/usr/bin/chromium";

/**
 * How long Playwright's own waits (goto, waitForFunction, locators) may take in every context:
 * a hang's bound. Its default, 30 s, is a timing bound a loaded 2-core box running chromium
 * beside the suite can reach.
 */
export const browserWaitMs = 120_000;

/**
 * Run `fn` with a headless chromium; always closes it. Background networking is off: on a
 * closed network Chromium otherwise keeps trying to reach Google services. Playwright gives
 * the browser a fresh empty profile directory of its own (and removes it). Every context
 * (`browser.newPage()` makes one too) waits up to `browserWaitMs`.
 */
export async function withBrowser<T>(fn: (browser: Browser) => Promise<T>): Promise<T> {
  const browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const newContext = browser.newContext.bind(browser);
  browser.newContext = async (options) => {
    const context = await newContext(options);
    context.setDefaultTimeout(browserWaitMs);
    return context;
  };
  try {
    return await fn(browser);
  } finally {
    await browser.close();
  }
}

/**
 * Connect to `port` and send 64 KiB every `everyMs` until `signal` aborts; the peer must
 * read. Returns when stopped (the connection is closed).
 */
export async function trickle(port: number, everyMs: number, signal: AbortSignal): Promise<void> {
  const conn = await dial("127.0.0.1", port);
  try {
    while (!signal.aborted) {
      await writeAll(conn, randomBlock.subarray(0, 65536));
      await new Promise((r) => setTimeout(r, everyMs));
    }
  } finally {
    closeQuietly(conn);
  }
}

/** Accept connections and read them to EOF (a sink for `trickle`). */
export function sink(): { port: number; close(): Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const loop = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      void (async () => {
        const buf = new Uint8Array(65536);
        try {
          while ((await conn.read(buf)) !== null) { /* discard */ }
        } catch {
          // Reset by the proxy at shutdown: nothing to do for a sink.
        } finally {
          conns.delete(conn);
          closeQuietly(conn);
        }
      })();
    }
  })();
  return {
    port: listener.addr.port,
    close: async () => {
      closeQuietly(listener);
      for (const c of conns) closeQuietly(c);
      await loop.catch(() => {});
      while (conns.size > 0) await new Promise((r) => setTimeout(r, 10));
    },
  };
}
