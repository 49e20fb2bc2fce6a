/**
 * The SOCKS5 wire vocabulary (RFC 1928, RFC 1929) in one place: versions, methods,
 * commands, address types, reply codes, field limits and the errors a handshake ends with.
 * @module
 */

import { NetError, type NetFailureReason } from "../net/mod.ts";

/** Protocol version byte of every SOCKS5 greeting, request and reply. */
export const socksVersion = 0x05;
/** Version byte of the RFC 1929 username/password sub-negotiation. */
export const authVersion = 0x01;

/** Authentication methods offered in the greeting and chosen by the server. */
export const Method = {
  /** No authentication required. */
  noAuth: 0x00,
  /** GSSAPI (RFC 1961); never chosen by warren. */
  gssapi: 0x01,
  /** Username/password (RFC 1929). */
  userPass: 0x02,
  /** Server answer meaning "none of your methods is acceptable"; the client must close. */
  noAcceptable: 0xff,
} as const;

/** Request commands. */
export const Command = {
  connect: 0x01,
  bind: 0x02,
  udpAssociate: 0x03,
} as const;

/** Address types of requests and replies. */
export const AddrType = {
  ipv4: 0x01,
  domain: 0x03,
  ipv6: 0x04,
} as const;

/** Reply codes (the REP field of a reply). */
export const Reply = {
  succeeded: 0x00,
  generalFailure: 0x01,
  notAllowed: 0x02,
  networkUnreachable: 0x03,
  hostUnreachable: 0x04,
  connectionRefused: 0x05,
  ttlExpired: 0x06,
  commandNotSupported: 0x07,
  addressTypeNotSupported: 0x08,
} as const;

/** Status byte of a username/password sub-negotiation answer: 0x00 success. */
export const authSucceeded = 0x00;
/** Any non-zero status is failure; warren sends 0x01 and then closes (RFC 1929). */
export const authFailed = 0x01;

/** Longest domain name, username or password: each has a one-byte length. */
export const maxFieldBytes = 255;

/** Why a handshake was refused for a reason the protocol knows about (not garbage). */
export type Socks5ErrorReason =
  /** The client offered no method we accept; we answered 0xFF. */
  | "no-acceptable-method"
  /** Wrong username or password; we answered status 0x01. */
  | "auth-failed"
  /** A SOCKS4 request (no password possible) on a listener that requires one; we answered 0x5B. */
  | "auth-required"
  /** BIND, UDP ASSOCIATE or an unknown command; we answered 0x07. */
  | "command-not-supported"
  /** The client asked for something we cannot encode (a domain over 255 bytes ...). */
  | "bad-argument";

/**
 * A SOCKS5 handshake ended by a defined refusal (no acceptable method, wrong password,
 * unsupported command). The peer has already been told; the caller closes the connection.
 * Garbage input is a `ProtocolError` instead.
 */
export class Socks5Error extends Error {
  override name = "Socks5Error";
  constructor(readonly reason: Socks5ErrorReason, message: string) {
    super(message);
  }
}

/**
 * A SOCKS5 server answered a CONNECT with a failure reply. A `NetError` (so dial-failure
 * handling treats a chained proxy like a direct dial) carrying the raw `reply` code and the
 * `reason` it maps to (see `reasonForReply`).
 */
export class Socks5ReplyError extends NetError {
  override name = "Socks5ReplyError";
  constructor(readonly reply: number, reason: NetFailureReason, message: string) {
    super(reason, message);
  }
}
