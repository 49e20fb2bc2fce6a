/**
 * lib/socks5: RFC 1928 (SOCKS5) and RFC 1929 (username/password) — the wire vocabulary,
 * the server handshake (`acceptSocks5` + `sendSocks5Reply`), the client (`socks5Connect`)
 * and the one table between dial failures and reply codes. See README.md for the format.
 * @module
 */
export {
  AddrType,
  Command,
  Method,
  Reply,
  Socks5Error,
  type Socks5ErrorReason,
  Socks5ReplyError,
} from "./const.ts";
export { reasonForReply, replyForReason, replyName } from "./reply.ts";
export {
  acceptSocks5,
  sendSocks5Reply,
  type Socks5Request,
  type Socks5ServerOptions,
  staticCredentials,
} from "./server.ts";
export { type Socks5ClientOptions, socks5Connect, type Socks5ConnectResult } from "./client.ts";
export { encodeAddress, formatIPv6, parseIPv4, parseIPv6 } from "./addr.ts";
