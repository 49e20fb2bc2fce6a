/**
 * The tunnel's control vocabulary (seed 002): the handshake on the control stream, the
 * ControlMsg that opens every tunnel stream, and the client's reply on that stream.
 *
 * Every message is a u32 big-endian length followed by a UTF-8 JSON object with
 * `{v, type, ...}`, validated on receipt: a peer that sends anything else gets a
 * ProtocolError, never a crash. See README.md for the wire format table.
 * @module
 */

import type { BufferedReader, Duplex } from "../net/mod.ts";
import {
  arrayOf,
  type BaseMessage,
  bool,
  type Check,
  ControlError,
  defineMessage,
  defineProtocol,
  encodeFrame,
  int,
  type MessageDef,
  type MessageOf,
  object,
  oneOf,
  optional,
  type OptionalCheck,
  type Outgoing,
  type Protocol,
  readFrameJson,
  readMessageExact,
  str,
} from "../control/mod.ts";

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

/**
 * What a tunnel stream carries: an HTTP connection, raw TCP, or the datagrams of one UDP
 * peer flow (each a u16 BE length and the payload; lib/udp `DatagramStream`).
 */
export type TransportProtocol = "http" | "tcp" | "udp";

const port = () => int({ min: 0, max: 65535 });

/** Header rules as a client sends them (lib/tunnel/rewrite.ts checks their meaning). */
type WireHeaderRules = { set?: string[][]; add?: string[][]; remove?: string[] };
const headerRules = (): OptionalCheck<WireHeaderRules> =>
  optional(object({
    set: optional(arrayOf(arrayOf(str({ maxLength: 1024 }), 2), 32)),
    add: optional(arrayOf(arrayOf(str({ maxLength: 1024 }), 2), 32)),
    remove: optional(arrayOf(str({ maxLength: 128 }), 32)),
  }));

/** Client -> server, first message on the control stream. */
export const handshakeRequestMessage: MessageDef<"handshakeRequest", {
  client: OptionalCheck<string>;
  tcp: OptionalCheck<{ publicPort: number }[]>;
  healthCheck: OptionalCheck<boolean>;
  udp: OptionalCheck<{ publicPort: number }[]>;
  access: OptionalCheck<{ basic?: string[]; bearer?: string[]; allow?: string[] }>;
  rewrite: OptionalCheck<
    { host?: string; request?: WireHeaderRules; response?: WireHeaderRules }
  >;
}> = defineMessage("handshakeRequest", {
  /** Free-form client name/version for logs. */
  client: optional(str({ maxLength: 128 })),
  /** Public TCP ports the client wants relayed to its local services. */
  tcp: optional(arrayOf(object({ publicPort: port() }), 64)),
  /**
   * The client checks its local app's health and reports it with `health` messages: the
   * server sends it no stream until the first report says healthy.
   */
  healthCheck: optional(bool()),
  /** Public UDP ports the client wants relayed to its local UDP services. */
  udp: optional(arrayOf(object({ publicPort: port() }), 64)),
  /**
   * Access rules for the client's hosts (lib/tunnel/access.ts), checked by the server before
   * a request reaches the client; rules the server has for a host win over these.
   */
  access: optional(object({
    basic: optional(arrayOf(str({ maxLength: 512 }), 16)),
    bearer: optional(arrayOf(str({ maxLength: 512 }), 16)),
    allow: optional(arrayOf(str({ maxLength: 64 }), 64)),
  })),
  /** Header rewrites for the client's hosts (lib/tunnel/rewrite.ts), applied before the server's. */
  rewrite: optional(object({
    host: optional(str({ maxLength: 255 })),
    request: headerRules(),
    response: headerRules(),
  })),
});
/** Client -> server, first message on the control stream. */
export type HandshakeRequest = MessageOf<typeof handshakeRequestMessage>;
/** A TCP (or UDP) tunnel the client asks the server to open: public port on the server. */
export type TcpTunnelRequest = NonNullable<HandshakeRequest["tcp"]>[number];

const portResults = () =>
  arrayOf(
    object({
      publicPort: port(),
      ok: bool(),
      addr: optional(str({ maxLength: 64 })),
      error: optional(str()),
    }),
    64,
  );

