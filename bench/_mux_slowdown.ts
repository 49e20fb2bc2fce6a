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

const trees = (Deno.args[0] ?? ".").split(",");
const rounds = Number(Deno.args[1] ?? 2);
const dec = new TextDecoder();

/** Everything stream `s` sends until its FIN, as text. */
async function readAll(s: { read(p: Uint8Array): Promise<number | null> }): Promise<string> {
  const buf = new Uint8Array(2048);
  let text = "";
  for (let n; (n = await s.read(buf)) !== null;) text += dec.decode(buf.subarray(0, n));
  return text;
}

/** The peer's TCP_NOTSENT_LOWAT now ("q"). */
async function peerLowat(session: Session): Promise<number> {
  const s = await session.open({ data: new Uint8Array([113]), fin: true });
  return (JSON.parse(await readAll(s)) as { lowat: number }).lowat;
}

for (let r = 0; r < rounds; r++) {
  for (const tree of trees) {
    const subnet = `198.18.${100 + (Deno.pid + r) % 150}`;
    const net = await shapedNamespace(`wmz${Deno.pid % 100000}`, `${subnet}.1`, `${subnet}.2`, 20);
    let peer: Deno.ChildProcess | undefined;
    try {
      await net.shape(0);
      peer = new Deno.Command("ip", {
        args: [
          ...["netns", "exec", net.ns, Deno.execPath(), "run", "-A"],
          `${tree}/tests/_mux_shaped_peer.ts`,
        ],
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      const lines = peer.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let head = "";
      while (!head.includes("\n")) {
        const l = await lines.read();
        if (l.done) throw new Error(`${tree}: the peer ended before it listened`);
        head += l.value;
      }
      await lines.cancel();
      const port = (JSON.parse(head.slice(0, head.indexOf("\n"))) as { port: number }).port;
      const conn = await Deno.connect({ hostname: `${subnet}.2`, port });
      const session = Session.client(conn, { keepaliveIntervalMs: 0 });
      const download = await session.open({ data: new Uint8Array([98]) });
      let bulk = 0;
      let stop = false;
      const reading = (async () => {
        const b = new Uint8Array(256 * 1024);
        while (!stop) {
          const n = await download.read(b).catch(() => null);
          if (n === null) break;
          bulk += n;
        }
      })();
      await new Promise((res) => setTimeout(res, 500));
      const fast = await peerLowat(session);
      await new Promise((res) => setTimeout(res, 300));
      await net.shape(20);
      const answers: string[] = [];
      for (let i = 0; i < 12; i++) {
        const b0 = bulk, t0 = performance.now();
        await readAll(await session.open({ data: new Uint8Array([115]), fin: true }));
        answers.push(
          `${((bulk - b0) / 1e6).toFixed(2)} MB/${(performance.now() - t0).toFixed(0)} ms`,
        );
      }
      const slow = await peerLowat(session);
      console.log(
        `${tree}: option fast ${fast}, slow ${slow}; ahead of each answer: ${answers.join(", ")}`,
      );
      stop = true;
      await session.close();
      closeQuietly(download);
      await reading;
    } finally {
      try {
        peer?.kill("SIGKILL");
      } catch {
        // already gone
      }
      await peer?.status;
      await net.destroy();
    }
  }
}
