/**
 * Interop with the real hashicorp/yamux (Debian's golang-github-hashicorp-yamux-dev, a 2019
 * revision without CloseWrite: its Close() sends FIN and then its own reads end). Streams are
 * opened both ways, carry MiBs, half-close, and are compared by SHA-256.
 */
import { Session, type SessionOptions, type Stream } from "../lib/mux/mod.ts";
import { writeAll } from "../lib/net/mod.ts";
import { assert, assertEquals } from "./_assert.ts";
import { goPeer } from "./_mux.ts";
import {
  blockStreamSha256,
  drainHash,
  listenLocal,
  readAll,
  sendBlocks,
  sha256,
  within,
} from "./_util.ts";

/** Bound of one exchange with the Go peer (MiBs each way): for a hang, never for speed. */
const exchangeMs = 120_000;

const enc = new TextEncoder();
const dec = new TextDecoder();
const MiB = 1 << 20;

/** Start the Go peer in server mode; returns its address and a stop function. */
async function goServer(): Promise<{ port: number; stop(): Promise<void> }> {
  const bin = await goPeer();
  const child = new Deno.Command(bin, {
    args: ["server", "127.0.0.1:0"],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  await within(
    (async () => {
      while (!/listening \S+\n/.test(text)) {
        const r = await reader.read();
        if (r.done) throw new Error(`go server exited: ${text}`);
        text += r.value;
      }
    })(),
    "the Go server's listening line",
  );
  const port = Number(/listening \S+:(\d+)/.exec(text)![1]);
  return {
    port,
    async stop() {
      child.kill("SIGKILL");
      await child.status;
      await reader.cancel().catch(() => {});
    },
  };
}

async function withGoServer(fn: (s: Session) => Promise<void>): Promise<void> {
  const srv = await goServer();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: srv.port });
  const session = Session.client(conn, { keepaliveIntervalMs: 1000 });
  try {
    await within(fn(session), "the exchange with the Go yamux server", exchangeMs);
  } finally {
    await session.close();
    await srv.stop();
  }
}

Deno.test({
  name: "interop go: warren client -> Go server, sink 16 MiB, half-close, reply after our FIN",
  async fn() {
    await withGoServer(async (session) => {
      const s = await session.open({ data: enc.encode("sink\n") });
      await sendBlocks(s, 16 * MiB, 1);
      await s.closeWrite();
      const reply = dec.decode(await readAll(s)).trim();
      assertEquals(reply, `${16 * MiB} ${blockStreamSha256(16 * MiB, 1)}`);
      assert(session.rttMs !== undefined, "ping to Go measured an RTT");
    });
  },
});

Deno.test({
  name: "interop go: warren client -> Go server, 16 concurrent echo streams of 4 MiB",
  async fn() {
    await withGoServer(async (session) => {
      await Promise.all(Array.from({ length: 16 }, async (_, i) => {
        const s = await session.open({ data: enc.encode("echo\n") });
        const [got] = await Promise.all([
          drainHash(s),
          sendBlocks(s, 4 * MiB, 100 + i).then(() => s.closeWrite()),
        ]);
        assertEquals(got.sha256, blockStreamSha256(4 * MiB, 100 + i), `stream ${i}`);
        s.close();
      }));
      assertEquals(await session.ping().then((r) => r >= 0), true);
    });
  },
});

Deno.test({
  name: "interop go: Go server refuses nothing when we open with SYN+data+FIN in one frame",
  async fn() {
    await withGoServer(async (session) => {
      const payload = enc.encode("echo\nhello yamux");
      const s = await session.open({ data: payload, fin: true });
      assertEquals(dec.decode(await readAll(s)), "hello yamux");
      s.close();
    });
  },
});

/** Run the Go peer as a client against a warren server handling streams with `handle`. */
async function goClient(
  args: (addr: string) => string[],
  handle: (s: Stream) => Promise<unknown>,
  opts: SessionOptions = {},
): Promise<string[]> {
  const bin = await goPeer();
  const listener = listenLocal();
  const addr = `127.0.0.1:${listener.addr.port}`;
  const child = new Deno.Command(bin, { args: args(addr), stdout: "piped", stderr: "piped" })
    .spawn();
  const conn = await within(listener.accept(), "the Go client to connect").finally(() =>
    listener.close()
  );
  const session = Session.server(conn, { keepaliveIntervalMs: 1000, ...opts });
  const handlers: Promise<unknown>[] = [];
  const acceptLoop = (async () => {
    for await (const s of session) handlers.push(handle(s));
  })();
  const out = await within(child.output(), "the Go client to finish", exchangeMs);
  await within(
    Promise.all([session.closed, acceptLoop, Promise.all(handlers)]),
    "the session with the Go client to end",
  );
  const stdout = dec.decode(out.stdout);
  assert(out.success, `go client failed: ${dec.decode(out.stderr)}\n${stdout}`);
  return stdout.trim().split("\n");
}

Deno.test({
  name: "interop go: Go client -> warren server, 8 streams send 8 MiB each then FIN",
  async fn() {
    const got: string[] = [];
    const lines = await goClient((a) => ["client-send", a, String(8 * MiB), "8"], async (s) => {
      const r = await drainHash(s);
      assertEquals(r.bytes, 8 * MiB);
      got.push(r.sha256);
      await s.closeWrite(); // our FIN completes the Go stream's close
      s.close();
    });
    const sent = lines.map((l) => l.split(" ")[2]).sort();
    assertEquals(sent.length, 8);
    assertEquals(got.sort(), sent);
  },
});

Deno.test({
  name: "interop go: Go client -> warren server, 8 echo streams of 4 MiB (both directions)",
  async fn() {
    const lines = await goClient((a) => ["client-echo", a, String(4 * MiB), "8"], async (s) => {
      const buf = new Uint8Array(256 * 1024);
      while (true) {
        const n = await s.read(buf);
        if (n === null) break;
        await writeAll(s, buf.subarray(0, n));
      }
      await s.closeWrite();
      s.close();
    });
    assertEquals(lines.length, 8);
    for (const l of lines) {
      const [, , sent, recv] = l.split(" ");
      assertEquals(recv, sent, l);
    }
  },
});

Deno.test({
  name: "interop go: Go client -> warren server holding its ACK back (optional SYN response)",
  async fn() {
    const lines = await goClient(
      (a) => ["client-echo", a, String(64 * 1024), "32"],
      async (s) => {
        const buf = new Uint8Array(64 * 1024);
        while (true) {
          const n = await s.read(buf);
          if (n === null) break;
          await writeAll(s, buf.subarray(0, n)); // the first echo carries the ACK
        }
        await s.closeWrite();
        s.close();
      },
      { synAckDelayMs: 200 },
    );
    assertEquals(lines.length, 32);
    for (const l of lines) {
      const [, , sent, recv] = l.split(" ");
      assertEquals(recv, sent, l);
    }
  },
});

Deno.test({
  name: "interop go: Go client reads 24 MiB the warren server sends after the request",
  async fn() {
    const lines = await goClient((a) => ["client-recv", a, String(24 * MiB)], async (s) => {
      let line = "";
      const b = new Uint8Array(1);
      while (!line.endsWith("\n")) {
        const n = await s.read(b);
        if (n === null) break;
        line += String.fromCharCode(b[0]);
      }
      await sendBlocks(s, Number(line.trim()), 9);
      await s.closeWrite();
      await readAll(s); // the Go side closes after reading everything
      s.close();
    });
    assertEquals(lines[0], `recv ${24 * MiB} ${blockStreamSha256(24 * MiB, 9)}`);
    assertEquals(sha256(new Uint8Array(0)).length, 64);
  },
});
