/**
 * lib/proxyproto: the PROXY protocol v1 and v2 (haproxy) -- read the header a load balancer
 * puts in front of a client's bytes, write one for a backend. See README.md.
 * @module
 */
export {
  defaultProxyProtocolFrom,
  encodeProxyHeader,
  maxV1LineBytes,
  maxV2BlockBytes,
  type ProxyHeader,
  readProxyHeader,
  v2Signature,
} from "./header.ts";
