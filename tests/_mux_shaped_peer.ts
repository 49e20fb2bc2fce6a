/**
 * The sending end of tests/mux_notsent_lowat_test.ts, run inside a network namespace behind a
 * shaped link: accepts one TCP connection on `0.0.0.0:0` (prints `{"port":N}`), serves a
 * lib/mux session on it. A stream whose first byte is "b" gets data without end (4 MiB
 * writes, as a relay reading a fast source does), one whose first byte is "s" a 1 KiB answer
 * and FIN, one whose first byte is "q" the TCP_NOTSENT_LOWAT its transport has now (as the
 * kernel has it: `{"lowat":N}`) and FIN. Ends when the session does.
 */
import { Session } from "../lib/mux/mod.ts";
import { closeQuietly, notSentLowat } from "../lib/net/mod.ts";

const listener = Deno.listen({ hostname: "0.0.0.0", port: 0 });
console.log(JSON.stringify({ port: listener.addr.port }));
const conn = await listener.accept();
listener.close();
const session = Session.server(conn);
const bulk = new Uint8Array(4 * 1024 * 1024).fill(98);
const answer = new Uint8Array(1024).fill(115);
for await (const s of session) {
  (async () => {
    const first = new Uint8Array(1);
    if ((await s.read(first)) !== 1) return;
    if (first[0] === 98) {
      while (true) await s.write(bulk);
    }
    if (first[0] === 113) {
      await s.write(new TextEncoder().encode(JSON.stringify({ lowat: notSentLowat(conn) })));
      await s.closeWrite();
      return;
    }
    await s.write(answer);
    await s.closeWrite();
  })().catch(() => closeQuietly(s));
}
await session.closed;
