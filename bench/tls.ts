/**
 * TLS link throughput, one connection, loopback: direct TCP; lib/net/tls with Deno.listenTls
 * (server TLS); with node:tls (mutual TLS); the node:tls client (bound local address); and
 * socat's OpenSSL as the outside peer (TLS terminated by socat, forwarded to the same sink).
 * Also handshakes per second (sequential connect + handshake + close), and the small-exchange
 * table: on one connection, `exchanges` times the client sends 1 byte and the server answers
 * with two 1-byte writes (no reply between, like a head then a body, or a frame then a FIN):
 * lib/transport's listeners beside a bare `Deno.listenTls` (what they were before TCP_NODELAY
 * was set on their listening socket), mean and worst ms per exchange.
 *
 *   deno run -A bench/tls.ts [MiB]
 */

import { closeQuietly } from "../lib/net/mod.ts";
import {
  connectTls,
  listenTls,
  loadTlsClientConfig,
  loadTlsServerConfig,
} from "../lib/transport/mod.ts";
import { makePki } from "../tests/_tls.ts";
import { randomBlock } from "../tests/_util.ts";
import {
  bestOf,
  fixed,
  formatTable,
  freePort,
  hasCommand,
  mbPerSec,
  MiB,
  type Proc,
  ratio,
  readToEnd,
  sendBytes,
  spawn,
  waitPort,
} from "./_util.ts";

const mib = Number(Deno.args[0] ?? 256);
const total = mib * MiB;
const rounds = 3;
const handshakeCount = 200;
const exchanges = 200;
/** Read buffer of the sink. */
const sinkBufferBytes = 256 * 1024;

/** A sink listener: reads each connection to EOF, then closes. */
async function sink(listener: Deno.Listener<Deno.Conn>): Promise<void> {
  const buf = new Uint8Array(sinkBufferBytes);
  for await (const c of listener) {
    (async () => {
      try {
        await readToEnd(c, buf);
      } catch {
        // a peer that vanished: the next connection is measured anyway
      } finally {
        closeQuietly(c);
      }
    })();
  }
}

async function send(conn: Deno.Conn): Promise<void> {
  await sendBytes(conn, total, randomBlock);
  await conn.closeWrite();
  // Wait for the sink's close so the measurement includes delivery.
  await conn.read(new Uint8Array(1)).catch(() => null);
  closeQuietly(conn);
}

/** MB/s of the best of `rounds` sends through `dialer`'s connections (set-up included). */
function best(dialer: () => Promise<Deno.Conn>): Promise<number> {
  return bestOf(rounds, async () => {
    const t0 = performance.now();
    await send(await dialer());
    return mbPerSec(total, performance.now() - t0);
  });
}

async function handshakes(dialer: () => Promise<Deno.Conn>): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < handshakeCount; i++) closeQuietly(await dialer());
  return handshakeCount / ((performance.now() - t0) / 1000);
}

/** Answer each byte read with two 1-byte writes. */
async function twoWrites(listener: Deno.Listener<Deno.Conn>): Promise<void> {
  const one = new Uint8Array(1);
  for await (const c of listener) {
    (async () => {
      try {
        while ((await c.read(new Uint8Array(1))) !== null) {
          await c.write(one);
          await c.write(one);
        }
      } catch {
        // a peer that vanished: the next connection is measured anyway
      } finally {
        closeQuietly(c);
      }
    })();
  }
}

/**
 * ms of the first of `exchanges` 1-byte requests answered by two 1-byte writes (right after the
 * handshake), then mean and worst of the others.
 */
async function smallExchanges(
  conn: Deno.Conn,
): Promise<{ first: number; mean: number; worst: number }> {
  const buf = new Uint8Array(2);
  let first = 0, sum = 0, worst = 0;
  for (let i = 0; i < exchanges; i++) {
    const t0 = performance.now();
    await conn.write(buf.subarray(0, 1));
    for (let got = 0; got < 2;) got += (await conn.read(buf.subarray(got))) ?? Infinity;
    const ms = performance.now() - t0;
    if (i === 0) first = ms;
    else [sum, worst] = [sum + ms, Math.max(worst, ms)];
  }
  closeQuietly(conn);
  return { first, mean: sum / (exchanges - 1), worst };
}

