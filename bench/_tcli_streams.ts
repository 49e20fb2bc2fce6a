/**
 * tunnel-client's cost per tunnel stream (a new public connection: ControlMsg, origin dial,
 * StreamReply, relay, close), in one process (issue 20). For each variant (this checkout's
 * TunnelClient, and `--old DIR`'s) a stand-in server (lib/mux over the raw upgrade, as
 * tests/tunnel_client_stream_test.ts) opens streams carrying the ControlMsg and a small GET in
 * their SYN, half-closes them and reads the reply and the answer to the end; the origin answers
 * each connection once and closes, as an origin does after `Connection: close`. Everything but
 * the client is this checkout's code and the same for every variant, so the process's CPU per
 * stream (user + system, all threads) differs by what the clients cost. Rounds interleave the
 * variants (order reversed every other round); medians and same-round ratios.
 *
 *   deno run -A bench/_tcli_streams.ts [--old DIR] [--rounds 9] [--streams 3000]
 *     [--concurrency 16]
 * @module
 */

import process from "node:process";
import { Session, type Stream } from "../lib/mux/mod.ts";
import { BufferedReader, closeQuietly, writeAll } from "../lib/net/mod.ts";
import { upgradeServer } from "../lib/transport/upgrade.ts";
import {
  encodeMessage,
  expectMessage,
  rawUpgradeToken,
  type TunnelClientOptions,
} from "../lib/tunnel/mod.ts";
import { TunnelClient as NewClient } from "../lib/tunnel/client.ts";
import { benchFlags, median } from "./_util.ts";

const flags = benchFlags({
  numbers: { rounds: 9, streams: 3000, concurrency: 16 },
  strings: ["old"],
});

interface ClientLike {
  run(): Promise<void>;
}
type ClientCtor = new (o: TunnelClientOptions) => ClientLike;
const variants: [string, ClientCtor][] = [["new", NewClient]];
if (flags.old) {
  const m = await import(`${flags.old}/lib/tunnel/client.ts`);
  variants.push(["old", m.TunnelClient as ClientCtor]);
}

const request = new TextEncoder().encode(
  "GET /hello HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
);
const answer = new TextEncoder().encode(
  "HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: close\r\n\r\nhello world\n",
);

/** The origin: reads a request (one read), answers, closes. */
const origin = Deno.listen({ hostname: "127.0.0.1", port: 0 });
(async () => {
  for await (const c of origin) {
    (async () => {
      try {
        const buf = new Uint8Array(1024);
        if ((await c.read(buf)) !== null) await writeAll(c, answer);
      } catch {
        // The client went away: next connection.
      } finally {
        closeQuietly(c);
      }
    })();
  }
})();

/** One connected client of `Ctor` and the server's session with it. */
async function connect(Ctor: ClientCtor, ac: AbortController): Promise<Session> {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = new Ctor({
    server: `http://127.0.0.1:${l.addr.port}`,
    identifier: "bench-streams",
    local: { host: "127.0.0.1", port: origin.addr.port },
    transport: "raw",
    signal: ac.signal,
  });
  void client.run();
  const conn = await l.accept();
  l.close();
  const session = Session.server(await upgradeServer(conn, { protocol: rawUpgradeToken }), {
    keepaliveIntervalMs: 0,
  });
  const control = (await session.accept()) as Stream;
  await expectMessage(new BufferedReader(control), "handshakeRequest");
  await writeAll(
    control,
    encodeMessage({ type: "handshakeResponse", ok: true, hosts: ["a.test"], tcp: [] }),
  );
  return session;
}

let nextId = 0;
/** One public connection's stream: ControlMsg + GET in the SYN, read to the end. */
async function oneStream(session: Session): Promise<void> {
  const msg = encodeMessage({
    type: "controlMsg",
    action: "RequestClientSession",
    transportProtocol: "http",
    localPort: "",
    requestId: `r.${++nextId}`,
  });
  const data = new Uint8Array(msg.length + request.length);
  data.set(msg);
  data.set(request, msg.length);
  const s = await session.open({ data });
  await s.closeWrite();
  const buf = new Uint8Array(4096);
  let got = 0;
  for (let n = await s.read(buf); n !== null; n = await s.read(buf)) got += n;
  if (got < answer.length) throw new Error(`short answer: ${got} bytes`);
  s.close();
}

/** `n` streams, `concurrency` at a time: CPU µs per stream of this whole process. */
async function measure(session: Session, n: number): Promise<number> {
  const c0 = process.cpuUsage();
  let left = n;
  await Promise.all(
    Array.from({ length: flags.concurrency }, async () => {
      while (left-- > 0) await oneStream(session);
    }),
  );
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / n;
}

const ac = new AbortController();
const sessions: Session[] = [];
for (const [, Ctor] of variants) sessions.push(await connect(Ctor, ac));
for (const s of sessions) await measure(s, 500); // warm-up
const us: number[][] = variants.map(() => []);
for (let round = 0; round < flags.rounds; round++) {
  const order = [...variants.keys()];
  if (round % 2 === 1) order.reverse();
  for (const i of order) us[i].push(await measure(sessions[i], flags.streams));
}
const load = Deno.readTextFileSync("/proc/loadavg").split(" ")[0];
console.log(
  `CPU µs per stream (this process: stand-in server, origin and the client), median of ` +
    `${flags.rounds} rounds of ${flags.streams}, ${flags.concurrency} at a time (load ${load}):`,
);
for (const [i, [name]] of variants.entries()) {
  const r = us[i].map((v, k) => v / us[0][k]);
  console.log(
    `${name.padEnd(4)} ${median(us[i]).toFixed(1).padStart(7)}` +
      (i === 0
        ? ""
        : `  / new: ${median(r).toFixed(3)} (${Math.min(...r).toFixed(2)}–${
          Math.max(...r).toFixed(2)
        })`),
  );
}
ac.abort();
for (const s of sessions) await s.close();
origin.close();
Deno.exit(0);
