/** Test helpers for lib/mux: session pairs over loopback TCP, a raw frame peer, the Go peer. */

import { Session, type SessionOptions, type Stream } from "../lib/mux/mod.ts";
import { decodeHeader, encodeFrame, type FrameHeader, headerBytes } from "../lib/mux/frame.ts";
import { BufferedReader, type Duplex } from "../lib/net/mod.ts";
import { concatBytes } from "../lib/net/bytes.ts";
import { assert } from "./_assert.ts";
import { drainHash, listenLocal } from "./_util.ts";

/** A connected TCP pair on loopback. */
export async function tcpPair(): Promise<[Deno.TcpConn, Deno.TcpConn]> {
  const l = listenLocal();
  try {
    const [a, b] = await Promise.all([
      Deno.connect({ hostname: "127.0.0.1", port: l.addr.port }),
      l.accept(),
    ]);
    return [a, b];
  } finally {
    l.close();
  }
}

/** A client and a server session over loopback TCP; `close()` ends both. */
export async function muxPair(
  clientOpts: SessionOptions = {},
  serverOpts: SessionOptions = clientOpts,
): Promise<{ client: Session; server: Session; close(): Promise<void> }> {
  const [a, b] = await tcpPair();
  const base = { keepaliveIntervalMs: 0, drainTimeoutMs: 3000 };
  const client = Session.client(a, { ...base, ...clientOpts });
  const server = Session.server(b, { ...base, ...serverOpts });
  return {
    client,
    server,
    async close() {
      await Promise.all([client.close(), server.close()]);
    },
  };
}

/**
 * A transport that takes at most `maxBytes` per write, each a macrotask later: a session's
 * writer then has frames queued, being written and arriving all at once.
 */
export class TrickleConn implements Duplex {
  constructor(readonly inner: Deno.TcpConn, readonly maxBytes: number) {}
  read(p: Uint8Array): Promise<number | null> {
    return this.inner.read(p);
  }
  async write(p: Uint8Array): Promise<number> {
    await new Promise((r) => setTimeout(r, 0));
    return this.inner.write(p.subarray(0, Math.min(p.length, this.maxBytes)));
  }
  closeWrite(): Promise<void> {
    return this.inner.closeWrite();
  }
  close(): void {
    this.inner.close();
  }
}

/**
 * The next `streams` streams `session` accepts, each read to its FIN: stream id → SHA-256 (hex)
 * of its bytes, to compare with what the writers hashed.
 */
export async function acceptedHashes(
  session: Session,
  streams: number,
): Promise<Map<number, string>> {
  const got: Promise<[number, string]>[] = [];
  for (let i = 0; i < streams; i++) {
    const s = await session.accept();
    assert(s, "a stream per writer");
    got.push(drainHash(s, `stream ${s.id}'s bytes`).then((h) => [s.id, h.sha256]));
  }
  return new Map(await Promise.all(got));
}

/** A way to send a stream's first bytes: a name, the bytes in its SYN, the writes after it. */
export type SynSplit = [name: string, syn: Uint8Array, later: Uint8Array[]];

/**
 * For each case, `client` opens a stream with the case's SYN bytes, then writes the later pieces
 * and its FIN; `check` gets the stream `server` accepted, the case's name and every byte sent on
 * it. Both streams are closed after the check.
 */
export async function eachSynSplit(
  client: Session,
  server: Session,
  cases: readonly SynSplit[],
  check: (stream: Stream, name: string, sent: Uint8Array) => Promise<void>,
): Promise<void> {
  for (const [name, syn, later] of cases) {
    const accepted = server.accept();
    const opened = await client.open({ data: syn });
    const stream = await accepted;
    assert(stream !== null, "an accepted stream");
    const writing = (async () => {
      for (const p of later) await opened.write(p);
      await opened.closeWrite();
    })();
    await check(stream, name, concatBytes(syn, ...later));
    await writing;
    opened.close();
    stream.close();
  }
}

/** A raw peer speaking frames by hand against a warren session on the other end. */
export class RawPeer {
  #r: BufferedReader;
  constructor(readonly conn: Deno.TcpConn) {
    this.#r = new BufferedReader(conn);
  }
  /** Write raw bytes (frames made with `encodeFrame`). */
  async send(...frames: Uint8Array[]): Promise<void> {
    for (const f of frames) {
      let o = 0;
      while (o < f.length) o += await this.conn.write(f.subarray(o));
    }
  }
  /** Send one frame. */
  frame(type: number, flags: number, id: number, lenOrPayload: number | Uint8Array): Promise<void> {
    return this.send(encodeFrame(type, flags, id, lenOrPayload));
  }
  /** The next frame (header + payload), or null at EOF. */
  async next(): Promise<(FrameHeader & { payload: Uint8Array }) | null> {
    const h = await this.#r.readExactOrEof(headerBytes);
    if (!h) return null;
    const hdr = decodeHeader(h);
    const payload = hdr.type === 0 && hdr.length > 0
      ? await this.#r.readExact(hdr.length)
      : new Uint8Array(0);
    return { ...hdr, payload };
  }
  /** Frames until one matches `pred` (or EOF: null). */
  async until(
    pred: (f: FrameHeader) => boolean,
  ): Promise<(FrameHeader & { payload: Uint8Array }) | null> {
    while (true) {
      const f = await this.next();
      if (!f || pred(f)) return f;
    }
  }
  close(): void {
    try {
      this.conn.close();
    } catch {
      // already closed by the test
    }
  }
}

/** A warren session (client or server) facing a raw peer. */
export async function rawPair(
  side: "client" | "server",
  opts: SessionOptions = {},
): Promise<{ session: Session; peer: RawPeer }> {
  const [a, b] = await tcpPair();
  const o = { keepaliveIntervalMs: 0, drainTimeoutMs: 3000, ...opts };
  const session = side === "client" ? Session.client(a, o) : Session.server(a, o);
  return { session, peer: new RawPeer(b) };
}

const goSrc = new URL("./go/yamux_peer/main.go", import.meta.url).pathname;
const goBin = new URL("./go/bin/yamux_peer", import.meta.url).pathname;
const yamuxSrc = "/usr/share/gocode/src/github.com/hashicorp/yamux";

/** Whether the Go toolchain and Debian's yamux source are installed. */
export function goAvailable(): boolean {
  try {
    Deno.statSync(yamuxSrc);
    return new Deno.Command("go", { args: ["version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

let building: Promise<string> | undefined;

/** Path of the Go yamux peer, built (GOPATH mode, offline) if missing or older than its source. */
export function goPeer(): Promise<string> {
  building ??= (async () => {
    const src = Deno.statSync(goSrc).mtime?.getTime() ?? 0;
    let bin = -1;
    try {
      bin = Deno.statSync(goBin).mtime?.getTime() ?? -1;
    } catch {
      // not built yet
    }
    if (bin >= src) return goBin;
    const out = await new Deno.Command("go", {
      args: ["build", "-o", goBin, "./yamux_peer"],
      cwd: new URL("./go/", import.meta.url).pathname,
      env: {
        GOPATH: "/usr/share/gocode",
        GO111MODULE: "off",
        GOPROXY: "off",
        GOCACHE: Deno.env.get("GOCACHE") ?? "/tmp/warren-gocache",
        HOME: Deno.env.get("HOME") ?? "/tmp",
        PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
      },
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) {
      throw new Error(`go build failed:\n${new TextDecoder().decode(out.stderr)}`);
    }
    return goBin;
  })();
  return building;
}
