/**
 * The control path on the standalone front: a tunnel client's first request to
 * `/_controlPath_/` is checked, its identifier authenticated, and the connection switched
 * to the raw mux transport (`Upgrade: warren-mux`) or to our own WebSocket framing.
 * @module
 */

import { type BufferedReader, type Duplex, withPrefix, writeAll } from "../net/mod.ts";
import { peerCommonName } from "../transport/mod.ts";
import type { Logger } from "../log.ts";
import { getHeader, headerHasToken, type RequestHead, simpleResponse } from "../http/mod.ts";
import { controlPath, rawUpgradeToken } from "./protocol.ts";
import { clientRefusal, type PeerInfo, presentedIdentifier } from "./forward.ts";
import type { TunnelServer } from "./server.ts";
import { subdomainHeader } from "./subdomains.ts";
import { checkUpgradeRequest, switchingProtocolsResponse, WsConn } from "../transport/websocket.ts";

const rawSwitchResponse = new TextEncoder().encode(
  `HTTP/1.1 101 Switching Protocols\r\nUpgrade: ${rawUpgradeToken}\r\nConnection: Upgrade\r\n\r\n`,
);

/** Whether a request head is for the control path (the first request of a tunnel client). */
export function isControlRequest(head: RequestHead): boolean {
  return head.target === controlPath || head.target.startsWith(controlPath + "?");
}

/**
 * Take a tunnel client's connection: refuse (400/401/409) or switch it and run its session
 * until it ends.
 */
export async function handleControl(
  server: TunnelServer,
  conn: Duplex,
  reader: BufferedReader,
  head: RequestHead,
  peer: PeerInfo,
  log: Logger,
): Promise<void> {
  const hdr = (n: string) => getHeader(head.headers, n);
  const raw = (hdr("upgrade") ?? "").toLowerCase() === rawUpgradeToken;
  const why = raw
    ? (head.method === "GET" && headerHasToken(head.headers, "connection", "upgrade")
      ? null
      : "bad raw upgrade")
    : checkUpgradeRequest(head.method, hdr);
  if (why) {
    await writeAll(conn, simpleResponse(400, `${why}\n`));
    return;
  }
  const admitted = await server.admit(
    presentedIdentifier(hdr),
    peer.remote,
    hdr(subdomainHeader) ?? undefined,
  );
  if (!admitted.ok) {
    log.warn("client refused", { remote: peer.remote, failure: admitted.reason });
    const { status, text } = clientRefusal[admitted.reason];
    await writeAll(conn, simpleResponse(status, text)).catch(() => {
      // Client left.
    });
    return;
  }
  if (raw) {
    // The mux session runs straight on the TCP connection: no WebSocket framing cost.
    await writeAll(conn, rawSwitchResponse);
    await server.attach(
      withPrefix(conn, reader.takeBuffered()),
      admitted.identifier,
      peer.remote,
      peerCommonName(conn as Deno.Conn),
    );
    return;
  }
  await writeAll(conn, await switchingProtocolsResponse(hdr("sec-websocket-key")!));
  const ws = new WsConn(conn, { role: "server", prefix: reader.takeBuffered() });
  await server.attach(ws, admitted.identifier, peer.remote, peerCommonName(conn as Deno.Conn));
}
