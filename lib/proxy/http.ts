/**
 * The `http` proxy type: CONNECT and absolute-URI forward proxying, served by lib/http.
 * @module
 */

import type { SessionProxyType } from "./proxy_type.ts";

/** An HTTP proxy type (placeholder until lib/http lands). */
export function httpProxy(): SessionProxyType {
  return {
    kind: "session",
    scheme: "http",
    session: () => Promise.reject(new Error("http proxy not available yet")),
  };
}
