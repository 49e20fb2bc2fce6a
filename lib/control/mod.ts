/**
 * lib/control: versioned, length-prefixed (u32 BE), schema-validated JSON control messages
 * with error-reply-and-close on violations, ping/pong RTT heartbeats and constant-time
 * token comparison. See README.md for the wire format.
 * @module
 */
export * from "./schema.ts";
export * from "./message.ts";
export * from "./frame.ts";
export * from "./compact.ts";
export * from "./conn.ts";
export * from "./auth.ts";
