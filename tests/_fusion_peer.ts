/**
 * A traffic endpoint run inside a network namespace by the fusion netns tests and bench:
 *
 *   serve <host:port> <sendBytes>    per connection: hash what arrives, send sendBytes back
 *   connect <host:port> <sendBytes> [pauseAt]
 *                                    send sendBytes, half-close, hash what comes back; with
 *                                    pauseAt, print `paused sent=N` after N bytes and send
 *                                    the rest only on SIGUSR1 (a test holds a transfer open)
 *   source <host:port>               per connection: read a u64 count, send that many bytes
 *                                    (count 2^64-1: echo everything back instead)
 *   fetch <host:port> <bytes>        ask a source for bytes, drain them, report the time
 *   pingpong <host:port> <n>         n one-byte round trips through a source's echo
 *
 * Prints `msg="listening" name=peer addr=…` when listening and one `result bytes=N
 * sha256=H ms=T sent=S` line per finished transfer (bytes received, their hash, elapsed
 * time, hash of what it sent: the payload is random per process, so peers compare hashes).
 */
import { closeQuietly, formatAddr, parseHostPort, writeAll } from "../lib/net/mod.ts";
import { blockStream, blockStreamSha256, drainHash, sendBlocks } from "./_util.ts";

const [mode, addr, sendArg, pauseArg] = Deno.args;
const { host, port } = parseHostPort(addr);
const sendBytes = Number(sendArg ?? 0);
/** `connect`: hold the upload after this many bytes until SIGUSR1. */
const pauseAt = pauseArg === undefined ? undefined : Number(pauseArg);
/** The count a `source` reads as "echo instead of sending". */
const echoRequest = 0xffff_ffff_ffff_ffffn;

/** Send the block stream, holding after `pauseAt` bytes until SIGUSR1 arrives. */
async function sendPausing(c: Deno.Conn, seed: number, pauseAt: number): Promise<void> {
  const resume = Promise.withResolvers<void>();
  const onSignal = () => resume.resolve();
  Deno.addSignalListener("SIGUSR1", onSignal);
  try {
    let sent = 0;
    for (const chunk of blockStream(sendBytes, seed)) {
      const before = Math.max(0, Math.min(chunk.length, pauseAt - sent));
      if (before < chunk.length && sent <= pauseAt) {
        await writeAll(c, chunk.subarray(0, before));
        console.log(`paused sent=${sent + before}`);
        await resume.promise;
        await writeAll(c, chunk.subarray(before));
      } else {
        await writeAll(c, chunk);
      }
      sent += chunk.length;
    }
  } finally {
    Deno.removeSignalListener("SIGUSR1", onSignal);
  }
}

async function exchange(c: Deno.Conn, seed: number): Promise<void> {
  const t0 = performance.now();
  const send = pauseAt === undefined
    ? sendBlocks(c, sendBytes, seed)
    : sendPausing(c, seed, pauseAt);
  const [got] = await Promise.all([drainHash(c), send.then(() => c.closeWrite())]);
  const ms = Math.round(performance.now() - t0);
  const sent = blockStreamSha256(sendBytes, seed);
  console.log(`result bytes=${got.bytes} sha256=${got.sha256} ms=${ms} sent=${sent}`);
}

if (mode === "serve") {
  const l = Deno.listen({ hostname: host, port });
  console.log(`msg="listening" name=peer addr=${formatAddr(l.addr)}`);
  for await (const c of l) {
    exchange(c, 2).catch((e) => console.log(`error ${e}`)).finally(() => closeQuietly(c));
  }
} else if (mode === "connect") {
  const c = await Deno.connect({ hostname: host, port });
  try {
    await exchange(c, 1);
  } finally {
    closeQuietly(c);
  }
} else if (mode === "source") {
  const l = Deno.listen({ hostname: host, port });
  console.log(`msg="listening" name=peer addr=${formatAddr(l.addr)}`);
  for await (const c of l) {
    (async () => {
      const head = new Uint8Array(8);
      let got = 0;
      while (got < 8) {
        const n = await c.read(head.subarray(got));
        if (n === null) return;
        got += n;
      }
      const want = new DataView(head.buffer).getBigUint64(0);
      if (want === echoRequest) {
        const buf = new Uint8Array(16 * 1024);
        for (let n = await c.read(buf); n !== null; n = await c.read(buf)) {
          await writeAll(c, buf.subarray(0, n));
        }
        return;
      }
      await sendBlocks(c, Number(want), 3);
      await c.closeWrite();
      await drainHash(c);
    })().catch((e) => console.log(`error ${e}`)).finally(() => closeQuietly(c));
  }
} else if (mode === "fetch") {
  const c = await Deno.connect({ hostname: host, port });
  try {
    const head = new Uint8Array(8);
    new DataView(head.buffer).setBigUint64(0, BigInt(sendBytes));
    const t0 = performance.now();
    await writeAll(c, head);
    const got = await drainHash(c);
    const ms = performance.now() - t0;
    await c.closeWrite();
    console.log(`result bytes=${got.bytes} sha256=${got.sha256} ms=${ms.toFixed(1)}`);
  } finally {
    closeQuietly(c);
  }
} else if (mode === "pingpong") {
  const c = await Deno.connect({ hostname: host, port });
  try {
    const head = new Uint8Array(8);
    new DataView(head.buffer).setBigUint64(0, echoRequest);
    await writeAll(c, head);
    const one = new Uint8Array(1);
    const times: number[] = [];
    for (let i = 0; i < sendBytes; i++) {
      const t0 = performance.now();
      await writeAll(c, one);
      if ((await c.read(one)) === null) throw new Error("echo closed");
      times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    const q = (f: number) => times[Math.min(times.length - 1, Math.floor(times.length * f))];
    console.log(`result p50=${q(0.5).toFixed(3)} p99=${q(0.99).toFixed(3)} n=${times.length}`);
  } finally {
    closeQuietly(c);
  }
} else {
  console.error("usage: _fusion_peer.ts serve|connect|source|fetch|pingpong host:port [bytes|n]");
  Deno.exit(2);
}
