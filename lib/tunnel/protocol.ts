/**
 * The tunnel's control vocabulary (seed 002): the handshake on the control stream, the
 * ControlMsg that opens every tunnel stream, and the client's reply on that stream.
 *
 * Every message is a u32 big-endian length followed by a UTF-8 JSON object with
 * `{v, type, ...}`, validated on receipt: a peer that sends anything else gets a
 * ProtocolError, never a crash. See README.md for the wire format table.
 * @module
 */

import { type BufferedReader, ProtocolError } from "../net/mod.ts";

/** The HTTP path the client connects to; same port as the public HTTP traffic. */
export const controlPath = "/_controlPath_/";
/**
 * Upgrade token of the raw transport: after the 101 the mux session runs directly on the
 * TCP connection (no WebSocket framing). Only the standalone front offers it; it passes
 * proxies that forward any Upgrade (nginx with `proxy_set_header Upgrade $http_upgrade`).
 */
export const rawUpgradeToken = "warren-mux";
/** Header carrying the client's identifier on the control path request. */
export const identifierHeader = "x-tunnel-identifier";
/** Version of this message set; a peer with another version is refused. */
export const protocolVersion = 1;
/** Largest message accepted; a longer length prefix is a protocol error. */
export const maxTunnelMessageBytes = 64 * 1024;
/** Bytes of the length prefix. */
const lengthPrefixBytes = 4;

/** What a tunnel stream carries: an HTTP connection or raw TCP. */
export type TransportProtocol = "http" | "tcp";

/** A TCP tunnel the client asks the server to open: public port on the server. */
export interface TcpTunnelRequest {
  publicPort: number;
}

/** Client -> server, first message on the control stream. */
export interface HandshakeRequest {
  v: number;
  type: "handshakeRequest";
  /** Free-form client name/version for logs. */
  client?: string;
  /** Public TCP ports the client wants relayed to its local services. */
  tcp?: TcpTunnelRequest[];
}

/** Outcome of one requested TCP tunnel. */
export interface TcpTunnelResult {
  publicPort: number;
  ok: boolean;
  /** Bound address when ok. */
  addr?: string;
  error?: string;
}

/** Server -> client, the answer to the handshake. */
export interface HandshakeResponse {
  v: number;
  type: "handshakeResponse";
  ok: boolean;
  /** Virtual hosts this client now serves. */
  hosts: string[];
  tcp: TcpTunnelResult[];
  error?: string;
}

/**
 * Server -> client, the first bytes of every tunnel stream (seed: ControlMsg). The server
 * opens the stream itself and puts this message in the stream's SYN frame, so a response
 * can only ever travel back on the stream its request came on.
 */
export interface ControlMsg {
  v: number;
  type: "controlMsg";
  action: "RequestClientSession";
  transportProtocol: TransportProtocol;
  /** HTTP: the Host header's port ("" = the client's default local address). TCP: public port. */
  localPort: string;
  /** Chosen by the server, unique per server process; echoed in the StreamReply. */
  requestId: string;
}

/** Why a client could not serve a tunnel stream. */
export type StreamFailure = "dial-failed" | "no-such-port" | "bad-request";

/** Client -> server, first bytes the client writes on a tunnel stream. */
export interface StreamReply {
  v: number;
  type: "streamReply";
  requestId: string;
  ok: boolean;
  reason?: StreamFailure;
  error?: string;
}

/** Why the server ends a client's session on purpose. */
export type SessionEndCause = "replaced" | "shutdown";

/**
 * Server -> client on the control stream, just before the server closes the session:
 * "replaced" (another client with the same identifier took over: do not reconnect) or
 * "shutdown" (the server is stopping: reconnect with backoff).
 */
export interface SessionEnd {
  v: number;
  type: "sessionEnd";
  reason: SessionEndCause;
}

/** Any message of this protocol. */
export type TunnelMessage =
  | HandshakeRequest
  | HandshakeResponse
  | ControlMsg
  | StreamReply
  | SessionEnd;

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** Frame a message: u32 BE length + JSON. */
export function encodeMessage(msg: TunnelMessage): Uint8Array {
  const body = encoder.encode(JSON.stringify(msg));
  if (body.length > maxTunnelMessageBytes) throw new RangeError("tunnel message too large");
  const out = new Uint8Array(lengthPrefixBytes + body.length);
  new DataView(out.buffer).setUint32(0, body.length);
  out.set(body, lengthPrefixBytes);
  return out;
}

function isObj(x: unknown): x is Record<string, unknown> {
  return typeof x === "object" && x !== null && !Array.isArray(x);
}
function str(o: Record<string, unknown>, k: string, optional = false): void {
  if (o[k] === undefined && optional) return;
  if (typeof o[k] !== "string") {
    throw new ProtocolError(`field ${k} must be a string`, "bad-message");
  }
}
function bool(o: Record<string, unknown>, k: string): void {
  if (typeof o[k] !== "boolean") {
    throw new ProtocolError(`field ${k} must be a boolean`, "bad-message");
  }
}
function port(x: unknown, k: string): void {
  if (typeof x !== "number" || !Number.isInteger(x) || x < 0 || x > 65535) {
    throw new ProtocolError(`field ${k} must be a port number`, "bad-message");
  }
}

