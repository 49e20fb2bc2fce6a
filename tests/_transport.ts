/**
 * Transfers for transport tests: an upload, a half-close, an answer and a download, each
 * checked byte-exact by SHA-256, so a carrier that loses, reorders or cuts bytes, or turns a
 * half-close into a close, fails.
 * @module
 */

import { assertEquals } from "./_assert.ts";
import { blockStreamSha256, drainHash, listenLocal, sendBlocks } from "./_util.ts";
import {
  BufferedReader,
  type Duplex,
  serve,
  type Server,
  withPrefix,
  writeAll,
} from "../lib/net/mod.ts";

/**
 * The far end of every transfer here: hash everything up to the client's FIN, answer
 * `<bytes> <sha256>\n`, then send `downBytes` of the block stream (seed 2) and close.
 */
export async function hashThenSend(conn: Duplex, downBytes: number): Promise<void> {
  const got = await drainHash(conn);
  await writeAll(conn, new TextEncoder().encode(`${got.bytes} ${got.sha256}\n`));
  await sendBlocks(conn, downBytes, 2);
  await conn.closeWrite();
}

/** Upload `up` bytes (seed 1), half-close, then read the answer line and the download. */
export async function uploadHalfCloseDownload(
  conn: Duplex,
  up: number,
  down: number,
): Promise<void> {
  await sendBlocks(conn, up, 1);
  await conn.closeWrite();
  const r = new BufferedReader(conn);
  let line = "";
  for (let b = await r.readByte(); b !== 0x0a; b = await r.readByte()) {
    line += String.fromCharCode(b);
  }
  assertEquals(line, `${up} ${blockStreamSha256(up, 1)}`, "upload byte-exact");
  const downHash = await drainHash(withPrefix(conn, r.takeBuffered()));
  assertEquals(downHash, { bytes: down, sha256: blockStreamSha256(down, 2) }, "download");
}

/** A TCP target running {@linkcode hashThenSend} on every connection. */
export function startHashThenSendTarget(downBytes: number): Server {
  return serve(listenLocal(), (conn) => hashThenSend(conn, downBytes));
}
