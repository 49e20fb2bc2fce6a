/**
 * lib/demo: what `deno task demo` needs besides the services themselves -- an origin app,
 * clients that check each path end to end (status, length, SHA-256), and the result table.
 * @module
 */

export {
  type DemoOrigin,
  demoPayload,
  demoPayloadBytes,
  helloText,
  sha256Hex,
  startDemoOrigin,
} from "./origin.ts";
export {
  type Credentials,
  DemoCheckError,
  expectBody,
  type Fetched,
  httpGet,
  viaConnect,
  viaSocks5,
  withConn,
  wsEcho,
} from "./probe.ts";
export {
  type DemoCheck,
  demoColumns,
  type DemoResult,
  formatTable,
  runChecks,
  summaryLine,
  within,
} from "./report.ts";
