/**
 * The depot wire vocabulary: control messages between depot-local and depot-server, and
 * the one-frame handshake that opens a tunnel connection. See README.md for the tables.
 * @module
 */

import {
  arrayOf,
  type BaseMessage,
  type Check,
  defineMessage,
  defineProtocol,
  int,
  type MessageDef,
  type MessageOf,
  oneOf,
  optional,
  type OptionalCheck,
  type Protocol,
  str,
} from "../control/mod.ts";
import { netFailureReasons } from "../net/mod.ts";

/** Version of the depot control protocol (the `v` of every frame). */
export const depotProtocolVersion = 1;

/** Default control port (depot-local dials it). */
export const defaultControlPort = 7000;
/** Default SOCKS5 port (clients connect to it). */
export const defaultSocksPort = 1080;
/** Default tunnel port (depot-local opens one connection per request to it). */
export const defaultTunnelPort = 7001;

/** Default heartbeat interval on the control connection. */
export const defaultHeartbeatMs = 2_000;
/** Silence after which a control connection is declared dead: three missed heartbeats. */
export const heartbeatDeadFactor = 3;
/** Failures each side keeps for its status page. */
export const recentFailureCount = 50;
/** Time a peer has to complete the control hello or the tunnel handshake. */
export const depotHandshakeTimeoutMs = 10_000;
/** Control messages are small; anything larger is a protocol violation. */
export const depotMaxMessageBytes = 16 * 1024;
/** Exit names: short, printable, usable as SOCKS usernames and metric labels. */
export const exitNamePattern = /^[A-Za-z0-9._-]{1,64}$/;
/** Name of the exit a client gets when it sends no username. */
export const defaultExitName = "default";

/** Failure reasons a local may report: all of lib/net's `NetFailureReason`s. */
export const failureReasons = netFailureReasons;

const requestId = int({ min: 1 });
const requestKey = str({ minLength: 32, maxLength: 32, pattern: /^[0-9a-f]{32}$/ });

/** local -> server, first control message: who I am and the shared token. */
export const helloMessage: MessageDef<"hello", {
  role: Check<"depot-local">;
  token: Check<string>;
  name: Check<string>;
  socksPassword: OptionalCheck<string>;
  agent: OptionalCheck<string>;
  features: OptionalCheck<string[]>;
}> = defineMessage("hello", {
  role: oneOf("depot-local"),
  token: str({ maxLength: 1024 }),
  name: str({ pattern: exitNamePattern, maxLength: 64 }),
  /** When set, SOCKS clients must present it as password (with `name` as username). */
  socksPassword: optional(str({ maxLength: 255 })),
  /** Software version, for the status page. */
  agent: optional(str({ maxLength: 128 })),
  /** Optional capabilities of the local, e.g. "end" (it confirms clean tunnel ends). */
  features: optional(arrayOf(str({ maxLength: 32 }), 32)),
});

/** server -> local, answer to a valid hello. */
export const welcomeMessage: MessageDef<"welcome", {
  name: Check<string>;
  heartbeatMs: Check<number>;
  tunnelPort: Check<number>;
  features: OptionalCheck<string[]>;
  spareIdleMs: OptionalCheck<number>;
  sessionKey: OptionalCheck<string>;
  standbyMax: OptionalCheck<number>;
}> = defineMessage("welcome", {
  name: str({ pattern: exitNamePattern, maxLength: 64 }),
  /** Ping interval both sides use; silence for 3 intervals means dead. */
  heartbeatMs: int({ min: 10, max: 600_000 }),
  /** Port of the tunnel listener; the local dials the control host on it unless configured. */
  tunnelPort: int({ min: 1, max: 65535 }),
  /** Optional capabilities of the server, e.g. "mux". */
  features: optional(arrayOf(str({ maxLength: 32 }), 32)),
  /**
   * How long a pre-dialled tunnel connection may stay silent before its first frame (half the
   * server's handshake timeout); absent: the local keeps no spares.
   */
  spareIdleMs: optional(int({ min: 10, max: 3_600_000 })),
  /**
   * With "open" on both sides: this session's secret, which the local's `mux` frame presents so
   * the server opens the exit's requests on that session and no other (a token alone does not
   * make a mux session an exit's).
   */
  sessionKey: optional(requestKey),
  /**
   * With "open": how many standby spares the server holds for this exit at most (it closes
   * more); absent: {@linkcode legacyStandbyPerExit}, what servers before the field held.
   */
  standbyMax: optional(int({ min: 1, max: 4096 })),
});

/**
 * server -> local on the control connection: the standby spares ("open") the server now holds
 * for this exit at most, when that changed since the welcome's `standbyMax` or the last one
 * (an exit connected, left, or turned out to be a `--mux` exit, which holds none). Sent only to
 * a local that announced {@linkcode shareFeature}: an older local takes an unknown message for
 * a protocol violation.
 */
export const standbyShareMessage: MessageDef<"standbyShare", {
  standbyMax: Check<number>;
}> = defineMessage("standbyShare", { standbyMax: int({ min: 1, max: 4096 }) });

