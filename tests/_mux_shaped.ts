/**
 * The shaped-link lib/mux peer (./_mux_shaped_peer.ts) from the other side: start it inside a
 * network namespace, read its port, stop it, ask its TCP_NOTSENT_LOWAT, and count a stream's
 * bytes as they come. Used by tests/mux_notsent_lowat_test.ts and bench/_mux_slowdown.ts,
 * bench/_mux_gbit.ts (which run each tree's own peer: `dir`).
 * @module
 */
import type { Session } from "../lib/mux/mod.ts";

/** A readable stream or connection. */
type Readable = { read(p: Uint8Array): Promise<number | null> };

/**
 * The peer started inside the namespace `ns` (it prints its port first): this checkout's, or
 * the one of the tree at `dir`, with `env` for it.
 */
export function startShapedPeer(
  ns: string,
  opts: { dir?: string; env?: Record<string, string> } = {},
): Deno.ChildProcess {
  const script = opts.dir
    ? `${opts.dir}/tests/_mux_shaped_peer.ts`
    : new URL("./_mux_shaped_peer.ts", import.meta.url).pathname;
  return new Deno.Command("ip", {
    args: [...["netns", "exec", ns, Deno.execPath(), "run", "-A"], script],
    env: opts.env,
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
}

/** The port the peer listens on, from its first line of output. */
export async function shapedPeerPort(peer: Deno.ChildProcess): Promise<number> {
  const lines = peer.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let head = "";
  while (!head.includes("\n")) {
    const r = await lines.read();
    if (r.done) throw new Error("the peer ended before it listened");
    head += r.value;
  }
  await lines.cancel();
  return (JSON.parse(head.slice(0, head.indexOf("\n"))) as { port: number }).port;
}

/** Kill the peer (if started) and wait for its end. */
export async function stopShapedPeer(peer: Deno.ChildProcess | undefined): Promise<void> {
  if (!peer) return;
  try {
    peer.kill("SIGKILL");
  } catch {
    // already gone
  }
  await peer.status;
}

/** Everything `s` sends until its FIN, as text. */
export async function readText(s: Readable): Promise<string> {
  const dec = new TextDecoder();
  const buf = new Uint8Array(2048);
  let text = "";
  for (let n; (n = await s.read(buf)) !== null;) text += dec.decode(buf.subarray(0, n));
  return text;
}

/** The peer's TCP_NOTSENT_LOWAT now, asked on a stream of its own ("q": see the peer). */
export async function peerLowat(session: Session): Promise<number> {
  const s = await session.open({ data: new Uint8Array([113]), fin: true });
  return (JSON.parse(await readText(s)) as { lowat: number }).lowat;
}

/**
 * Bytes read from `s` until it ends or `stopped` is set: a counter read as it goes, and
 * `caughtUp()`, which resolves at the next read that found less than a full buffer (what had
 * come in was all taken: a stalled reader's backlog is not counted as queued ahead).
 */
export function countReads(s: Readable): {
  bytes: number;
  stopped: boolean;
  done: Promise<void>;
  caughtUp(): Promise<void>;
} {
  const bufBytes = 256 * 1024;
  let wake = null as (() => void) | null;
  const counter = {
    bytes: 0,
    stopped: false,
    done: Promise.resolve(),
    caughtUp: (): Promise<void> => new Promise<void>((r) => wake = r),
  };
  counter.done = (async () => {
    const buf = new Uint8Array(bufBytes);
    while (!counter.stopped) {
      const n = await s.read(buf).catch(() => null);
      if (n === null) break;
      counter.bytes += n;
      if (n < bufBytes && wake) {
        const w: () => void = wake;
        wake = null;
        w();
      }
    }
    wake?.();
  })();
  return counter;
}
