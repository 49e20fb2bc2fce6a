/**
 * The image's HEALTHCHECK: GET a service's own metrics/status endpoint from inside the
 * container (a minimal base has no curl) and exit 0 when it answers 2xx and, if asked, its
 * body matches a pattern (e.g. "the client is connected", not just "the process is alive").
 *
 *     WARREN_HEALTH_URL     default http://127.0.0.1:9100/metrics (run services with --metrics :9100)
 *     WARREN_HEALTH_EXPECT  optional regular expression (multiline) the body must match, e.g.
 *                           '^warren_tunnel_client_connected 1$' or '"connected":true'
 *
 * Arguments override the variables: `healthcheck.ts [url] [pattern]`.
 * @module
 */

/** Where the check looks when nothing is configured: the `--metrics :9100` endpoint. */
export const defaultHealthUrl = "http://127.0.0.1:9100/metrics";

/** A check slower than this fails (docker's own --timeout is the outer bound). */
export const healthTimeoutMs = 3_000;

/** Why a check failed, or undefined when healthy. */
export async function checkHealth(url: string, expect?: string): Promise<string | undefined> {
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(healthTimeoutMs) });
  } catch (err) {
    return `${url}: ${err instanceof Error ? err.message : String(err)}`;
  }
  const body = await res.text();
  if (!res.ok) return `${url}: HTTP ${res.status}`;
  if (expect && !new RegExp(expect, "m").test(body)) return `${url}: no match for /${expect}/`;
  return undefined;
}

if (import.meta.main) {
  const url = Deno.args[0] ?? Deno.env.get("WARREN_HEALTH_URL") ?? defaultHealthUrl;
  const expect = Deno.args[1] ?? Deno.env.get("WARREN_HEALTH_EXPECT") ?? undefined;
  const why = await checkHealth(url, expect || undefined);
  if (why) {
    console.error(`unhealthy: ${why}`);
    Deno.exit(1);
  }
  console.log(`healthy: ${url}`);
}
