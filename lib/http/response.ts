/**
 * Small complete responses a proxy or router answers by itself (errors, 407), and Basic
 * proxy credentials.
 * @module
 */

import { encodeLatin1 } from "./head.ts";
import { concatBytes } from "../net/bytes.ts";

/** Reason phrases of the statuses warren answers by itself. */
export const statusText: Readonly<Record<number, string>> = {
  200: "OK",
  400: "Bad Request",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  407: "Proxy Authentication Required",
  408: "Request Timeout",
  413: "Content Too Large",
  414: "URI Too Long",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  505: "HTTP Version Not Supported",
};

const encoder = new TextEncoder();

/**
 * A complete response with a short text body. `Connection: close` unless `keepAlive`.
 * Extra header fields (e.g. `Proxy-Authenticate`) go in `headers`.
 */
export function simpleResponse(
  status: number,
  body: string,
  opts: { headers?: [string, string][]; keepAlive?: boolean; contentType?: string } = {},
): Uint8Array {
  const b = encoder.encode(body);
  let head = `HTTP/1.1 ${status} ${statusText[status] ?? "Error"}\r\n` +
    `Content-Type: ${opts.contentType ?? "text/plain; charset=utf-8"}\r\n` +
    `Content-Length: ${b.length}\r\n` +
    `Cache-Control: no-store\r\n`;
  if (!opts.keepAlive) head += "Connection: close\r\n";
  for (const [k, v] of opts.headers ?? []) head += `${k}: ${v}\r\n`;
  return concatBytes(encodeLatin1(head + "\r\n"), b);
}

/**
 * Decode `Basic base64(user:pass)` credentials (RFC 7617, UTF-8). Undefined when the value
 * is missing, another scheme, or malformed.
 */
export function parseBasicCredentials(
  value: string | undefined,
): { username: string; password: string } | undefined {
  if (!value) return undefined;
  const m = /^basic[ \t]+([A-Za-z0-9+/]+=*)[ \t]*$/i.exec(value);
  if (!m) return undefined;
  let text: string;
  try {
    const bin = atob(m[1]);
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return undefined; // not base64 or not UTF-8: treated as no credentials
  }
  const colon = text.indexOf(":");
  if (colon < 0) return undefined;
  return { username: text.slice(0, colon), password: text.slice(colon + 1) };
}

/** The `Basic ...` value for `Authorization` / `Proxy-Authorization`. */
export function basicCredentials(username: string, password: string): string {
  const bytes = encoder.encode(`${username}:${password}`);
  return `Basic ${btoa(String.fromCharCode(...bytes))}`;
}
