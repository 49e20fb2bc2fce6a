/**
 * lib/http: HTTP/1.1 heads and bodies with limits, correct on any split (for proxies and
 * routers), and the HTTP proxy protocol (`handleHttpProxy`: CONNECT + forward proxying
 * with keep-alive, Basic proxy auth). See README.md.
 * @module
 */
export {
  decodeLatin1,
  defaultMaxHeadBytes,
  defaultMaxHeaders,
  encodeLatin1,
  fieldNameIs,
  getHeader,
  getHeaders,
  type HeaderFields,
  headerHasToken,
  headerTokens,
  type HeadLimits,
  hopByHopFields,
  HttpError,
  type HttpErrorReason,
  parseFieldLines,
  putLatin1,
  type RawRequestHead,
  type RawResponseHead,
  readRequestHead,
  readRequestHeadRawWithin,
  readRequestHeadWithin,
  readResponseHead,
  readResponseHeadRaw,
  type RequestHead,
  type ResponseHead,
  serializeRequestHead,
  serializeResponseHead,
  statusForHttpError,
  takeBufferedRequestHead,
  takeBufferedResponseHead,
  withHeader,
  withoutHeaders,
} from "./head.ts";
export {
  type RequestHeadScan,
  type ResponseHeadScan,
  scanRequestHead,
  scanResponseHead,
} from "./head_scan.ts";
export {
  type BodyFraming,
  copyBody,
  copyChunked,
  copyExact,
  copyUntilEof,
  type FieldFilter,
  requestBodyFraming,
  responseBodyFraming,
  responsePersistent,
  type Sink,
} from "./body.ts";
export { ChunkedScanner, maxChunkLineBytes, maxTrailerBytes } from "./chunked.ts";
export {
  type AbsoluteTarget,
  parseAbsoluteTarget,
  parseAuthority,
  requestAuthority,
} from "./target.ts";
export { basicCredentials, parseBasicCredentials, simpleResponse, statusText } from "./response.ts";
export {
  defaultProxyHeadTimeoutMs,
  defaultProxyIdleTimeoutMs,
  handleHttpProxy,
  type HttpExchange,
  HttpProxyConn,
  type HttpProxyConnect,
  type HttpProxyOptions,
  HttpProxyState,
  statusForFailure,
} from "./proxy.ts";
export {
  httpConnect,
  HttpConnectError,
  type HttpConnectOptions,
  reasonForConnectStatus,
} from "./connect_client.ts";
export { staticCredentials } from "../net/mod.ts";
export {
  defaultHttpExchangeTimeoutMs,
  defaultHttpMaxBodyBytes,
  defaultHttpMaxConns,
  defaultHttpRequestTimeoutMs,
  type HttpHandler,
  type HttpServeOptions,
  serveHttp,
} from "./server.ts";
