/**
 * lib/udp: UDP relaying — a `node:dgram` socket with a promise API (`UdpSocket`), the bounded
 * flow table every UDP relay keeps (`FlowTable`: idle timeout, flow and queued-byte bounds),
 * drop counters by reason (`UdpDrops`), and the static forward (`startUdpForward`).
 * @module
 */
export { type DatagramHandler, maxUdpPayloadBytes, UdpSendError, UdpSocket } from "./socket.ts";
export { type UdpDropReason, UdpDrops } from "./drops.ts";
export {
  defaultMaxUdpFlows,
  defaultMaxUdpQueuedBytes,
  defaultUdpIdleTimeoutMs,
  type Flow,
  type FlowLimits,
  FlowTable,
} from "./flows.ts";
export { sendCounted } from "./send.ts";
export {
  startUdpForward,
  type UdpForward,
  type UdpForwardOptions,
  type UdpForwardStats,
} from "./forward.ts";
