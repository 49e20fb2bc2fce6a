/**
 * Control message vocabulary: `defineMessage` declares one message type with its field
 * schema, `defineProtocol` groups the types of one protocol under a version and validates
 * decoded JSON against them. Every protocol also speaks the base messages `error`, `ping`
 * and `pong`.
 * @module
 */

import { ProtocolError } from "../net/errors.ts";
import {
  type Check,
  checkShape,
  type InferShape,
  isRecord,
  num,
  optional,
  type OptionalCheck,
  type Shape,
  str,
} from "./schema.ts";

/** Why a control exchange failed (sent to the peer in an `error` message where possible). */
export type ControlErrorReason =
  | "too-large" // a frame's length prefix exceeds the receiver's maximum
  | "truncated" // the connection ended inside a frame
  | "bad-json" // the body is not UTF-8 JSON of an object with `v` and `type`
  | "bad-version" // `v` is not the protocol's version
  | "unknown-type" // `type` is not a message of the protocol
  | "schema" // a field is missing or has the wrong type or range
  | "unexpected" // a valid message arrived where another was required
  | "timeout" // the expected message (or any heartbeat) did not arrive in time
  | "closed"; // the connection is closed (locally or by the peer)

/** A control protocol violation or failure, typed by `reason`. */
export class ControlError extends ProtocolError {
  /** Error class name. */
  override name = "ControlError";
  /** An error of `reason` with a human-readable `message`. */
  constructor(
    override readonly reason: ControlErrorReason,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, reason, options);
  }
}

/**
 * The peer sent an `error` message. `reason` is the peer's machine-readable reason
 * (for example "unauthorized", "bad-version", "replaced").
 */
export class RemoteError extends Error {
  /** Error class name. */
  override name = "RemoteError";
  /** The peer's `reason` and `message`. */
  constructor(readonly reason: string, message: string) {
    super(message);
  }
}

/** A message as it travels: protocol version, type, and the type's fields. */
export type Message<T extends string = string, S extends Shape = Shape> =
  & { v: number; type: T }
  & InferShape<S>;

/** One message type of a protocol. */
export interface MessageDef<T extends string, S extends Shape> {
  /** The `type` field value. */
  readonly type: T;
  /** Field checkers. */
  readonly shape: S;
  /** Validate the fields of an already-parsed object (`v` and `type` already checked). */
  check(obj: Record<string, unknown>, v: number): Message<T, S>;
}

/** The message type a definition describes. */
export type MessageOf<D> = D extends MessageDef<infer T, infer S> ? Message<T, S> : never;

/** A message without its version (what callers hand to `send`; the writer adds `v`). */
export type Outgoing<M> = M extends unknown ? Omit<M, "v"> : never;

/**
 * Declare a message type and its fields.
 *
 * @example
 * ```ts
 * import { defineMessage } from "./message.ts";
 * import { int, str } from "./schema.ts";
 * const connect = defineMessage("connect", { id: int({ min: 1 }), host: str(), port: int() });
 * const m = connect.check({ type: "connect", id: 7, host: "a", port: 80 }, 1);
 * console.assert(m.id === 7);
 * ```
 */
export function defineMessage<const T extends string, S extends Shape>(
  type: T,
  shape: S,
): MessageDef<T, S> {
  if (type in { v: 1, type: 1 }) throw new Error(`bad message type ${type}`);
  if ("v" in shape || "type" in shape) throw new Error("fields v and type are reserved");
  return {
    type,
    shape,
    check(obj, v) {
      return { v, type, ...checkShape(shape, obj) } as Message<T, S>;
    },
  };
}

/** `error`: the sender is about to close because of `reason`. */
export const controlErrorMessage: MessageDef<"error", {
  reason: Check<string>;
  message: OptionalCheck<string>;
  supported: OptionalCheck<number>;
}> = defineMessage("error", {
  reason: str({ minLength: 1, maxLength: 64 }),
  message: optional(str({ maxLength: 1024 })),
  /** Versions the sender speaks, on "bad-version". */
  supported: optional(num()),
});
/** `ping`: liveness probe; `ts` is the sender's clock (ms), echoed back for RTT. */
export const pingMessage: MessageDef<"ping", { ts: Check<number> }> = defineMessage("ping", {
  ts: num(),
});
/** `pong`: answer to `ping`, echoing its `ts`. */
export const pongMessage: MessageDef<"pong", { ts: Check<number> }> = defineMessage("pong", {
  ts: num(),
});

/** The base messages every protocol speaks. */
export const baseMessages: readonly [
  typeof controlErrorMessage,
  typeof pingMessage,
  typeof pongMessage,
] = [controlErrorMessage, pingMessage, pongMessage];

/** A base message (error, ping, pong). */
export type BaseMessage = MessageOf<(typeof baseMessages)[number]>;

/** A versioned set of message types. */
export interface Protocol<M extends Message> {
  /** Protocol name, for error messages. */
  readonly name: string;
  /** The only `v` accepted and sent. */
  readonly version: number;
  /** Validate a parsed JSON value; throws `ControlError` ("bad-json", "bad-version", ...). */
  check(value: unknown): M;
  /** Whether `type` is one of the protocol's messages. */
  has(type: string): boolean;
}

/**
 * Group message definitions into a versioned protocol. The base messages are added.
 *
 * @example
 * ```ts
 * import { defineMessage, defineProtocol } from "./message.ts";
 * import { str } from "./schema.ts";
 * const hello = defineMessage("hello", { token: str() });
 * const proto = defineProtocol("demo", 1, [hello]);
 * console.assert(proto.check({ v: 1, type: "hello", token: "t" }).type === "hello");
 * ```
 */
export function defineProtocol<
  const D extends readonly MessageDef<string, Shape>[],
>(
  name: string,
  version: number,
  defs: D,
): Protocol<MessageOf<D[number]> | BaseMessage> {
  const byType = new Map<string, MessageDef<string, Shape>>();
  for (const d of [...baseMessages, ...defs] as MessageDef<string, Shape>[]) {
    if (byType.has(d.type)) throw new Error(`${name}: duplicate message type ${d.type}`);
    byType.set(d.type, d);
  }
  return {
    name,
    version,
    has: (type) => byType.has(type),
    check(value) {
      if (!isRecord(value)) throw new ControlError("bad-json", "message is not a JSON object");
      const { v, type } = value;
      if (typeof v !== "number" || !Number.isSafeInteger(v)) {
        throw new ControlError("bad-json", "message has no integer version v");
      }
      if (typeof type !== "string") throw new ControlError("bad-json", "message has no type");
      // `error` is read at any version, so a peer on another version can say why it closes.
      if (v !== version && type !== controlErrorMessage.type) {
        throw new ControlError("bad-version", `${name}: version ${v} not supported (${version})`);
      }
      const def = byType.get(type);
      if (!def) {
        throw new ControlError(
          "unknown-type",
          `${name}: unknown message type ${type.slice(0, 64)}`,
        );
      }
      try {
        return def.check(value, v) as MessageOf<D[number]> | BaseMessage;
      } catch (err) {
        if (err instanceof ProtocolError && err.reason === "schema") {
          throw new ControlError("schema", `${name} ${type}: ${err.message}`, { cause: err });
        }
        throw err;
      }
    },
  };
}