const pki = await makePki();
const server = loadTlsServerConfig({ certFile: pki.serverCert, keyFile: pki.serverKey });
const mutual = loadTlsServerConfig({
  certFile: pki.serverCert,
  keyFile: pki.serverKey,
  caFile: pki.ca,
});
const client = loadTlsClientConfig({ caFile: pki.ca });
const mclient = loadTlsClientConfig({
  caFile: pki.ca,
  certFile: pki.clientCert,
  keyFile: pki.clientKey,
});
const addr = { hostname: "127.0.0.1", port: 0 };
const plain = Deno.listen(addr);
const denoTls = await listenTls(addr, server);
const nodeTls = await listenTls(addr, mutual);
for (const l of [plain, denoTls, nodeTls]) void sink(l);

let socat: Proc | undefined;
const socatPort = freePort();
if (hasCommand("socat")) {
  socat = spawn("socat", [
    `OPENSSL-LISTEN:${socatPort},bind=127.0.0.1,reuseaddr,fork,cert=${pki.serverCert},` +
    `key=${pki.serverKey},verify=0`,
    `TCP:127.0.0.1:${plain.addr.port}`,
  ], { output: "discard" });
  try {
    await waitPort(socatPort, "socat");
  } catch (err) {
    console.error(String(err));
    await socat.stop();
    socat = undefined; // reported below
  }
}

const rows: [string, () => Promise<Deno.Conn>][] = [
  ["direct TCP", () => Deno.connect({ hostname: "127.0.0.1", port: plain.addr.port })],
  ["lib/net/tls (Deno.listenTls)", () => connectTls("localhost", denoTls.addr.port, client)],
  ["lib/net/tls mutual (node:tls)", () => connectTls("localhost", nodeTls.addr.port, mclient)],
  [
    "lib/net/tls, bound local addr",
    () => connectTls("127.0.0.1", denoTls.addr.port, client, { localAddress: "127.0.0.1" }),
  ],
];
if (socat) {
  rows.push(["socat OPENSSL-LISTEN (outside)", () => connectTls("localhost", socatPort, client)]);
}

const results: { name: string; mbps: number; hs: number }[] = [];
for (const [name, d] of rows) results.push({ name, mbps: await best(d), hs: await handshakes(d) });
const base = results[0];
console.log(
  `TLS links, ${mib} MiB per run, best of ${rounds}; ${handshakeCount} sequential handshakes`,
);
console.log(formatTable(
  ["path", "MB/s", "× direct", "conn/s", "× direct"],
  results.map((r) => [
    r.name,
    fixed(r.mbps),
    ratio(r.mbps, base.mbps),
    fixed(r.hs),
    ratio(r.hs, base.hs),
  ]),
));
if (!socat) console.log("socat not installed (or not listening): outside peer row skipped");

const small = [
  ["Deno.listenTls, bare (Nagle on)", Deno.listenTls({ ...addr, ...server }), client],
  ["lib/transport listenTls (Deno.listenTls)", await listenTls(addr, server), client],
  ["lib/transport listenTls mutual (node:tls)", await listenTls(addr, mutual), mclient],
] as const;
for (const [, l] of small) void twoWrites(l);
const smallRows: string[][] = [];
for (const [name, l, cfg] of small) {
  const r = await smallExchanges(await connectTls("localhost", l.addr.port, cfg));
  smallRows.push([name, fixed(r.first, 1), fixed(r.mean, 2), fixed(r.worst, 1)]);
}
console.log(`\n${exchanges} exchanges on one connection: 1 byte up, two 1-byte writes down`);
console.log(formatTable(["server", "first ms", "then mean ms", "worst ms"], smallRows));
for (const [, l] of small) closeQuietly(l);

await socat?.stop();
for (const l of [plain, denoTls, nodeTls]) closeQuietly(l);
await pki.remove();
Deno.exit(0);
