/**
 * lib/udp: UDP relaying -- a `node:dgram` socket with a promise API (`UdpSocket`), the bounded
 * flow table every UDP relay keeps (`FlowTable`: idle timeout, flow and queued-byte bounds),
 * drop counters by reason (`UdpDrops`), the static forward (`startUdpForward`), the two
 * halves of a SOCKS5 UDP ASSOCIATE (`UdpAssociation` where the client sends, `UdpExit` where
 * datagrams leave), datagrams framed over a byte stream (`DatagramStream`), and the
 * `warren_udp_*` counters (`UdpTally`).
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
export { UdpAssociation, type UdpAssociationEnd, unmappedIp } from "./associate.ts";
export { type UdpAnswerHandler, UdpExit, type UdpExitOptions } from "./exit.ts";
export { DatagramStream, encodeDatagramFrame, maxDatagramFrameBytes } from "./stream.ts";
export {
  liveFlowSources,
  udpBytesTotal,
  udpDatagramsTotal,
  udpDroppedTotal,
  udpFlowsActive,
  udpLabels,
  udpListenerOf,
  type UdpRelayName,
  UdpTally,
} from "./metrics.ts";
export {
  directUdpOpener,
  type UdpChannel,
  type UdpChannelContext,
  type UdpChannelOpener,
} from "./channel.ts";
