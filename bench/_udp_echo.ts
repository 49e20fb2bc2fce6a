/**
 * Helper of the UDP benchmark: a UDP echo on 127.0.0.1 (every datagram sent back to where it
 * came from), in its own process so the bench client's CPU is not its own.
 *
 *   deno run -A bench/_udp_echo.ts   # prints msg="listening" name=udp-echo addr=127.0.0.1:N
 */
import { UdpSocket } from "../lib/udp/mod.ts";

const sock = await UdpSocket.bind("127.0.0.1", 0);
sock.onMessage = (data, from) => {
  sock.send(data, from).catch(() => {
    // A send the kernel refused is a lost echo: the bench counts it as lost.
  });
};
console.log(`msg="listening" name=udp-echo addr=127.0.0.1:${sock.addr.port}`);
Deno.addSignalListener("SIGTERM", () => {
  sock.close();
  Deno.exit(0);
});
