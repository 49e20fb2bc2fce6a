/**
 * The demo's clients: an HTTP/1.1 GET over any Duplex (direct, after a SOCKS5 or CONNECT
 * handshake, or absolute-form to an HTTP proxy) and a WebSocket echo round trip, each
 * checking what came back (status, length, SHA-256) and throwing {@linkcode DemoCheckError}
 * with the reason otherwise.
 * @module
 */

import { createHash } from "node:crypto";
import { basicCredentials, getHeader, readResponseHead } from "../http/mod.ts";
import {
  BufferedReader,
  closeQuietly,
  concatList,
  dial,
  type Duplex,
  type HostPort,
  withPrefix,
  writeAll,
} from "../net/mod.ts";
import { socks5Connect } from "../socks5/mod.ts";
import { upgradeClient } from "../transport/mod.ts";
import { demoPayload, sha256Hex } from "./origin.ts";

/** A demo check that did not get what it expected; the message is the reason. */
export class DemoCheckError extends Error {
  override name = "DemoCheckError";
}

/** User and password of a proxy listener that asks for them. */
export interface Credentials {
  user: string;
  pass: string;
}

const enc = new TextEncoder();
/** A body up to this size is also kept as text (for a failure's message). */
const textBytes = 4096;
/** Chunk of the WebSocket upload (one message each). */
const wsMessageBytes = 64 * 1024;

/** Connect to 127.0.0.1:`port` and run `fn` on the connection, closing it after. */
export async function withConn<T>(port: number, fn: (c: Duplex) => Promise<T>): Promise<T> {
  const c = await dial("127.0.0.1", port);
  try {
    return await fn(c);
  } finally {
    closeQuietly(c);
  }
}

/** SOCKS5 CONNECT to `dest` over `c` (user:pass when given); the stream to `dest`. */
export async function viaSocks5(c: Duplex, dest: HostPort, auth?: Credentials): Promise<Duplex> {
  const opts = auth ? { username: auth.user, password: auth.pass } : {};
  const { leftover } = await socks5Connect(c, dest, opts);
  return withPrefix(c, leftover);
}

/** HTTP CONNECT to `dest` over `c` (Proxy-Authorization when given); the stream to `dest`. */
export async function viaConnect(c: Duplex, dest: string, auth?: Credentials): Promise<Duplex> {
  const cred = auth ? `Proxy-Authorization: ${basicCredentials(auth.user, auth.pass)}\r\n` : "";
  await writeAll(c, enc.encode(`CONNECT ${dest} HTTP/1.1\r\nHost: ${dest}\r\n${cred}\r\n`));
  const reader = new BufferedReader(c);
  const head = await readResponseHead(reader);
  if (head.status !== 200) throw new DemoCheckError(`CONNECT answered ${head.status}`);
  return withPrefix(c, reader.takeBuffered());
}

/** What a GET brought back. */
export interface Fetched {
  status: number;
  bytes: number;
  sha256: string;
  /** The body as text when short (for messages), else "". */
  text: string;
}

/**
 * GET `target` (origin-form, or absolute-form for a forward proxy) with `Host: host` and
 * `Connection: close` over `c`; the body is read to its Content-Length (or EOF) and hashed.
 */
export async function httpGet(
  c: Duplex,
  host: string,
  target: string,
  auth?: Credentials,
): Promise<Fetched> {
  const cred = auth ? `Proxy-Authorization: ${basicCredentials(auth.user, auth.pass)}\r\n` : "";
  await writeAll(
    c,
    enc.encode(`GET ${target} HTTP/1.1\r\nHost: ${host}\r\n${cred}Connection: close\r\n\r\n`),
  );
  const reader = new BufferedReader(c);
  const head = await readResponseHead(reader);
  const length = getHeader(head.headers, "content-length");
  const want = length === undefined ? Infinity : Number(length);
  const hash = createHash("sha256");
  const small: Uint8Array[] = [];
  let bytes = 0;
  const take = (p: Uint8Array) => {
    hash.update(p);
    bytes += p.length;
    if (bytes <= textBytes) small.push(p.slice());
  };
  take(reader.takeBuffered());
  const buf = new Uint8Array(256 * 1024);
  while (bytes < want) {
    const n = await c.read(buf);
    if (n === null) break;
    take(buf.subarray(0, n));
  }
  if (Number.isFinite(want) && bytes !== want) {
    throw new DemoCheckError(`body ended after ${bytes} of ${want} bytes`);
  }
  const text = bytes <= textBytes ? new TextDecoder().decode(concatList(small)) : "";
  return { status: head.status, bytes, sha256: hash.digest("hex"), text };
}

/** Throw unless `got` is a 200 carrying exactly `want` (compared by SHA-256). */
export function expectBody(got: Fetched, want: Uint8Array | string): number {
  const bytes = typeof want === "string" ? enc.encode(want) : want;
  if (got.status !== 200) {
    throw new DemoCheckError(`HTTP ${got.status}${got.text ? `: ${got.text.trim()}` : ""}`);
  }
  if (got.bytes !== bytes.length || got.sha256 !== sha256Hex(bytes)) {
    throw new DemoCheckError(
      `got ${got.bytes} bytes (sha256 ${got.sha256.slice(0, 12)}), want ${bytes.length} ` +
        `(sha256 ${sha256Hex(bytes).slice(0, 12)})`,
    );
  }
  return got.bytes;
}

/**
 * A WebSocket to `/ws` over `c` (Host `host`): send a short message and `payloadBytes`,
 * expect both echoed in order (checked by SHA-256). Returns the bytes received.
 */
export async function wsEcho(c: Duplex, host: string, payloadBytes: number): Promise<number> {
  const ws = await upgradeClient(c, { host, path: "/ws" });
  const hello = enc.encode("hello over a websocket\n");
  const payload = demoPayload(payloadBytes);
  const want = hello.length + payload.length;
  const hash = createHash("sha256");
  let got = 0;
  const reading = (async () => {
    const buf = new Uint8Array(256 * 1024);
    while (got < want) {
      const n = await ws.read(buf);
      if (n === null) break;
      hash.update(buf.subarray(0, n));
      got += n;
    }
  })();
  await writeAll(ws, hello);
  for (let at = 0; at < payload.length; at += wsMessageBytes) {
    await writeAll(ws, payload.subarray(at, at + wsMessageBytes));
  }
  await reading;
  closeQuietly(ws);
  const expected = createHash("sha256").update(hello).update(payload).digest("hex");
  if (got !== want || hash.digest("hex") !== expected) {
    throw new DemoCheckError(`echo: ${got} of ${want} bytes came back, or not the same bytes`);
  }
  return got;
}
