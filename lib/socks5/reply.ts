/**
 * The one table between dial failures and SOCKS5 reply codes, used in both directions:
 * a server maps its dial failure to a reply, a client maps a reply back to a reason.
 * @module
 */

import type { NetFailureReason } from "../net/mod.ts";
import { Reply } from "./const.ts";

/**
 * Failure reason <-> reply code. Reading left to right gives a server's reply; reading right
 * to left, the first row with a code gives the client's reason (so 0x04 reads back as
 * "host-unreachable", 0x01 as "other"). A timeout answers 0x06 (TTL expired) as curl and
 * gost do.
 */
const replyTable: readonly (readonly [NetFailureReason, number])[] = [
  ["host-unreachable", Reply.hostUnreachable],
  ["resolve", Reply.hostUnreachable],
  ["refused", Reply.connectionRefused],
  ["network-unreachable", Reply.networkUnreachable],
  ["timeout", Reply.ttlExpired],
  ["not-allowed", Reply.notAllowed],
  ["other", Reply.generalFailure],
  ["aborted", Reply.generalFailure],
];

/** The reply code a server sends when its outgoing dial failed for `reason`. */
export function replyForReason(reason: NetFailureReason): number {
  return replyTable.find(([r]) => r === reason)?.[1] ?? Reply.generalFailure;
}

/** The failure reason a client reports for reply `code` (unknown codes: "other"). */
export function reasonForReply(code: number): NetFailureReason {
  return replyTable.find(([, c]) => c === code)?.[0] ?? "other";
}

/** A short human name of a reply code, for logs and error messages. */
export function replyName(code: number): string {
  const hit = Object.entries(Reply).find(([, c]) => c === code);
  return hit ? hit[0] : `unknown reply 0x${code.toString(16).padStart(2, "0")}`;
}
