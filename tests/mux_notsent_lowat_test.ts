/**
 * A bulk stream must not hold up the other streams of a lib/mux session on a slow link
 * (bench/RESULTS.md dmode, mhol): a session sets TCP_NOTSENT_LOWAT on its TCP transport, so
 * the kernel takes little unsent data and the session's own queue, where each stream's frames
 * take turns, holds the rest; a stream queues at most a bounded share ahead of the others.
 *
 * 1. The option is on the socket of both ends (read back with getsockopt through FFI), also
 *    under a wrapper (`withPrefix`), and `notSentLowatBytes: 0` leaves the socket alone.
 * 2. Behaviour: a sender in a network namespace behind a `tc tbf` link (20 Mbit) streams one
 *    endless download while a small request on another stream of the same session is
 *    answered; the download bytes that arrive before the answer (what was queued ahead of it)
 *    stay far below what the receiver's 8 MiB window allows (byte counts, not times): 0.24-0.26
 *    MB, where before the change 1.0-4.2 MB (the kernel's send buffer and the rest of a 4 MiB
 *    frame) sat ahead.
 */
import { assert, assertEquals } from "./_assert.ts";
import { defaultNotSentLowatBytes, Session } from "../lib/mux/mod.ts";
import { closeQuietly, libcPath, notSentLowat, withPrefix } from "../lib/net/mod.ts";
import { netnsSkipReason, shapedNamespace } from "./_netns.ts";

const noFfi = libcPath() === null ? "no FFI permission for libc (or not Linux)" : undefined;
if (noFfi) console.log(`mux_notsent_lowat_test: socket option cases ignored: ${noFfi}`);

Deno.test({
  name: "mux: a session sets TCP_NOTSENT_LOWAT on its TCP transport, also under a wrapper",
  ignore: noFfi !== undefined,
  async fn() {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const accepted = listener.accept();
    const dialled = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
    const conn = await accepted;
    listener.close();
    assertEquals(notSentLowat(dialled), 0, "not set before");
    const client = Session.client(dialled, { keepaliveIntervalMs: 0 });
    const server = Session.server(withPrefix(conn, new Uint8Array(0)), {
      keepaliveIntervalMs: 0,
      notSentLowatBytes: 32 * 1024,
    });
    assertEquals(notSentLowat(dialled), defaultNotSentLowatBytes);
    assertEquals(notSentLowat(conn), 32 * 1024);
    await client.close();
    await server.close();

    const l2 = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const a2 = l2.accept();
    const d2 = await Deno.connect({ hostname: "127.0.0.1", port: l2.addr.port });
    const c2 = await a2;
    l2.close();
    const off = Session.client(d2, { keepaliveIntervalMs: 0, notSentLowatBytes: 0 });
    assertEquals(notSentLowat(d2), 0, "0 leaves the socket alone");
    await off.close();
    closeQuietly(c2);
  },
});

const skip = netnsSkipReason() ?? noFfi;
if (skip) console.log(`mux_notsent_lowat_test: shaped-link case ignored: ${skip}`);

/**
 * Bytes read from `s` until it ends or `stop()`: a counter the test reads as it goes, and
 * `caughtUp()`, which resolves at the next read that found less than a full buffer (what had
 * come in was all taken: a stalled test process's backlog is not counted as queued ahead).
 */
function countReads(s: { read(p: Uint8Array): Promise<number | null> }) {
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

Deno.test({
  name: "mux: on a 20 Mbit link a small answer is not queued behind a download's window",
  ignore: skip !== undefined,
  sanitizeOps: true,
  sanitizeResources: true,
  async fn() {
    // A subnet of its own per run (another run at once would route to its twin).
    const subnet = `198.18.${100 + Deno.pid % 150}`;
    const net = await shapedNamespace(`wml${Deno.pid % 100000}`, `${subnet}.1`, `${subnet}.2`, 20);
    let peer: Deno.ChildProcess | undefined;
    let session: Session | undefined;
    try {
      peer = new Deno.Command("ip", {
        args: [
          ...["netns", "exec", net.ns, Deno.execPath(), "run", "-A"],
          new URL("./_mux_shaped_peer.ts", import.meta.url).pathname,
        ],
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      const lines = peer.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let head = "";
      while (!head.includes("\n")) {
        const r = await lines.read();
        assert(!r.done, "the peer ended before it listened");
        head += r.value;
      }
      const port = (JSON.parse(head.slice(0, head.indexOf("\n"))) as { port: number }).port;
      await lines.cancel();
      const conn = await Deno.connect({ hostname: `${subnet}.2`, port });
      // A receiver that lets the download run 8 MiB ahead: what sits before a small answer
      // is then up to the sender, not the window.
      session = Session.client(conn, {
        initialWindowBytes: 8 * 1024 * 1024,
        maxWindowBytes: 8 * 1024 * 1024,
        keepaliveIntervalMs: 0,
      });
      const bulk = countReads(await session.open({ data: new Uint8Array([98]) }));
      // Until the download fills whatever queues it may: 3 MiB at 2.5 MB/s.
      while (bulk.bytes < 3 * 1024 * 1024) await new Promise((r) => setTimeout(r, 50));
      const ahead: number[] = [];
      for (let i = 0; i < 5; i++) {
        await bulk.caughtUp();
        const before = bulk.bytes;
        const small = await session.open({ data: new Uint8Array([115]), fin: true });
        const got = countReads(small);
        await got.done;
        assertEquals(got.bytes, 1024);
        ahead.push(bulk.bytes - before);
      }
      bulk.stopped = true;
      console.log(`download bytes ahead of each small answer: ${ahead.join(", ")}`);
      // Measured: 0.24-0.26 MB with the option and the bounded queue; 1.0-4.2 MB before (the
      // kernel's send buffer and the rest of a 4 MiB frame).
      const median = [...ahead].sort((a, b) => a - b)[2];
      assert(
        median < 1024 * 1024,
        `download bytes that came before each small answer: ${ahead.join(", ")}`,
      );
      await session.close();
      await bulk.done;
    } finally {
      if (session) await session.close();
      if (peer) {
        try {
          peer.kill("SIGKILL");
        } catch {
          // already gone
        }
        await peer.status;
      }
      await net.destroy();
    }
  },
});
