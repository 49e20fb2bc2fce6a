/**
 * Live status: per-service snapshot providers, sampled history, the Hono page app, and
 * `serveObservability()`, the one `/metrics` + status listener every service runs.
 * @module
 */

export {
  type ChartData,
  type SeriesKind,
  type StatusData,
  StatusHub,
  type StatusHubOptions,
  type StatusProvider,
  type StatusSeries,
  type StatusSnapshot,
  type StatusTable,
} from "./hub.ts";
export { statusUiApp } from "./app.ts";
export { pagePollIntervalMs, statusPageHtml } from "./page.ts";
export { fusionStatusProvider } from "./fusion.ts";
export { depotStatusProvider } from "./depot.ts";
export { depotLocalStatusProvider } from "./depot_local.ts";
export { tunnelStatusProvider } from "./tunnel.ts";
export { type TunnelClientStatus, tunnelClientStatusProvider } from "./tunnel_client.ts";
export { seaproxStatusJson, seaproxStatusProvider, type SeaproxStatusSource } from "./seaprox.ts";
export { jsonStatusProvider, listenersStatusProvider } from "./json.ts";
export {
  observabilityHandler,
  type ObservabilityOptions,
  type ObservabilityServer,
  serveObservability,
  workerObservabilityPort,
} from "./serve.ts";
