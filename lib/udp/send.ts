/**
 * `sendCounted`: one datagram out through a socket, its bytes reserved in a flow table's
 * send budget until the kernel took them, and any failure counted as a drop -- never thrown.
 * @module
 */

import type { HostPort } from "../net/addr.ts";
import type { Flow, FlowTable } from "./flows.ts";
import { UdpSendError, type UdpSocket } from "./socket.ts";

/**
 * Send `data` to `to` through `sock` within `table`'s queued-bytes bound. Returns false when
 * it was dropped at once ("queue-full"); a later failure is counted as "too-big" or
 * "send-failed" in `table.drops`.
 */
export function sendCounted<F extends Flow>(
  sock: UdpSocket,
  data: Uint8Array,
  to: HostPort,
  table: FlowTable<F>,
): boolean {
  if (!table.reserve(data.length)) return false;
  sock.send(data, to).then(
    () => table.release(data.length),
    (err) => {
      table.release(data.length);
      const reason = err instanceof UdpSendError ? err.reason : "send-failed";
      table.drops.drop(reason, `${data.length} bytes to ${to.host}:${to.port}: ${err.message}`);
    },
  );
  return true;
}
