/**
 * `deno run -A --unstable-net bench/quic.ts`: the seaprox link over QUIC beside the TCP link
 * (TLS, as deployed) and direct TCP, on loopback:
 *
 * - bulk: one connection downloads and one uploads `--mib` MiB (default 256) through a SOCKS5
 *   listener of node A whose link reaches node B (seaprox processes), MB/s, best of `--rounds`;
 * - per connection: mean ms of `--seq` (default 500) sequential small exchanges (a new
 *   proxied connection each: one link round trip for the request/result on both links);
 * - link set-up: ms from a new link client to its first usable session, measured in this
 *   process (median of `--setups`, default 20). Round trips before the first byte can flow:
 *   QUIC 2 (QUIC+TLS 1.3 handshake, token hello), TCP link with TLS 3 (TCP, TLS 1.3, hello).
 *
 * `--old DIR` adds a TCP+TLS link pair (nodes A and B) run from another checkout's services/
 * (marked "(old)"), measured in the same rounds, and its link set-up against that B: a
 * before/after in one run (the far node B is where the TLS server's socket options live).
 *
 * The source is bench/_source.ts in its own process. Not a test: numbers are
 * as measured on a shared machine.
 */

import { LinkClient, QuicLinkClient } from "../lib/proxy/mod.ts";
import { type HostPort, sleep } from "../lib/net/mod.ts";
import { loadTlsClientConfig } from "../lib/transport/mod.ts";
import {
  benchFlags,
  downloadMBps,
  fixed,
  formatTable,
  listeningPort,
  median,
  MiB,
  type Proc,
  ratio,
  type Route,
  sequentialMs,
  servicePath,
  sh,
  socksRoute,
  spawn,
  startLengthSource,
  stopAll,
  tcpRoute,
  uploadMBps,
} from "./_util.ts";

const flags = benchFlags({
  numbers: { mib: 256, rounds: 3, seq: 500, setups: 20 },
  strings: ["old"],
});
const token = "bench-quic-link-token";
const dir = await Deno.makeTempDir({ prefix: "warren-bench-quic-" });
const procs: Proc[] = [];

/** A CA and a server leaf for localhost/127.0.0.1 (QUIC always runs TLS). */
async function makeCert(): Promise<{ ca: string; cert: string; key: string }> {
  const ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  await sh(
    "sh",
    [
      "-c",
      `cd ${dir} && openssl req -x509 ${ec} -days 2 -subj /CN=bench-ca -keyout ca.key -out ca.pem ` +
      `-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null && ` +
      `openssl req ${ec} -subj /CN=localhost -keyout server.key -out server.csr 2>/dev/null && ` +
      `printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > ext && ` +
      `openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 ` +
      `-extfile ext -out server.pem 2>/dev/null`,
    ],
  );
  return { ca: `${dir}/ca.pem`, cert: `${dir}/server.pem`, key: `${dir}/server.key` };
}

function seaprox(name: string, args: string[], script = servicePath("seaprox.ts")): Proc {
  const p = spawn(Deno.execPath(), [
    "run",
    "-A",
    "--unstable-net",
    script,
    "--log-level",
    "info",
    "--prefer-ipv4",
    `--link-token-file=${dir}/token`,
    ...args,
  ], { name });
  procs.push(p);
  return p;
}

/** Median ms from creating a link client to its first session. */
async function setupMs(open: () => { connected: boolean; close(): Promise<void> }) {
  const times: number[] = [];
  for (let i = 0; i < flags.setups; i++) {
    const t0 = performance.now();
    const c = open();
    while (!c.connected) await sleep(1);
    times.push(performance.now() - t0);
    await c.close();
  }
  return median(times);
}