/** server -> local: a SOCKS client asked for `host:port`; dial it and open a tunnel. */
export const connectMessage: MessageDef<"connect", {
  id: Check<number>;
  key: Check<string>;
  host: Check<string>;
  port: Check<number>;
}> = defineMessage("connect", {
  id: requestId,
  /** Per-request secret the tunnel connection must present. */
  key: requestKey,
  host: str({ minLength: 1, maxLength: 255 }),
  port: int({ min: 0, max: 65535 }),
});

/** local -> server: the dial for request `id` failed for `reason`. */
export const connectFailedMessage: MessageDef<"connectFailed", {
  id: Check<number>;
  reason: Check<(typeof failureReasons)[number]>;
  message: OptionalCheck<string>;
}> = defineMessage("connectFailed", {
  id: requestId,
  reason: oneOf(...failureReasons),
  message: optional(str({ maxLength: 512 })),
});

/** server -> local: request `id` was abandoned (client gone, timed out); drop it. */
export const cancelMessage: MessageDef<"cancel", { id: Check<number> }> = defineMessage(
  "cancel",
  { id: requestId },
);

/**
 * local -> server on the control connection: the target->client direction of plain tunnel `id`
 * ended cleanly (the target's FIN; the local has closed-write the tunnel). A raw TCP tunnel
 * ends in a FIN whether the local finished or died, so the server passes the tunnel's FIN on
 * to the SOCKS client only after this; without it, the client is reset. Sent when both sides
 * announced {@linkcode endFeature}; never for mux streams (they carry FIN and RST themselves).
 */
export const endMessage: MessageDef<"end", { id: Check<number> }> = defineMessage("end", {
  id: requestId,
});

/**
 * server -> local: a SOCKS client asked for UDP ASSOCIATE through this exit. The local answers
 * like a `connect` -- a tunnel naming `{id,key}`, or `connectFailed` -- and the tunnel then
 * carries datagrams (lib/depot udp.ts). Sent only to a local that announced
 * {@linkcode udpFeature}.
 */
export const associateMessage: MessageDef<"associate", {
  id: Check<number>;
  key: Check<string>;
}> = defineMessage("associate", { id: requestId, key: requestKey });

/** local -> server, first frame of a tunnel connection: which request it carries. */
export const tunnelMessage: MessageDef<"tunnel", {
  id: Check<number>;
  key: Check<string>;
  boundHost: OptionalCheck<string>;
  boundPort: OptionalCheck<number>;
}> = defineMessage("tunnel", {
  id: requestId,
  key: requestKey,
  /** The address the local's outgoing connection is bound to (the SOCKS reply's BND). */
  boundHost: optional(str({ maxLength: 64 })),
  boundPort: optional(int({ min: 0, max: 65535 })),
});

/**
 * local -> server, first frame of a standby tunnel ("open"): a pre-dialled spare of the exit
 * session holding `sessionKey` (the welcome's). The server keeps it and, for a request, writes
 * the `connect` (or `associate`) on it; the local answers there with `tunnel` or
 * `connectFailed`, as on a stream the server opened.
 */
export const standbyMessage: MessageDef<"standby", {
  name: Check<string>;
  sessionKey: Check<string>;
}> = defineMessage("standby", {
  name: str({ pattern: exitNamePattern, maxLength: 64 }),
  sessionKey: requestKey,
});

/** server -> local on a tunnel connection: matched; relay bytes from now on. */
export const tunnelAcceptedMessage: MessageDef<"tunnelAccepted", { id: Check<number> }> =
  defineMessage("tunnelAccepted", { id: requestId });

/**
 * local -> server, first frame of a tunnel connection that becomes one lib/mux (yamux)
 * session carrying every tunnel as a stream (`--mux`). Authenticated by the shared token.
 */
export const muxMessage: MessageDef<"mux", {
  token: Check<string>;
  name: Check<string>;
  sessionKey: OptionalCheck<string>;
}> = defineMessage("mux", {
  token: str({ maxLength: 1024 }),
  name: str({ pattern: exitNamePattern, maxLength: 64 }),
  /** The welcome's `sessionKey` ("open"): requests of this exit go on streams of this session. */
  sessionKey: optional(requestKey),
});

/** server -> local on a mux tunnel connection: yamux frames follow from now on. */
export const muxAcceptedMessage: MessageDef<"muxAccepted", Record<never, never>> = defineMessage(
  "muxAccepted",
  {},
);

/** Feature name a server announces in welcome when it accepts `mux`. */
export const muxFeature = "mux";
/**
 * Feature name both sides announce (hello, welcome) when they speak `end`: only then does the
 * local send it and the server wait for it before passing a plain tunnel's FIN on.
 */
export const endFeature = "end";

/**
 * Feature name both sides announce (hello, welcome) when they carry SOCKS5 UDP ASSOCIATE: only
 * then does the server send `associate` (otherwise the client gets reply 0x07).
 */