/** Server -> client, the answer to the handshake. */
export const handshakeResponseMessage: MessageDef<"handshakeResponse", {
  ok: Check<boolean>;
  hosts: Check<string[]>;
  tcp: Check<{ publicPort: number; ok: boolean; addr?: string; error?: string }[]>;
  udp: OptionalCheck<{ publicPort: number; ok: boolean; addr?: string; error?: string }[]>;
  error: OptionalCheck<string>;
  notes: OptionalCheck<string[]>;
}> = defineMessage("handshakeResponse", {
  ok: bool(),
  /** Virtual hosts this client now serves. */
  hosts: arrayOf(str({ maxLength: 253 }), 1024),
  /** Outcome of each requested TCP tunnel (`addr` bound when ok). */
  tcp: portResults(),
  /** Outcome of each UDP tunnel (absent from servers without UDP tunnels). */
  udp: optional(portResults()),
  error: optional(str()),
  /** Lines for the client's log: e.g. a host whose server-side access rules win over its own. */
  notes: optional(arrayOf(str({ maxLength: 512 }), 16)),
});
/** Server -> client, the answer to the handshake. */
export type HandshakeResponse = MessageOf<typeof handshakeResponseMessage>;
/** Outcome of one requested TCP or UDP tunnel. */
export type PortTunnelResult = HandshakeResponse["tcp"][number];
/** Outcome of one requested TCP tunnel. */
export type TcpTunnelResult = PortTunnelResult;

/**
 * Server -> client, the first bytes of every tunnel stream (seed: ControlMsg). The server
 * opens the stream itself and puts this message in the stream's SYN frame, so a response
 * can only ever travel back on the stream its request came on.
 */
export const controlMsgMessage: MessageDef<"controlMsg", {
  action: Check<"RequestClientSession">;
  transportProtocol: Check<TransportProtocol>;
  localPort: Check<string>;
  requestId: Check<string>;
  publicPort: OptionalCheck<number>;
}> = defineMessage("controlMsg", {
  action: oneOf("RequestClientSession"),
  transportProtocol: oneOf("http", "tcp", "udp"),
  /**
   * HTTP: the Host header's port ("" = the client's default). TCP asked for by the client:
   * the public port. TCP defined by the server (`publicPort` set): the local port the server
   * asks for ("" = the client's default), which the client dials only if it allows it. UDP:
   * the same as TCP.
   */
  localPort: str({ pattern: /^\d{0,5}$/, maxLength: 5 }),
  /** Chosen by the server, unique per server process; echoed in the StreamReply. */
  requestId: str({ minLength: 1, maxLength: 64 }),
  /** Set only on a TCP or UDP tunnel the server defined (admin API, `--tcp`, `--udp`): its
   * public port. */
  publicPort: optional(port()),
});
/** The ControlMsg that opens every tunnel stream. */
export type ControlMsg = MessageOf<typeof controlMsgMessage>;

/** Why a client could not serve a tunnel stream. */
export type StreamFailure = "dial-failed" | "no-such-port" | "bad-request";

/** Client -> server, first bytes the client writes on a tunnel stream. */
export const streamReplyMessage: MessageDef<"streamReply", {
  requestId: Check<string>;
  ok: Check<boolean>;
  reason: OptionalCheck<StreamFailure>;
  error: OptionalCheck<string>;
}> = defineMessage("streamReply", {
  requestId: str({ minLength: 1, maxLength: 64 }),
  ok: bool(),
  reason: optional(oneOf("dial-failed", "no-such-port", "bad-request")),
  error: optional(str()),
});
/** The client's answer on a tunnel stream. */
export type StreamReply = MessageOf<typeof streamReplyMessage>;

/** Why the server ends a client's session on purpose. */
export type SessionEndCause = "replaced" | "shutdown" | "revoked";

/**
 * Server -> client on the control stream, just before the server closes the session:
 * "replaced" (another client with the same identifier took over: do not reconnect) or
 * "shutdown" (the server is stopping: reconnect with backoff) or "revoked" (the admin gave
 * its last host to another identifier: reconnect, and learn from the handshake what is left).
 */