/** Validate a decoded JSON value as a message; throws ProtocolError("bad-message"). */
export function validateMessage(x: unknown): TunnelMessage {
  if (!isObj(x)) throw new ProtocolError("message is not an object", "bad-message");
  if (x.v !== protocolVersion) {
    throw new ProtocolError(`unsupported protocol version ${String(x.v)}`, "bad-version");
  }
  switch (x.type) {
    case "handshakeRequest":
      str(x, "client", true);
      if (x.tcp !== undefined) {
        if (!Array.isArray(x.tcp) || x.tcp.length > 64) {
          throw new ProtocolError("field tcp must be a short array", "bad-message");
        }
        for (const t of x.tcp) {
          if (!isObj(t)) throw new ProtocolError("tcp entry must be an object", "bad-message");
          port(t.publicPort, "publicPort");
        }
      }
      return x as unknown as HandshakeRequest;
    case "handshakeResponse":
      bool(x, "ok");
      str(x, "error", true);
      if (!Array.isArray(x.hosts) || !x.hosts.every((h) => typeof h === "string")) {
        throw new ProtocolError("field hosts must be strings", "bad-message");
      }
      if (!Array.isArray(x.tcp) || !x.tcp.every((t) => isObj(t) && typeof t.ok === "boolean")) {
        throw new ProtocolError("field tcp must be results", "bad-message");
      }
      for (const t of x.tcp as Record<string, unknown>[]) port(t.publicPort, "publicPort");
      return x as unknown as HandshakeResponse;
    case "controlMsg":
      if (x.action !== "RequestClientSession") {
        throw new ProtocolError(`unknown action ${String(x.action)}`, "bad-message");
      }
      if (x.transportProtocol !== "http" && x.transportProtocol !== "tcp") {
        throw new ProtocolError("bad transportProtocol", "bad-message");
      }
      str(x, "localPort");
      if (!/^\d{0,5}$/.test(x.localPort as string)) {
        throw new ProtocolError("bad localPort", "bad-message");
      }
      str(x, "requestId");
      return x as unknown as ControlMsg;
    case "streamReply":
      str(x, "requestId");
      bool(x, "ok");
      str(x, "reason", true);
      str(x, "error", true);
      return x as unknown as StreamReply;
    case "sessionEnd":
      if (x.reason !== "replaced" && x.reason !== "shutdown") {
        throw new ProtocolError("bad sessionEnd reason", "bad-message");
      }
      return x as unknown as SessionEnd;
    default:
      throw new ProtocolError(`unknown message type ${String(x.type)}`, "bad-message");
  }
}

/** Decode one framed message from bytes (length prefix included). */
export function decodeMessage(frame: Uint8Array): TunnelMessage {
  if (frame.length < lengthPrefixBytes) throw new ProtocolError("short frame", "bad-message");
  const len = new DataView(frame.buffer, frame.byteOffset).getUint32(0);
  if (len !== frame.length - lengthPrefixBytes) {
    throw new ProtocolError("length prefix mismatch", "bad-message");
  }
  return parseBody(frame.subarray(lengthPrefixBytes));
}

function parseBody(body: Uint8Array): TunnelMessage {
  let json: unknown;
  try {
    json = JSON.parse(decoder.decode(body));
  } catch (err) {
    throw new ProtocolError("message is not JSON", "bad-message", { cause: err });
  }
  return validateMessage(json);
}

/**
 * Read one message; `null` on a clean EOF between messages. Rejects with ProtocolError on
 * an oversize length, bad JSON, a wrong version or type, and on EOF mid-message.
 */
export async function readMessage(r: BufferedReader): Promise<TunnelMessage | null> {
  const pre = await r.readExactOrEof(lengthPrefixBytes);
  if (pre === null) return null;
  const len = new DataView(pre.buffer, pre.byteOffset).getUint32(0);
  if (len > maxTunnelMessageBytes) throw new ProtocolError(`message of ${len} bytes`, "too-large");
  return parseBody(await r.readExact(len));
}

/** Read a message and require its type; EOF is an error here. */
export async function expectMessage<T extends TunnelMessage["type"]>(
  r: BufferedReader,
  type: T,
): Promise<Extract<TunnelMessage, { type: T }>> {
  const m = await readMessage(r);
  if (m === null) throw new ProtocolError(`connection closed before ${type}`, "eof");
  if (m.type !== type) throw new ProtocolError(`expected ${type}, got ${m.type}`, "unexpected");
  return m as Extract<TunnelMessage, { type: T }>;
}
