/**
 * Hostile yamux peers against a warren Session over loopback TCP: a peer that floods SYNs
 * past maxStreams or pings while never reading our answers, and a peer that floods window
 * updates (granting gigabytes of credit) and never reads the data it asked for. In every
 * case our memory stays bounded (the session stops reading / the writer blocks: TCP
 * backpressure reaches the peer) and the session is still healthy once the peer reads again.
 */

import { assert, assertEquals } from "./_assert.ts";
import { encodeHeader, Flag, FrameType, headerBytes, MuxError } from "../lib/mux/frame.ts";
import { muxPair, rawPair } from "./_mux.ts";
import type { RawPeer } from "./_mux.ts";
import { collectGarbage, readWithin, within } from "./_util.ts";

const MiB = 1024 * 1024;
/** Frames the flooding peer tries to push (12 bytes each: 24 MiB of headers). */
const floodFrames = 2_000_000;
/** A write the peer makes that has not completed after this long is "blocked". */
const blockedAfterMs = 1_000;

function floodBuffer(frames: number, make: (i: number, out: Uint8Array, off: number) => void) {
  const out = new Uint8Array(frames * headerBytes);
  for (let i = 0; i < frames; i++) make(i, out, i * headerBytes);
  return out;
}

/**
 * Write `data` from the peer in 256 KiB pieces until done or blocked. Returns the bytes
 * written and the promise of the write still pending (if blocked).
 */
async function pushUntilBlocked(
  peer: RawPeer,
  data: Uint8Array,
): Promise<{ written: number; pending: Promise<void> | null }> {
  let written = 0;
  while (written < data.length) {
    const piece = data.subarray(written, Math.min(data.length, written + 256 * 1024));
    const w = (async () => {
      let o = 0;
      while (o < piece.length) o += await peer.conn.write(piece.subarray(o));
    })();
    let t: ReturnType<typeof setTimeout> | undefined;
    const blocked = await Promise.race([
      w.then(() => false),
      new Promise<boolean>((r) => t = setTimeout(() => r(true), blockedAfterMs)),
    ]);
    clearTimeout(t);
    if (blocked) return { written, pending: w };
    written += piece.length;
  }
  return { written, pending: null };
}

/** Heap retained after a full GC (garbage from decoding the flood is not growth). */
function heapMiB(): number {
  collectGarbage();
  const m = Deno.memoryUsage();
  return (m.heapUsed + m.external) / MiB;
}

/** Flood, then read everything back and prove the session still answers a ping. */
async function floodThenRecover(
  label: string,
  make: (i: number, out: Uint8Array, off: number) => void,
  countAnswer: (f: { type: number; flags: number }) => boolean,
) {
  const { session, peer } = await rawPair("server", { maxStreams: 16, acceptBacklog: 16 });
  try {
    const flood = floodBuffer(floodFrames, make);
    const before = heapMiB();
    const { written, pending } = await pushUntilBlocked(peer, flood);
    const grew = heapMiB() - before;
    console.log(
      `${label}: peer pushed ${(written / MiB).toFixed(1)} of ${flood.length / MiB} MiB ` +
        `before blocking=${pending !== null}; heap +${grew.toFixed(1)} MiB`,
    );
    // Bounded: our queue of answers may not grow with the flood (1 M answers ≈ 100 MiB).
    assert(grew < 40, `${label}: heap grew ${grew.toFixed(1)} MiB while the peer did not read`);
    // Now the peer reads: every answer arrives, then a ping round trip shows the session lives.
    const reading = (async () => {
      let answers = 0;
      while (true) {
        const f = await peer.next();
        if (f === null) return { answers, pong: false };
        if (f.type === FrameType.ping && (f.flags & Flag.ack) && f.length === 0xabcdef) {
          return { answers, pong: true };
        }
        if (countAnswer(f)) answers++;
      }
    })();
    if (pending) await pending;
    const rest = flood.subarray(
      written + (pending ? Math.min(256 * 1024, flood.length - written) : 0),
    );
    if (rest.length > 0) await peer.send(rest);
    await peer.frame(FrameType.ping, Flag.syn, 0, 0xabcdef);
    const got = await reading;
    assert(got.pong, `${label}: no ping answer after the flood`);
    assert(got.answers >= floodFrames - 16, `${label}: ${got.answers} answers`);
    assertEquals(session.stats.streamsOpen <= 16, true);
  } finally {
    peer.close();
    await session.close();
  }
}