try {
  const pki = await makeCert();
  await Deno.writeTextFile(`${dir}/token`, token);
  const { proc: src, port: srcPort } = await startLengthSource();
  procs.push(src);
  const b = seaprox("node-b", [
    "--listen=quic://127.0.0.1:0",
    "--listen=link://127.0.0.1:0",
    `--tls-cert=${pki.cert}`,
    `--tls-key=${pki.key}`,
  ]);
  const quicPort = await listeningPort(b, "quic");
  const linkPort = await listeningPort(b, "link");
  const viaQuic = seaprox("node-a-quic", [
    "--listen=socks5://127.0.0.1:0",
    `--via=quic://localhost:${quicPort}`,
    `--tls-ca=${pki.ca}`,
  ]);
  const viaTcp = seaprox("node-a-tcp", [
    "--listen=socks5://127.0.0.1:0",
    `--via=link://localhost:${linkPort}`,
    `--tls-ca=${pki.ca}`,
  ]);
  const routes: Route[] = [
    tcpRoute("direct TCP", srcPort),
    socksRoute("SOCKS5 -> QUIC link", await listeningPort(viaQuic, "socks5"), srcPort),
    socksRoute("SOCKS5 -> TCP+TLS link", await listeningPort(viaTcp, "socks5"), srcPort),
  ];
  await viaQuic.waitFor(/msg="link up"/);
  await viaTcp.waitFor(/msg="link up"/);
  let oldLinkPort = 0;
  if (flags.old) {
    const script = `${flags.old}/services/seaprox.ts`;
    const tlsB = [`--tls-cert=${pki.cert}`, `--tls-key=${pki.key}`];
    const oldB = seaprox("node-b-old", ["--listen=link://127.0.0.1:0", ...tlsB], script);
    oldLinkPort = await listeningPort(oldB, "link");
    const oldA = seaprox("node-a-old", [
      "--listen=socks5://127.0.0.1:0",
      `--via=link://localhost:${oldLinkPort}`,
      `--tls-ca=${pki.ca}`,
    ], script);
    const port = await listeningPort(oldA, "socks5");
    await oldA.waitFor(/msg="link up"/);
    routes.push(socksRoute("SOCKS5 -> TCP+TLS link (old)", port, srcPort));
  }

  const bytes = flags.mib * MiB;
  const best = routes.map(() => ({ down: 0, up: 0, seqMs: Infinity }));
  for (let r = 0; r < flags.rounds; r++) {
    for (const [i, route] of routes.entries()) {
      best[i].down = Math.max(best[i].down, await downloadMBps(route, bytes));
      best[i].up = Math.max(best[i].up, await uploadMBps(route, bytes));
      best[i].seqMs = Math.min(best[i].seqMs, await sequentialMs(route, flags.seq));
    }
  }
  const tls = loadTlsClientConfig({ caFile: pki.ca });
  const at = (port: number): HostPort => ({ host: "localhost", port });
  const quicSetup = await setupMs(() =>
    new QuicLinkClient({ addr: at(quicPort), token, tls, backoff: { initialMs: 5 } })
  );
  const tcpSetup = await setupMs(() =>
    new LinkClient({ addr: at(linkPort), token, tls, backoff: { initialMs: 5 } })
  );
  const oldSetup = oldLinkPort === 0
    ? 0
    : await setupMs(() =>
      new LinkClient({ addr: at(oldLinkPort), token, tls, backoff: { initialMs: 5 } })
    );

  console.log(
    `seaprox links, ${flags.mib} MiB per transfer, best of ${flags.rounds}; ${flags.seq} ` +
      `sequential connections; link set-up median of ${flags.setups}`,
  );
  console.log(formatTable(
    ["path", "down MB/s", "vs direct", "up MB/s", "vs direct", "ms/conn", "link set-up ms", "RTTs"],
    routes.map((route, i) => [
      route.name,
      fixed(best[i].down),
      ratio(best[i].down, best[0].down),
      fixed(best[i].up),
      ratio(best[i].up, best[0].up),
      fixed(best[i].seqMs, 2),
      i === 0 ? "-" : fixed([quicSetup, tcpSetup, oldSetup][i - 1], 1),
      i === 0 ? "1 (TCP)" : i === 1 ? "2" : "3",
    ]),
  ));
} finally {
  await stopAll(procs);
  await Deno.remove(dir, { recursive: true });
}
