/**
 * lib/inspect: the tunnel client's request inspector (ngrok's :4040, self-hosted). A passive
 * tap records each HTTP exchange relayed to the local app -- heads, status, timing, sizes and
 * the first bytes of bodies -- in a bounded ring; a page and a JSON API show them live and
 * replay a request against the local app. Nothing here changes or delays relayed bytes.
 * @module
 */
export { HttpTap, type HttpTapOptions } from "./capture.ts";
export {
  type BodyView,
  dechunk,
  type ExchangeDetail,
  type ExchangeSummary,
  Inspector,
  type InspectorOptions,
  ReplayError,
  type ReplayFailure,
  replayTimeoutMs,
} from "./inspector.ts";
export {
  type CapturedBody,
  defaultInspectBodyBytes,
  defaultInspectMaxRequests,
  type Exchange,
  ExchangeRing,
  type ExchangeState,
} from "./record.ts";
export { type InspectorServeOptions, replayHeader, serveInspector } from "./serve.ts";