export const udpFeature = "udp";

/**
 * Feature of open-with-data on the mux session: a local announces it in hello when it accepts
 * streams the server opens, and the server in welcome when it opens them. A request then
 * costs no control message: the server opens a stream whose SYN frame carries the
 * `connect{id,key,host,port}` (or `associate`), the local answers on that stream with
 * `tunnel{id,key,bound}` (relay from the next byte on, no `tunnelAccepted`) or
 * `connectFailed{id,reason}`; a timed-out request's stream is reset.
 */
export const openFeature = "open";

/**
 * Feature a local announces in hello when it takes `standbyShare` (its standby spares' bound
 * changing after the welcome); the server sends it to no other local.
 */
export const shareFeature = "share";

/**
 * Feature of standby spares the server retires ("open"): a local announces it in hello when it
 * keeps its standby spares until the server retires them, the server in welcome when it does.
 * The server then ends a standby it held idle for {@linkcode retireAfterFactor} times
 * `spareIdleMs` itself, with an `error` frame of reason {@linkcode standbyRetiredReason} on it,
 * and the local replaces it. Why: the server picks the standby a request is written on, so
 * only its own clock can retire one that no request will take; a local that closed its spares
 * at its own expiry raced with the server's pick (the request written on a spare just closed
 * went unanswered, was asked again elsewhere and cost a warn line, a failed try and its
 * latency).
 */
export const retireFeature = "retire";

/**
 * With {@linkcode retireFeature}, a standby spare idle this many times `spareIdleMs` is retired:
 * the longest a local that replaces its spares itself kept one (past `spareIdleMs`, which it
 * checks every quarter of it), so a burst after an idle pause finds no fewer spares than it did.
 */
export const retireAfterFactor = 1.25;

/** The `error` reason on a standby spare the server retired ({@linkcode retireFeature}). */
export const standbyRetiredReason = "retired";

/**
 * Feature of compact frames (compact.ts): a local announces it in hello when it reads and
 * sends them, the server in welcome. Only then does either side send the hot per-request
 * messages (`connect`, `tunnel`, `tunnelAccepted`, `standby`, `end`) compact, on the control
 * connection and on tunnels; everything else, and everything to an older peer, stays JSON.
 */
export const compactFeature = "compact";

/** The depot control protocol (control and tunnel connections). */
export const depotProtocol: Protocol<DepotMessage> = defineProtocol("depot", depotProtocolVersion, [
  helloMessage,
  welcomeMessage,
  standbyShareMessage,
  connectMessage,
  connectFailedMessage,
  cancelMessage,
  endMessage,
  associateMessage,
  tunnelMessage,
  standbyMessage,
  tunnelAcceptedMessage,
  muxMessage,
  muxAcceptedMessage,
]);

/** Any depot message. */
export type DepotMessage =
  | MessageOf<typeof helloMessage>
  | MessageOf<typeof welcomeMessage>
  | MessageOf<typeof standbyShareMessage>
  | MessageOf<typeof connectMessage>
  | MessageOf<typeof connectFailedMessage>
  | MessageOf<typeof cancelMessage>
  | MessageOf<typeof endMessage>
  | MessageOf<typeof associateMessage>
  | MessageOf<typeof tunnelMessage>
  | MessageOf<typeof standbyMessage>
  | MessageOf<typeof tunnelAcceptedMessage>
  | MessageOf<typeof muxMessage>
  | MessageOf<typeof muxAcceptedMessage>
  | BaseMessage;
/** A `connect` request. */
export type ConnectRequest = MessageOf<typeof connectMessage>;
/** An `associate` request. */
export type AssociateRequest = MessageOf<typeof associateMessage>;

/** Reasons the server gives (in an `error` message) for refusing a peer. */
export const DepotRefusal = {
  /** Wrong token in hello. */
  unauthorized: "unauthorized",
  /** Another local with the same name connected; this one is replaced. */
  replaced: "replaced",
  /**
   * The name is held by a connected local with another SOCKS password: a takeover needs the
   * holder's credential (so a second local cannot strip the password or hijack the exit).
   */
  nameTaken: "name-taken",
  /** The tunnel names no pending request (unknown, used, timed out or cancelled). */
  unknownRequest: "unknown-request",
  /** The tunnel's key does not match its request. */
  badKey: "bad-key",
  /** The server is shutting down. */
  shutdown: "shutdown",
} as const;

/**
 * Standby spares ("open") a server keeps per exit (announced in welcome as `standbyMax`), and
 * so the most a local keeps ready when requests outrun its `spareTunnels` (default 2). At 16,
 * 32 concurrent clients found no standby for a fifth of their requests (a refill is a dial and
 * a frame, slower than a short request), which then took the control path: a `connect` frame,
 * a `tunnel` frame and a `tunnelAccepted` round trip more.
 */
export const maxStandbyPerExit = 64;

/** The standby spares a server without `standbyMax` in its welcome holds per exit. */
export const legacyStandbyPerExit = 16;
