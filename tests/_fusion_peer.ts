/**
 * A traffic endpoint run inside a network namespace by the fusion netns tests and bench:
 *
 *   serve <host:port> <sendBytes>    per connection: hash what arrives, send sendBytes back
 *   connect <host:port> <sendBytes>  send sendBytes, half-close, hash what comes back
 *
 * Prints `msg="listening" name=peer addr=…` when listening and one `result bytes=N
 * sha256=H ms=T sent=S` line per finished transfer (bytes received, their hash, elapsed
 * time, hash of what it sent: the payload is random per process, so peers compare hashes).
 */
import { closeQuietly, formatAddr, parseHostPort } from "../lib/net/mod.ts";
import { blockStreamSha256, drainHash, sendBlocks } from "./_util.ts";

const [mode, addr, sendArg] = Deno.args;
const { host, port } = parseHostPort(addr);
const sendBytes = Number(sendArg ?? 0);

async function exchange(c: Deno.Conn, seed: number): Promise<void> {
  const t0 = performance.now();
  const [got] = await Promise.all([
    drainHash(c),
    sendBlocks(c, sendBytes, seed).then(() => c.closeWrite()),
  ]);
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
} else {
  console.error("usage: _fusion_peer.ts serve|connect host:port sendBytes");
  Deno.exit(2);
}
