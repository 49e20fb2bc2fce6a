/**
 * lib/udp `UdpDrops.guard`: Deno 2.9.6's node:dgram swallows what a socket's "message" listener
 * throws, so a throw while handling one datagram lost it uncounted and unlogged (cf08e35). A
 * relay's handler is guarded: the datagram is dropped ("internal"), counted, logged by the
 * error (never the bytes), and the socket serves the next datagram. The link carriers' answers
 * (QUIC datagrams, link stream frames) are delivered the same way, and a scan of lib/ keeps every
 * datagram handler behind the guard.
 */

import { assert, assertEquals } from "./_assert.ts";
import { ChunkedSource } from "./_chunked.ts";
import { until } from "./_util.ts";
import { Logger } from "../lib/log.ts";
import type { HostPort } from "../lib/net/addr.ts";
import { concatBytes } from "../lib/net/bytes.ts";
import { serveExitAssociation } from "../lib/depot/udp.ts";
import {
  type QuicDatagramConn,
  QuicDatagrams,
  QuicUdpChannel,
  StreamUdpChannel,
} from "../lib/proxy/mod.ts";
import { encodeSocks5Udp } from "../lib/socks5/mod.ts";
import {
  encodeDatagramFrame,
  type Flow,
  FlowTable,
  startUdpForward,
  UdpAssociation,
  type UdpChannel,
  UdpDrops,
  UdpSocket,
  UdpTally,
} from "../lib/udp/mod.ts";

Deno.test("udp association: its exit hook throwing for one datagram drops it counted and logged; the next is served", async () => {
  const lines: string[] = [];
  const log = new Logger("debug", {}, (l) => void lines.push(l));
  const table = new FlowTable({ idleTimeoutMs: 0 }, new UdpDrops(log));
  const client = await UdpSocket.bind("127.0.0.1", 0);
  const local = { host: "127.0.0.1", port: 0 };
  const assoc = await UdpAssociation.bind(
    { local, remote: client.addr },
    { host: "0.0.0.0", port: 0 },
    table,
    new UdpTally("socks5-udp"),
    log,
  );
  try {
    const got: string[] = [];
    assoc.onDatagram = (dest: HostPort, payload: Uint8Array) => {
      // The hook stands for a bug on the exit's side (cf08e35's re-wrapping threw so).
      if (dest.port === 1) throw new RangeError("exit hook failed");
      got.push(new TextDecoder().decode(payload));
    };
    const send = (port: number, text: string) =>
      client.send(
        encodeSocks5Udp({ host: "127.0.0.1", port }, new TextEncoder().encode(text)),
        assoc.addr,
      );
    await send(1, "secret-payload-1");
    await until(
      "the throwing datagram counted as an internal drop",
      () => table.drops.count("internal") === 1,
    );
    await send(2, "payload-2");
    await until("the datagram after the throw served", () => got.length === 1);
    assertEquals(got, ["payload-2"]);
    assertEquals(table.drops.snapshot(), { internal: 1 });
    const warned = lines.filter((l) => /level=warn .*failure=internal/.test(l));
    assertEquals(warned.length, 1, lines.join("\n"));
    assert(warned[0].includes("RangeError: exit hook failed"), warned[0]);
    assert(warned[0].includes(`127.0.0.1:${client.addr.port}`), warned[0]);
    assert(!warned[0].includes("secret-payload"), warned[0]);
  } finally {
    assoc.close();
    await client.close();
    table.close();
  }
});

Deno.test("udp forward: a flow whose opening throws unexpectedly drops its datagrams as internal; the process goes on", async () => {
  // The opening's own failures are caught where they happen (a channel that cannot open is a
  // "send-failed" drop); this stands for a bug after that. Before, it rejected a promise
  // nothing handled, and an unhandled rejection ends a Deno process.
  const lines: string[] = [];
  const log = new Logger("debug", {}, (l) => void lines.push(l));
  const broken: UdpChannel = {
    get onDatagram(): (from: HostPort, data: Uint8Array) => void {
      return () => {};
    },
    set onDatagram(_: (from: HostPort, data: Uint8Array) => void) {
      throw new RangeError("channel set-up failed");
    },
    ended: new Promise<string>(() => {}),
    send: () => true,
    close: () => {},
  };
  const fwd = await startUdpForward({
    listen: { host: "127.0.0.1", port: 0 },
    to: { host: "127.0.0.1", port: 9 },
    open: () => Promise.resolve(broken),
    log,
  });
  const client = await UdpSocket.bind("127.0.0.1", 0);
  try {
    // Two datagrams: the first opens the flow, the second waits on that opening.
    await client.send(new TextEncoder().encode("secret-payload-1"), fwd.addr);
    await client.send(new TextEncoder().encode("secret-payload-2"), fwd.addr);
    await until(
      "the failed opening counted as an internal drop",
      () => fwd.drops.count("internal") >= 1,
    );
    const warned = lines.filter((l) => /level=warn .*failure=internal/.test(l));
    assert(warned.length >= 1, lines.join("\n"));
    assert(warned[0].includes("RangeError: channel set-up failed"), warned[0]);
    assert(!lines.some((l) => l.includes("secret-payload")), lines.join("\n"));
  } finally {
    await client.close();
    fwd.stop();
  }
});