Deno.test("hostile mux: SYN flood past maxStreams from a peer that never reads stays bounded", async () => {
  await floodThenRecover(
    "syn flood",
    (i, out, off) => encodeHeader(out, off, FrameType.windowUpdate, Flag.syn, 2 * i + 1, 0),
    (f) => f.type === FrameType.windowUpdate && (f.flags & Flag.rst) !== 0,
  );
});

Deno.test("hostile mux: ping flood from a peer that never reads stays bounded", async () => {
  await floodThenRecover(
    "ping flood",
    (i, out, off) => encodeHeader(out, off, FrameType.ping, Flag.syn, 0, i),
    (f) => f.type === FrameType.ping,
  );
});

Deno.test("hostile mux: window-update flood and no reads: the writer blocks, memory bounded", async () => {
  const { session, peer } = await rawPair("server");
  try {
    // Open a stream and grant it 16 × 4 GiB of credit, then never read.
    await peer.frame(FrameType.windowUpdate, Flag.syn, 1, 0xffff_ffff);
    for (let i = 0; i < 16; i++) await peer.frame(FrameType.windowUpdate, 0, 1, 0xffff_ffff);
    const s = await session.accept();
    assert(s !== null);
    const chunk = new Uint8Array(16 * 1024); // small writes: copied, not awaited per frame
    const totalBytes = 256 * MiB;
    const before = heapMiB();
    let accepted = 0;
    const writer = (async () => {
      while (accepted < totalBytes) {
        await s.write(chunk);
        accepted += chunk.length;
      }
    })().catch(() => {
      // The stream fails when we close the session at the end.
    });
    // Let the writer run until it is blocked (or done).
    let last = -1;
    for (let i = 0; i < 100 && accepted !== last; i++) {
      last = accepted;
      await new Promise((r) => setTimeout(r, 200));
    }
    const grew = heapMiB() - before;
    console.log(
      `window flood: writes accepted ${(accepted / MiB).toFixed(1)} MiB of ${totalBytes / MiB}` +
        ` with the peer not reading; heap +${grew.toFixed(1)} MiB`,
    );
    assert(accepted < 64 * MiB, `writes of ${accepted / MiB} MiB accepted with nobody reading`);
    assert(grew < 64, `heap grew ${grew.toFixed(1)} MiB`);
    peer.close();
    await session.close();
    await writer;
  } finally {
    peer.close();
    await session.close();
  }
});

Deno.test("hostile mux: closing a stream with unread data resets it, freeing a blocked sender", async () => {
  const { client, server, close } = await muxPair({ closeLingerMs: 60_000 });
  try {
    const s = await client.open();
    // More than a window: the sender blocks once the receiver stops reading.
    const writing = s.write(new Uint8Array(4 * MiB)).then(
      () => "written",
      (err) => err instanceof MuxError ? err.reason : String(err),
    );
    const r = await server.accept();
    assert(r !== null);
    await readWithin(r, new Uint8Array(1024), "the first bytes of the stream");
    r.close(); // unread data and the peer still sending: RST, not FIN + a 60 s linger
    // Freed by the reset, not by the end of the 60 s linger (bounded well below it).
    const outcome = await within(writing, "the blocked sender to be freed by the reset", 30_000);
    assertEquals(outcome, "reset");
    assertEquals(client.stats.streamsOpen, 0);
  } finally {
    await close();
  }
});
