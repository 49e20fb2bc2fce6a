/**
 * Prometheus metrics: one registry per process (prom-client) that exports every stat of
 * lib/stats.ts (where protocol modules count without loading prom-client), read at scrape
 * time. The HTTP endpoint (`/metrics` beside the status page) is lib/status
 * `serveObservability`, the layer above.
 * @module
 */

// Pinned inline, not through warren's deno.json: lib is imported from anywhere.
// deno-lint-ignore no-import-prefix
import client from "npm:prom-client@15.1.3";
import { liveServers } from "./net/serve.ts";
import { collectedCounter, gauge, onStat, type Stat } from "./stats.ts";

export { collectedCounter, counter, gauge } from "./stats.ts";

/** The process-wide registry every warren metric lives in. */
export const registry: client.Registry = new client.Registry();

/** Mirror one stat into the registry: its samples are copied in at each scrape. */
function exportStat(stat: Stat): void {
  if (registry.getSingleMetric(stat.name)) return;
  const config = { name: stat.name, help: stat.help, labelNames: stat.labelNames };
  if (stat.type === "counter") {
    new client.Counter({
      ...config,
      registers: [registry],
      async collect() {
        this.reset();
        for (const [labels, v] of await stat.samples()) this.inc(labels, v);
      },
    });
  } else {
    new client.Gauge({
      ...config,
      registers: [registry],
      async collect() {
        this.reset();
        for (const [labels, v] of await stat.samples()) this.set(labels, v);
      },
    });
  }
}
onStat(exportStat);

// Every service's listeners (every lib/net serve() loop): connections and refusals by reason.
gauge("warren_listener_connections_active", "Connections open now, by listener", [
  "listener",
], function () {
  this.reset();
  for (const s of liveServers) this.set({ listener: formatListener(s.addr) }, s.stats.active);
});
collectedCounter(
  "warren_listener_connections_total",
  "Connections accepted, by listener (refused ones included)",
  ["listener"],
  () => [...liveServers].map((s) => [{ listener: formatListener(s.addr) }, s.stats.total]),
);
collectedCounter(
  "warren_listener_errors_total",
  "Connections refused or failed at the listener, by reason (limit, handshake-timeout, " +
    "handler-error, accept: a failed accept such as EMFILE, retried)",
  ["listener", "reason"],
  () =>
    [...liveServers].flatMap((s) => {
      const listener = formatListener(s.addr);
      return [
        [{ listener, reason: "limit" }, s.stats.rejected],
        [{ listener, reason: "handshake-timeout" }, s.stats.handshakeTimeouts],
        [{ listener, reason: "handler-error" }, s.stats.errors],
        [{ listener, reason: "accept" }, s.stats.acceptErrors],
      ] as [Partial<Record<"listener" | "reason", string>>, number][];
    }),
);

function formatListener(a: Deno.NetAddr): string {
  return a.hostname.includes(":") ? `[${a.hostname}]:${a.port}` : `${a.hostname}:${a.port}`;
}