export const sessionEndMessage: MessageDef<"sessionEnd", {
  reason: Check<SessionEndCause>;
}> = defineMessage("sessionEnd", {
  reason: oneOf("replaced", "shutdown", "revoked"),
});
/** The server's notice before it closes a session. */
export type SessionEnd = MessageOf<typeof sessionEndMessage>;

/**
 * Client -> server on the control stream after the handshake: its health check's verdict
 * changed (`ok` false: take it out of rotation; true: back in). `error` says why it failed.
 */
export const healthMessage: MessageDef<"health", {
  ok: Check<boolean>;
  error: OptionalCheck<string>;
}> = defineMessage("health", {
  ok: bool(),
  error: optional(str({ maxLength: 256 })),
});
/** A client's health report. */
export type Health = MessageOf<typeof healthMessage>;

/** The tunnel's control protocol (lib/control framing and schemas, version 1). */
export const tunnelProtocol: Protocol<TunnelMessage> = defineProtocol("tunnel", protocolVersion, [
  handshakeRequestMessage,
  handshakeResponseMessage,
  controlMsgMessage,
  streamReplyMessage,
  sessionEndMessage,
  healthMessage,
]);

/** Any message of this protocol (lib/control's base error/ping/pong included). */
export type TunnelMessage =
  | HandshakeRequest
  | HandshakeResponse
  | ControlMsg
  | StreamReply
  | SessionEnd
  | Health
  | BaseMessage;

/** Frame a message: u32 BE length + JSON (`v` is added). */
export function encodeMessage(msg: Outgoing<TunnelMessage>): Uint8Array {
  return encodeFrame({ v: protocolVersion, ...msg }, maxTunnelMessageBytes);
}

/** Validate a decoded JSON value as a message; throws ControlError ("schema", ...). */
export function validateMessage(x: unknown): TunnelMessage {
  return tunnelProtocol.check(x) as TunnelMessage;
}

/** Decode one framed message from bytes (length prefix included). */
export function decodeMessage(frame: Uint8Array): TunnelMessage {
  if (frame.length < 4) throw new ControlError("truncated", "short frame");
  const len = new DataView(frame.buffer, frame.byteOffset).getUint32(0);
  if (len !== frame.length - 4) throw new ControlError("bad-json", "length prefix mismatch");
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(frame.subarray(4)));
  } catch (err) {
    throw new ControlError("bad-json", "message is not JSON", { cause: err });
  }
  return validateMessage(json);
}

/**
 * Read one message; `null` on a clean EOF between messages. Rejects with ControlError (a
 * ProtocolError) on an oversize length, bad JSON, a wrong version, type or field, and on
 * EOF mid-message.
 */
export async function readMessage(r: BufferedReader): Promise<TunnelMessage | null> {
  const frame = await readFrameJson(r, maxTunnelMessageBytes);
  return frame === null ? null : validateMessage(frame.json);
}

/** Read a message and require its type; EOF is an error here. */
export async function expectMessage<T extends TunnelMessage["type"]>(
  r: BufferedReader,
  type: T,
): Promise<Extract<TunnelMessage, { type: T }>> {
  return ofType(await readMessage(r), type);
}

/**
 * {@linkcode expectMessage} reading nothing past the message (lib/control's
 * `readMessageExact`): what follows stays in `conn`. tunnel-client reads a stream's ControlMsg
 * this way, so the request behind it is relayed from the mux stream as it lies.
 */
export async function expectMessageExact<T extends TunnelMessage["type"]>(
  conn: Pick<Duplex, "read">,
  type: T,
): Promise<Extract<TunnelMessage, { type: T }>> {
  const m = await readMessageExact(conn, tunnelProtocol, {
    maxMessageBytes: maxTunnelMessageBytes,
  });
  return ofType(m, type);
}