/** The SOCKS5 UDP body of an answer from 127.0.0.1:`port` carrying `text`. */
function answer(port: number, text: string): Uint8Array {
  return encodeSocks5Udp({ host: "127.0.0.1", port }, new TextEncoder().encode(text));
}

/**
 * A QUIC connection's datagram side in memory: `deliver` queues one for `readDatagram`,
 * `end` makes the next read fail as a closed connection's does.
 */
class DatagramQueue implements QuicDatagramConn {
  readonly maxDatagramSize = 1200;
  readonly remoteAddr: Deno.NetAddr = { transport: "udp", hostname: "127.0.0.2", port: 4433 };
  readonly #queued: Uint8Array<ArrayBuffer>[] = [];
  #wake: (() => void) | undefined;
  #ended = false;
  /** Reads taken so far (one per datagram, plus the pending one). */
  reads = 0;

  deliver(id: number, body: Uint8Array): void {
    const d = new Uint8Array(4 + body.length);
    new DataView(d.buffer).setUint32(0, id);
    d.set(body, 4);
    this.#queued.push(d);
    this.#wake?.();
  }

  end(): void {
    this.#ended = true;
    this.#wake?.();
  }

  async readDatagram(): Promise<Uint8Array<ArrayBuffer>> {
    this.reads++;
    while (this.#queued.length === 0) {
      if (this.#ended) throw new Error("connection closed");
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
    return this.#queued.shift()!;
  }

  sendDatagram(_data: Uint8Array): Promise<void> {
    return Promise.resolve();
  }
}

Deno.test("quic link datagrams: an association's handler throwing for one datagram drops it as internal; the connection goes on", async () => {
  // Before, the throw left the connection's read loop as an unhandled rejection: the
  // process (a seaprox node) ended.
  const lines: string[] = [];
  const log = new Logger("debug", {}, (l) => void lines.push(l));
  const conn = new DatagramQueue();
  const dgrams = new QuicDatagrams(conn, log);
  const table = new FlowTable({ idleTimeoutMs: 0 }, new UdpDrops(log));
  const stream = new ChunkedSource(new Uint8Array(0), 1);
  const id = dgrams.nextId();
  const ch = new QuicUdpChannel(id, stream, dgrams, table, () => {});
  try {
    const got: string[] = [];
    ch.onDatagram = (from, data) => {
      if (from.port === 1) throw new RangeError("answer hook failed");
      got.push(new TextDecoder().decode(data));
    };
    conn.deliver(id, answer(1, "secret-payload-1"));
    conn.deliver(id, answer(2, "answer-2"));
    await until("the answer after the throw delivered", () => got.length === 1);
    assertEquals(got, ["answer-2"]);
    assertEquals(table.drops.snapshot(), { internal: 1 });
    const warned = lines.filter((l) => /level=warn .*failure=internal/.test(l));
    assertEquals(warned.length, 1, lines.join("\n"));
    assert(warned[0].includes("RangeError: answer hook failed"), warned[0]);
    assert(warned[0].includes("127.0.0.2:4433"), warned[0]);
    assert(!warned[0].includes("secret-payload"), warned[0]);
  } finally {
    ch.close();
    conn.end();
    table.close();
  }
  await until("the read loop ended with the connection", () => conn.reads === 3);
});

Deno.test("link stream udp channel: onDatagram throwing for one frame drops it as internal; the association goes on", async () => {
  // Before, the throw ended the whole association ("stream failed") at the first bad answer.
  const lines: string[] = [];
  const log = new Logger("debug", {}, (l) => void lines.push(l));
  const table = new FlowTable<Flow>({ idleTimeoutMs: 0 }, new UdpDrops(log));
  const wire = concatBytes(
    encodeDatagramFrame(answer(1, "secret-payload-1")),
    encodeDatagramFrame(answer(2, "answer-2")),
  );
  const ch = new StreamUdpChannel(new ChunkedSource(wire, 7), table, () => {});
  const got: string[] = [];
  ch.onDatagram = (from, data) => {
    if (from.port === 1) throw new RangeError("answer hook failed");
    got.push(new TextDecoder().decode(data));
  };
  try {
    assertEquals(await ch.ended, "far end closed the stream");
    assertEquals(got, ["answer-2"]);
    assertEquals(table.drops.snapshot(), { internal: 1 });
    const warned = lines.filter((l) => /level=warn .*failure=internal/.test(l));
    assert(warned[0].includes("RangeError: answer hook failed"), warned[0]);
    assert(!warned[0].includes("secret-payload"), warned[0]);
  } finally {
    ch.close();
    table.close();
  }
});

/** Every .ts file under `dir`, as [path, text]. */
function* sources(dir: string): Generator<[string, string]> {
  for (const e of Deno.readDirSync(dir)) {
    const path = `${dir}/${e.name}`;
    if (e.isDirectory) yield* sources(path);
    else if (e.name.endsWith(".ts")) yield [path, Deno.readTextFileSync(path)];
  }
}

Deno.test("lib/: every datagram handler is set through UdpDrops.guard; datagrams are read only where a throw is caught", () => {
  // Deno 2.9.6's node:dgram swallows a "message" listener's throw, and a read loop's escapes as
  // an unhandled rejection: a new socket handler or datagram source must go the guarded way.
  const lib = new URL("../lib", import.meta.url).pathname;
  const unguarded: string[] = [];
  const sourcesOutside: string[] = [];
  /** Where datagrams enter: the one node:dgram listener, and the QUIC link's read loop. */
  const entries: Record<string, RegExp> = {
    "udp/socket.ts": /\.on\(\s*["']message["']/g,
    "proxy/udp_quic.ts": /\.readDatagram\(/g,
  };
  for (const [path, text] of sources(lib)) {
    const rel = path.slice(lib.length + 1);
    // Code only: a doc comment's example (a test's echo socket) handles its own datagrams.
    const code = text.split("\n").filter((l) => !/^\s*(\*|\/\/)/.test(l)).join("\n");
    for (const m of code.matchAll(/\.onMessage\s*=(?!=)([^;]*)/g)) {
      if (!/\bdrops\.guard\(/.test(m[1])) unguarded.push(`${rel}: ${m[0].slice(0, 80)}`);
    }
    for (const [file, re] of Object.entries(entries)) {
      const n = [...code.matchAll(re)].length;
      if (rel === file ? n !== 1 : n > 0) sourcesOutside.push(`${rel}: ${re} ${n}x`);
    }
    for (const m of code.matchAll(/\b(?:listenDatagram|createSocket)\(/g)) {
      if (rel !== "udp/socket.ts") sourcesOutside.push(`${rel}: ${m[0]}`);
    }
  }
  assertEquals(unguarded, [], "onMessage set without UdpDrops.guard");
  assertEquals(sourcesOutside, [], "datagrams read outside lib/udp/socket.ts and QuicDatagrams");
});

Deno.test("depot-local udp exit: a policy hook throwing for one datagram drops it as internal; the association goes on", async () => {
  // Before, the throw ended the whole association ("error", the hook's message).
  const lines: string[] = [];
  const log = new Logger("debug", {}, (l) => void lines.push(l));
  const frames = [1, 2].map((port) => encodeDatagramFrame(answer(port, `secret-payload-${port}`)));
  const asked: number[] = [];
  const r = await serveExitAssociation(
    new ChunkedSource(concatBytes(...frames), 5),
    {
      allow: (dest) => {
        asked.push(dest.port);
        if (dest.port === 1) throw new RangeError("policy hook failed");
        return false; // refused: nothing leaves this test
      },
    },
    { aToB: 0, bToA: 0 },
    new AbortController().signal,
    log,
  );
  assertEquals([r.end, asked, r.drops], ["done", [1, 2], 2]);
  const warned = lines.filter((l) => /level=warn .*failure=internal/.test(l));
  assertEquals(warned.length, 1, lines.join("\n"));
  assert(warned[0].includes("RangeError: policy hook failed"), warned[0]);
  assert(!lines.some((l) => l.includes("secret-payload")), lines.join("\n"));
});
