/**
 * lib/socks5: RFC 1928 (SOCKS5), RFC 1929 (username/password) and SOCKS4/4a on the same port -- the wire vocabulary,
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
  acceptSocks,
  acceptSocks5,
  sendSocks5Reply,
  type Socks5Request,
  type Socks5ServerOptions,
  type SocksRequest,
  staticCredentials,
} from "./server.ts";
export {
  type Socks5ClientOptions,
  socks5Connect,
  type Socks5ConnectResult,
  socks5UdpAssociate,
} from "./client.ts";
export {
  readSocks4Request,
  sendSocks4Reply,
  Socks4Reply,
  type Socks4Request,
  socks4Version,
} from "./socks4.ts";
export { decodeSocks5Udp, encodeSocks5Udp, type Socks5UdpDatagram } from "./udp.ts";
export { encodeAddress, formatIPv6, parseIPv4, parseIPv6 } from "./addr.ts";