/** `m` if it is a `type` message; else why not (EOF, the peer's error, another type). */
function ofType<T extends TunnelMessage["type"]>(
  m: TunnelMessage | null,
  type: T,
): Extract<TunnelMessage, { type: T }> {
  if (m === null) throw new ControlError("closed", `connection closed before ${type}`);
  if (m.type === "error") {
    throw new ControlError("unexpected", `peer error instead of ${type}: ${m.reason}`);
  }
  if (m.type !== type) throw new ControlError("unexpected", `expected ${type}, got ${m.type}`);
  return m as Extract<TunnelMessage, { type: T }>;
}

/** How a mux session ended, as lib/mux's `Session.closed` reports it. */
export interface MuxSessionEnd {
  /** lib/mux's SessionEndReason ("local-close", "eof", "keepalive-timeout", ...). */
  reason: string;
  /** The error behind it, if any. */
  error?: Error;
}

/** A session end made ready for one log line: its level, a reason code and the why. */
export interface SessionEndReport {
  /** "info" for an orderly end, "warn" for anything a soak or an operator must notice. */
  level: "info" | "warn";
  /** Machine-readable: a lib/mux SessionEndReason, or "replaced", "shutdown", "stopped",
   * "control-closed". */
  reason: string;
  /** One line for people. */
  why: string;
  /** The underlying error's text, if there was one. */
  error?: string;
}

/** Orderly ends that are not lib/mux reasons: who ended the session on purpose. */
export type SessionEndCauseLocal = SessionEndCause | "stopped" | "control-closed";

const endText: Readonly<Record<string, string>> = {
  "replaced": "another client with the same identifier took over",
  "shutdown": "the server is shutting down",
  "revoked": "the server gave this identifier's last host to another client",
  "stopped": "stopped locally",
  "control-closed": "the peer closed the control stream",
  "local-close": "closed locally",
  "remote-goaway": "the peer went away",
  "eof": "the transport ended without a go away (peer killed or connection cut)",
  "keepalive-timeout": "heartbeat timeout: the peer stopped answering pings",
  "protocol-error": "the peer broke the mux protocol",
  "internal-error": "internal error",
  "conn-error": "the transport failed",
};

/**
 * Why a tunnel session ended, for the "disconnected" log lines of client and server. `cause`
 * (a deliberate end: replaced, shutdown, stopped, control stream closed) wins over the mux's
 * reason. Orderly ends (a local close, the peer's normal go away) are "info"; a heartbeat
 * timeout, a transport that ended without a go away, a protocol, internal or transport error
 * are "warn" -- so a soak's log shows them without debug level.
 */
export function sessionEndReport(
  end: MuxSessionEnd | undefined,
  cause?: SessionEndCauseLocal,
): SessionEndReport {
  const error = end?.error ? errorText(end.error) : undefined;
  if (cause) return { level: "info", reason: cause, why: endText[cause] ?? cause, error };
  if (!end) return { level: "info", reason: "control-closed", why: endText["control-closed"] };
  const orderly = end.reason === "local-close" ||
    (end.reason === "remote-goaway" && end.error === undefined);
  return {
    level: orderly ? "info" : "warn",
    reason: end.reason,
    why: end.reason === "remote-goaway" && end.error
      ? "the peer went away with an error"
      : endText[end.reason] ?? end.reason,
    error,
  };
}

function errorText(err: Error): string {
  const reason = (err as { reason?: unknown }).reason;
  const cause = err.cause instanceof Error ? `: ${err.cause.message}` : "";
  return (typeof reason === "string" ? `${reason}: ` : "") + err.message + cause;
}

/**
 * `session.closed`, or undefined when the session has not ended within `waitMs`. A tunnel
 * notices an end first through its control stream or accept loop; the mux settles the reason
 * a moment later (after flushing its go away).
 */
export async function sessionEndWithin(
  session: { closed: Promise<MuxSessionEnd> },
  waitMs: number,
): Promise<MuxSessionEnd | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      session.closed,
      new Promise<undefined>((r) => timer = setTimeout(() => r(undefined), waitMs)),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** How long a tunnel waits for the mux to say why a session ended. */
export const sessionEndWaitMs = 3_000;

/** Default interval of mux pings, each side's to the other. */
export const defaultHeartbeatIntervalMs = 2_000;
/** Default silence after which the other side is declared dead. */
export const defaultHeartbeatTimeoutMs = 6_000;
