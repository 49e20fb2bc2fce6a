/**
 * `deno run -A bench/_mux_slowdown.ts TREE[,TREE...] [ROUNDS]` (root: a network namespace): a
 * lib/mux link that turns slow under a download, tree against tree (bench/RESULTS.md mlow). The
 * sending end is each tree's tests/_mux_shaped_peer.ts in a namespace behind an unshaped veth;
 * this process (this checkout's lib/mux) reads one endless download from it, reads the peer's
 * TCP_NOTSENT_LOWAT after 0.5 s (what the tree sets on a fast transport), then shapes the veth to
 * 20 Mbit both ways and asks 12 small answers in a row on other streams of the session: per
 * answer, the download bytes that came before it and its time (the first shows what the sender
 * had queued when the link slowed). Trees alternate round by round. The peer must answer "q"
 * (its option as `{"lowat":N}`); trees before mlow do not. Not a test: numbers as measured.
 * @module
 */
import { Session } from "../lib/mux/mod.ts";
import { closeQuietly } from "../lib/net/mod.ts";
import { shapedNamespace } from "../tests/_netns.ts";
import {
  countReads,
  peerLowat,
  readText,
  shapedPeerPort,
  startShapedPeer,
  stopShapedPeer,
} from "../tests/_mux_shaped.ts";

const trees = (Deno.args[0] ?? ".").split(",");
const rounds = Number(Deno.args[1] ?? 2);

for (let r = 0; r < rounds; r++) {
  for (const tree of trees) {
    const subnet = `198.18.${100 + (Deno.pid + r) % 150}`;
    const net = await shapedNamespace(`wmz${Deno.pid % 100000}`, `${subnet}.1`, `${subnet}.2`, 20);
    let peer: Deno.ChildProcess | undefined;
    try {
      await net.shape(0);
      peer = startShapedPeer(net.ns, { dir: tree });
      const port = await shapedPeerPort(peer);
      const conn = await Deno.connect({ hostname: `${subnet}.2`, port });
      const session = Session.client(conn, { keepaliveIntervalMs: 0 });
      const download = await session.open({ data: new Uint8Array([98]) });
      const bulk = countReads(download);
      await new Promise((res) => setTimeout(res, 500));
      const fast = await peerLowat(session);
      await new Promise((res) => setTimeout(res, 300));
      await net.shape(20);
      const answers: string[] = [];
      for (let i = 0; i < 12; i++) {
        const b0 = bulk.bytes, t0 = performance.now();
        await readText(await session.open({ data: new Uint8Array([115]), fin: true }));
        answers.push(
          `${((bulk.bytes - b0) / 1e6).toFixed(2)} MB/${(performance.now() - t0).toFixed(0)} ms`,
        );
      }
      const slow = await peerLowat(session);
      console.log(
        `${tree}: option fast ${fast}, slow ${slow}; ahead of each answer: ${answers.join(", ")}`,
      );
      bulk.stopped = true;
      await session.close();
      closeQuietly(download);
      await bulk.done;
    } finally {
      await stopShapedPeer(peer);
      await net.destroy();
    }
  }
}
