/**
 * depot-local `--mux` serving the requests a server opens streams for ("open"): the request is
 * decoded as the stream's SYN is read when it came whole, and read under the handshake timer
 * when it did not (a request split over several frames); a stream whose first frame does not
 * decode is closed unanswered and the session serves on. The server is driven by hand
 * (`handServer` and a lib/mux session), so each split is exactly what the local reads.
 */

import { BufferedReader, ControlReader, ControlWriter } from "../lib/control/mod.ts";
import { DepotLocal, type DepotMessage, depotProtocol } from "../lib/depot/mod.ts";
import { Session, type Stream } from "../lib/mux/mod.ts";
import { withPrefix, writeAll } from "../lib/net/mod.ts";
import { assert, assertEquals } from "./_assert.ts";
import { handServer, rawFrame, startTarget } from "./_depot.ts";
import { nextWithin, readAll, within } from "./_util.ts";

const sessionKey = "ab".repeat(16);

/** A connect request's frame (JSON), to `port`. */
function connectFrame(id: number, port: number): Uint8Array {
  return rawFrame(
    JSON.stringify({ v: 1, type: "connect", id, key: "cd".repeat(16), host: "127.0.0.1", port }),
  );
}

/** The first message the local answers on `s`, and the stream after it. */
async function answerOn(s: Stream): Promise<{ msg: DepotMessage | null; rest: BufferedReader }> {
  const r = new BufferedReader(s, 1024);
  const msg = await nextWithin(new ControlReader(r, depotProtocol), "the local's answer");
  return { msg, rest: r };
}

Deno.test("depot-local --mux: a request whole in the SYN, split over frames, or broken; each stream served on its own", async () => {
  const target = startTarget();
  let sessionReady!: (s: Session) => void;
  const muxSession = new Promise<Session>((r) => sessionReady = r);
  const server = handServer({
    welcome: {
      name: "default",
      heartbeatMs: 60_000,
      features: ["mux", "end", "open"],
      spareIdleMs: 600_000,
      sessionKey,
    },
    async onTunnel({ conn, first, rest }) {
      if (first?.type !== "mux") return;
      assertEquals(first.sessionKey, sessionKey);
      await new ControlWriter(conn, depotProtocol).send({ type: "muxAccepted" });
      const s = Session.server(rest, { keepaliveIntervalMs: 0 });
      sessionReady(s);
      await s.closed;
    },
  });
  const local = new DepotLocal({
    server: { host: "127.0.0.1", port: server.controlPort },
    mux: true,
    backoff: { initialMs: 50, maxMs: 500 },
  });
  const running = local.run();
  const echo = async (s: Stream, rest: BufferedReader, what: string) => {
    await writeAll(s, new TextEncoder().encode(`E${what}`));
    await s.closeWrite();
    const got = await within(readAll(withPrefix(s, rest.takeBuffered())), `${what}'s echo`);
    assertEquals(new TextDecoder().decode(got), what);
  };
  try {
    const mux = await within(muxSession, "the local's mux session");

    // Whole in the SYN (the usual way): answered `tunnel`, then relayed.
    const whole = await mux.open({ data: connectFrame(1, target.port) });
    const a1 = await answerOn(whole);
    assertEquals([a1.msg?.type, a1.msg?.type === "tunnel" && a1.msg.id], ["tunnel", 1]);
    await echo(whole, a1.rest, "whole");

    // Split: 5 bytes in the SYN, the rest of the frame and the first payload bytes later.
    const frame = connectFrame(2, target.port);
    const split = await mux.open({ data: frame.subarray(0, 5) });
    await writeAll(split, frame.subarray(5));
    const a2 = await answerOn(split);
    assertEquals([a2.msg?.type, a2.msg?.type === "tunnel" && a2.msg.id], ["tunnel", 2]);
    await echo(split, a2.rest, "split");

    // A first frame that does not decode: the stream ends unanswered.
    const broken = await mux.open({ data: rawFrame("{not json") });
    const answered = await within(readAll(broken).catch(() => null), "the broken stream's end");
    assertEquals(answered?.length ?? 0, 0, "no answer on a stream whose request did not decode");

    // The session serves on.
    const after = await mux.open({ data: connectFrame(3, target.port) });
    const a3 = await answerOn(after);
    assert(a3.msg?.type === "tunnel" && a3.msg.id === 3, "answered after the broken one");
    await echo(after, a3.rest, "after");
  } finally {
    await local.stop();
    await running;
    await server.close();
    await target.close();
  }
});
