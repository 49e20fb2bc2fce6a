/**
 * Live status: per-service snapshot providers, sampled history, and the Hono page app.
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
export { tunnelStatusProvider } from "./tunnel.ts";
export { jsonStatusProvider, listenersStatusProvider } from "./json.ts";
