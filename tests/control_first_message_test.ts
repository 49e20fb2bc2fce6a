// readFirstMessage (lib/control): the first message of a fresh stream and the bytes after it,
// decoded from what a lib/mux stream lends when the whole frame came with its SYN (depot
// --mux's requests and answers), else through a reader. Checked against ControlReader on
// every split, every cut and random input, on a stand-in that lends its chunks and on real
// lib/mux streams.

import {
  BufferedReader,
  ControlError,
  ControlReader,
  encodeFrame,
  readFirstMessage,
} from "../lib/control/mod.ts";
import type { Duplex, ViewReader } from "../lib/net/mod.ts";
import { depotCompact } from "../lib/depot/compact.ts";
import { depotProtocol } from "../lib/depot/protocol.ts";
import { assertEquals } from "./_assert.ts";
import { ChunkedSource, splits } from "./_chunked.ts";
import { concat } from "./_depot.ts";
import { eachSynSplit, muxPair, type SynSplit } from "./_mux.ts";

/** A source that lends its chunks (`ViewReader`), as a lib/mux stream does. */
class LendingSource extends ChunkedSource implements ViewReader {
  lent = 0;
  released = 0;
  #buf = new Uint8Array(1 << 16);
  async readView(): Promise<Uint8Array | null> {
    assertEquals(this.lent, this.released, "a view is lent while the last one is out");
    const n = await this.read(this.#buf);
    if (n === null) return null;
    this.lent++;
    return this.#buf.subarray(0, n);
  }
  releaseView(): void {
    this.released++;
    this.#buf.fill(0xee); // what a stream does with lent bytes after: they are gone
  }
}

const connect = {
  v: 1,
  type: "connect" as const,
  id: 7,
  key: "0123456789abcdef0123456789abcdef",
  host: "example.org",
  port: 443,
};
const tail = new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n");

/** Every byte `src` has left after the first message, leftover first. */
async function rest(src: Duplex, leftover: Uint8Array): Promise<Uint8Array> {
  const parts = [leftover.slice()];
  const buf = new Uint8Array(64);
  for (let n = await src.read(buf); n !== null; n = await src.read(buf)) {
    parts.push(buf.slice(0, n));
  }
  return concat(...parts);
}

/** What ControlReader makes of the same bytes: the message or the error's reason. */
async function reference(bytes: Uint8Array, compact: boolean): Promise<unknown> {
  const r = new ControlReader(
    new BufferedReader(new ChunkedSource(bytes, 1 << 20)),
    depotProtocol,
    {
      maxMessageBytes: 1024,
      compact: compact ? depotCompact : undefined,
    },
  );
  return await r.read().catch((e) => e instanceof ControlError ? e.reason : String(e));
}

/** readFirstMessage's message (or error reason) and every byte after it. */
async function first(src: LendingSource | ChunkedSource, compact: boolean) {
  try {
    const f = await readFirstMessage(src, depotProtocol, {
      maxMessageBytes: 1024,
      compact: compact ? depotCompact : undefined,
    });
    return { msg: f.msg as unknown, after: await rest(src, f.leftover) };
  } catch (e) {
    return { msg: e instanceof ControlError ? e.reason : String(e), after: undefined };
  } finally {
    if (src instanceof LendingSource) assertEquals(src.lent, src.released, "a lent view was kept");
  }
}

for (const compact of [false, true]) {
  const frame = compact ? depotCompact.encode(connect)! : encodeFrame(connect);
  const input = concat(frame, tail);
  for (const [name, split] of splits) {
    for (const Source of [LendingSource, ChunkedSource]) {
      Deno.test(`readFirstMessage (${compact ? "compact" : "JSON"}, ${Source.name}) on ${name}: the message, then every byte after it`, async () => {
        const got = await first(new Source(input, split), compact);
        assertEquals(got.msg, connect);
        assertEquals(got.after, tail);
      });
    }
  }

  Deno.test(`readFirstMessage (${compact ? "compact" : "JSON"}): a frame cut anywhere is what ControlReader makes of it`, async () => {
    for (let cut = 0; cut <= frame.length; cut++) {
      for (const split of [1, 5, 1 << 20]) {
        const got = await first(new LendingSource(frame.subarray(0, cut), split), compact);
        assertEquals(got.msg, await reference(frame.subarray(0, cut), compact), `cut ${cut}`);
        if (cut === 0) assertEquals(got.msg, null);
        else if (cut < frame.length) assertEquals(got.msg, "truncated", `cut ${cut}`);
      }
    }
  });

  Deno.test(`readFirstMessage (${compact ? "compact" : "JSON"}): mutated frames end as in ControlReader`, async () => {
    for (let i = 0; i < 500; i++) {
      const bytes = concat(frame, tail);
      for (let k = 0; k < 1 + (i % 4); k++) {
        bytes[Math.floor(Math.random() * bytes.length)] = Math.floor(Math.random() * 256);
      }
      const split = 1 + Math.floor(Math.random() * bytes.length);
      const got = await first(new LendingSource(bytes, split), compact);
      assertEquals(got.msg, await reference(bytes, compact), `bytes ${bytes}, split ${split}`);
    }
  });
}

Deno.test("readFirstMessage: an over-long length is refused before any body byte", async () => {
  const prefix = Uint8Array.of(0, 0, 0x10, 0); // 4 KiB declared, max 1 KiB
  const got = await first(new LendingSource(prefix, 1 << 20), false);
  assertEquals(got.msg, "too-large");
});

Deno.test("readFirstMessage on lib/mux streams: the frame in the SYN, split from it, or with bytes behind", async () => {
  const frame = depotCompact.encode(connect)!;
  const { client, server } = await muxPair();
  try {
    const cases: SynSplit[] = [
      ["whole in the SYN", frame, []],
      ["with bytes behind it in the SYN", concat(frame, tail), []],
      ["split: part in the SYN, the rest later", frame.subarray(0, 9), [frame.subarray(9), tail]],
      ["nothing in the SYN", new Uint8Array(0), [frame, tail]],
    ];
    await eachSynSplit(client, server, cases, async (stream, name, sent) => {
      const f = await readFirstMessage(stream, depotProtocol, {
        maxMessageBytes: 1024,
        compact: depotCompact,
      });
      assertEquals(f.msg, connect, name);
      assertEquals(await rest(stream, f.leftover), sent.subarray(frame.length), name);
    });
  } finally {
    await Promise.all([client.close(), server.close()]);
  }
});
