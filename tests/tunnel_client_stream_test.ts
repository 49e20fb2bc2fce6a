// tunnel-client's tunnel streams against a stand-in server that decides how its bytes are cut
// into mux frames: the ControlMsg is read with nothing past it, and whatever comes behind it
// (in the same frame, split from it, one byte a frame, hundreds of KiB) reaches the local app
// complete, in order and once; the app's answer comes back the same way after the client's
// StreamReply, and the half-closes go through both ways.

import { Session, type Stream } from "../lib/mux/mod.ts";
import { BufferedReader, closeQuietly, writeAll } from "../lib/net/mod.ts";
import { upgradeServer } from "../lib/transport/upgrade.ts";
import { encodeMessage, expectMessage, rawUpgradeToken, TunnelClient } from "../lib/tunnel/mod.ts";
import { assertEquals } from "./_assert.ts";
import { concat } from "./_depot.ts";
import { acceptWithin, listenLocal, readAll, within } from "./_util.ts";

/** The local app: records each connection's request (read to EOF), then answers and ends. */
function startApp(answer: Uint8Array): {
  port: number;
  requests: Promise<Uint8Array>[];
  close(): Promise<void>;
} {
  const l = listenLocal();
  const requests: Promise<Uint8Array>[] = [];
  const conns: Promise<void>[] = [];
  const accepting = (async () => {
    for await (const c of l) {
      let got!: (b: Uint8Array) => void;
      requests.push(new Promise((r) => got = r));
      conns.push((async () => {
        try {
          got(await readAll(c, "the request, to its FIN"));
          await writeAll(c, answer);
          await c.closeWrite();
          await readAll(c, "the client's close");
        } finally {
          closeQuietly(c);
        }
      })());
    }
  })();
  return {
    port: l.addr.port,
    requests,
    async close() {
      l.close();
      await accepting;
      await Promise.all(conns);
    },
  };
}

/** A server end for one client: the raw upgrade, the mux session, the handshake. */
async function acceptClient(l: Deno.TcpListener): Promise<{ session: Session; control: Stream }> {
  const conn = await acceptWithin(l, "the client's connection");
  const transport = await upgradeServer(conn, { protocol: rawUpgradeToken });
  const session = Session.server(transport, { keepaliveIntervalMs: 0 });
  const control = await acceptWithin(session, "the client's control stream");
  const reader = new BufferedReader(control);
  await within(expectMessage(reader, "handshakeRequest"), "the handshake request");
  await writeAll(
    control,
    encodeMessage({ type: "handshakeResponse", ok: true, hosts: ["a.test"], tcp: [] }),
  );
  return { session, control };
}

const msg = encodeMessage({
  type: "controlMsg",
  action: "RequestClientSession",
  transportProtocol: "http",
  localPort: "",
  requestId: "r.1",
});
const head = new TextEncoder().encode("POST /up HTTP/1.1\r\nHost: a.test\r\n\r\n");
const body = crypto.getRandomValues(new Uint8Array(60_000));
const big = concat(head, body, body, body, body, body); // ~300 KiB: past the first window
const answer = concat(
  new TextEncoder().encode("HTTP/1.1 200 OK\r\n\r\n"),
  body,
  body,
  body,
);

/** name, the SYN's payload, the frames written after it (each its own write). */
const cases: [string, Uint8Array, Uint8Array[]][] = [
  ["message and request in the SYN", concat(msg, head), []],
  ["message in the SYN, the request later", msg, [head]],
  ["message cut across two frames", msg.subarray(0, 5), [msg.subarray(5), head]],
  ["message and the request's first bytes in the SYN", concat(msg, head.subarray(0, 9)), [
    head.subarray(9),
  ]],
  ["one byte a frame", new Uint8Array(0), [...concat(msg, head)].map((b) => Uint8Array.of(b))],
  ["nothing in the SYN", new Uint8Array(0), [msg, head]],
  ["300 KiB behind the message", concat(msg, big.subarray(0, 1000)), [big.subarray(1000)]],
];

Deno.test("tunnel-client: the bytes behind a stream's ControlMsg reach the app exactly, however framed", async () => {
  const app = startApp(answer);
  const l = listenLocal();
  const ac = new AbortController();
  const client = new TunnelClient({
    server: `http://127.0.0.1:${l.addr.port}`,
    identifier: "stream-test",
    local: { host: "127.0.0.1", port: app.port },
    transport: "raw",
    signal: ac.signal,
  });
  const running = client.run();
  const { session, control } = await acceptClient(l);
  try {
    for (const [i, [name, syn, later]] of cases.entries()) {
      const s = await session.open({ data: syn });
      for (const p of later) await s.write(p);
      await s.closeWrite();
      const reader = new BufferedReader(s);
      const reply = await within(expectMessage(reader, "streamReply"), `${name}: the reply`);
      assertEquals(reply.ok, true, name);
      const back = concat(reader.takeBuffered(), await readAll(s, `${name}: the answer`));
      assertEquals(back, answer, `${name}: the app's answer`);
      const sent = concat(syn, ...later).subarray(msg.length);
      const got = await within(app.requests[i], `${name}: the app's request`);
      assertEquals(got.length, sent.length, `${name}: bytes at the app`);
      assertEquals(got, sent, `${name}: the request at the app`);
      s.close();
    }
  } finally {
    ac.abort();
    closeQuietly(control);
    await session.close();
    await within(running, "the client's stop");
    l.close();
    await app.close();
  }
});
