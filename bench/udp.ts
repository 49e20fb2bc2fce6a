/**
 * `deno run -A bench/udp.ts [--seconds N] [--rates 50M,200M,500M]`: `iperf3 -u` direct,
 * through seaprox's `udp://` forward and through a UDP tunnel (tunnel-server `--udp` →
 * tunnel-client, issue 17), on loopback. iperf3 runs its control connection over TCP on the
 * same port as its datagrams, so seaprox listens with a `static://` and a `udp://` listener on
 * one port number, and the tunnel server defines a `--tcp` and a `--udp` tunnel on one port
 * number, all to the iperf3 server. For each offered rate:
 * the receiver's rate, datagrams sent, lost (and %) and out of order, as iperf3 counts them —
 * loss is reported, never hidden. 1400-byte datagrams.
 *
 * Then SOCKS5 UDP ASSOCIATE, which iperf3 cannot speak: this script's own paced sender sends
 * numbered 1400-byte datagrams at each offered rate to a UDP echo (bench/_udp_echo.ts, its own
 * process) directly, through seaprox's SOCKS5 listener, and through depot-server → depot-local
 * (a plain tunnel, then `--mux`), and counts the echoes back: rate, lost (and %), out of order.
 * A round trip crosses each relay twice.
 *
 * Then iperf3 -u through seaprox links: a `udp://` forward whose peers ride `--via link://`
 * (TCP+TLS) or `--via quic://` (QUIC datagrams) to a second seaprox (run with
 * `--unstable-net`), 1200-byte datagrams so they fit a QUIC datagram. Not a test: numbers are
 * as measured on a shared machine.
 * @module
 */

import {
  benchPath,
  fixed,
  formatTable,
  freePort,
  hasCommand,
  listeningPort,
  type Proc,
  servicePath,
  spawn,
  spawnDeno,
  stopAll,
  waitPort,
} from "./_util.ts";
import { dial, type HostPort } from "../lib/net/mod.ts";
import { decodeSocks5Udp, encodeSocks5Udp } from "../lib/socks5/mod.ts";
import { UdpSocket } from "../lib/udp/mod.ts";

const arg = (name: string, fallback: string) => {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 && Deno.args[i + 1] ? Deno.args[i + 1] : fallback;
};
const seconds = Number(arg("seconds", "3"));
const rates = arg("rates", "50M,200M,500M").split(",");
/** iperf3's datagram payload: under a 1500-byte MTU with room for headers. */
const datagramBytes = 1400;

/** What iperf3 -J reports at the receiver for one UDP run. */
interface UdpRun {
  mbps: number;
  packets: number;
  lost: number;
  lostPercent: number;
  outOfOrder: number;
}

async function iperfUdp(port: number, rate: string, bytes = datagramBytes): Promise<UdpRun> {
  const out = await new Deno.Command("iperf3", {
    args: [
      "-c",
      "127.0.0.1",
      "-p",
      `${port}`,
      "-u",
      "-b",
      rate,
      "-l",
      `${bytes}`,
      "-t",
      `${seconds}`,
      "-J",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) throw new Error(`iperf3 -c: ${text}${new TextDecoder().decode(out.stderr)}`);
  const end = JSON.parse(text).end;
  const r = end.sum_received ?? end.sum;
  return {
    mbps: r.bits_per_second / 1e6,
    packets: r.packets,
    lost: r.lost_packets,
    lostPercent: r.lost_percent,
    outOfOrder: end.streams?.[0]?.udp?.out_of_order ?? 0,
  };
}

/** Bits per second of an iperf3-style rate ("50M", "1G", "800K"). */
function bitsPerSecond(rate: string): number {
  const m = /^(\d+(?:\.\d+)?)([KMG]?)$/i.exec(rate);
  if (!m) throw new Error(`bad rate ${rate}`);
  return Number(m[1]) * ({ "": 1, K: 1e3, M: 1e6, G: 1e9 }[m[2].toUpperCase()] ?? 1);
}

/** A path for the echo run: how a payload is wrapped on the way out and unwrapped on return. */
interface EchoPath {
  name: string;
  to: HostPort;
  wrap(payload: Uint8Array): Uint8Array;
  unwrap(datagram: Uint8Array): Uint8Array;
}

/** A raw SOCKS5 UDP ASSOCIATE (no authentication): the control connection and relay address. */
async function associate(socksPort: number, from: HostPort): Promise<{
  control: Deno.TcpConn;
  relay: HostPort;
}> {
  const control = await dial("127.0.0.1", socksPort);
  const buf = new Uint8Array(64);
  const readAtLeast = async (n: number) => {
    let got = 0;
    while (got < n) {
      const r = await control.read(buf.subarray(got));
      if (r === null) throw new Error("SOCKS5 server closed");
      got += r;
    }
    return buf.subarray(0, got);
  };
  await control.write(Uint8Array.of(5, 1, 0));
  await readAtLeast(2);
  await control.write(Uint8Array.of(5, 3, 0, 1, 0, 0, 0, 0, from.port >> 8, from.port & 0xff));
  const reply = await readAtLeast(10); // IPv4 BND (the relays bind where we reached them)
  if (reply[1] !== 0) throw new Error(`UDP ASSOCIATE refused: 0x${reply[1].toString(16)}`);
  return { control, relay: { host: "127.0.0.1", port: (reply[8] << 8) | reply[9] } };
}

/** What one echo run counted. */
interface EchoRun {
  sent: number;
  received: number;
  outOfOrder: number;
  mbps: number;
}

/**
 * Send numbered datagrams over `path` at `rate` for `seconds` from `sock`, then wait 1 s for
 * the last echoes; count them back.
 */
async function echoRun(sock: UdpSocket, path: EchoPath, rate: string): Promise<EchoRun> {
  const perSecond = bitsPerSecond(rate) / 8 / datagramBytes;
  let received = 0, outOfOrder = 0, highest = -1;
  sock.onMessage = (d) => {
    const payload = path.unwrap(d);
    const seq = new DataView(payload.buffer, payload.byteOffset).getUint32(0);
    received++;
    if (seq < highest) outOfOrder++;
    else highest = seq;
  };
  const payload = new Uint8Array(datagramBytes);
  const view = new DataView(payload.buffer);
  const started = performance.now();
  let sent = 0;
  while (performance.now() - started < seconds * 1000) {
    const due = Math.floor((performance.now() - started) / 1000 * perSecond);
    const batch: Promise<void>[] = [];
    for (; sent < due; sent++) {
      view.setUint32(0, sent);
      batch.push(
        sock.send(path.wrap(payload), path.to).catch(() => {
          // Refused by the kernel (buffer full): a lost datagram, counted as such.
        }),
      );
    }
    await Promise.all(batch);
    await new Promise((r) => setTimeout(r, 2));
  }
  await new Promise((r) => setTimeout(r, 1000));
  return { sent, received, outOfOrder, mbps: received * datagramBytes * 8 / seconds / 1e6 };
}

/** Echo runs at every rate over `path`, as table rows. */
async function echoRows(path: EchoPath, sock: UdpSocket): Promise<string[][]> {
  const rows: string[][] = [];
  for (const rate of rates) {
    const r = await echoRun(sock, path, rate);
    const lost = r.sent - r.received;
    rows.push([
      path.name,
      rate,
      fixed(r.mbps, 1),
      `${r.sent}`,
      `${lost}`,
      fixed(r.sent ? lost / r.sent * 100 : 0, 2),
      `${r.outOfOrder}`,
    ]);
  }
  return rows;
}

/** Echo rows through a SOCKS5 UDP ASSOCIATE at `socksPort` (one association for all rates). */
async function socksEchoRows(name: string, socksPort: number, echo: HostPort) {
  const sock = await UdpSocket.bind("127.0.0.1", 0);
  const a = await associate(socksPort, sock.addr);
  try {
    return await echoRows({
      name,
      to: a.relay,
      wrap: (p) => encodeSocks5Udp(echo, p),
      unwrap: (d) => decodeSocks5Udp(d).data,
    }, sock);
  } finally {
    a.control.close();
    sock.close();
  }
}

/** The SOCKS5 UDP ASSOCIATE table: direct, seaprox, depot (tunnel), depot (mux). */
async function socksUdpTable(procs: Proc[]): Promise<string> {
  const echoProc = spawnDeno(benchPath("_udp_echo.ts"), [], { name: "udp-echo" });
  procs.push(echoProc);
  const echo = { host: "127.0.0.1", port: await listeningPort(echoProc, "udp-echo") };
  const rows: string[][] = [];
  const direct = await UdpSocket.bind("127.0.0.1", 0);
  try {
    rows.push(
      ...await echoRows({ name: "direct", to: echo, wrap: (p) => p, unwrap: (d) => d }, direct),
    );
  } finally {
    direct.close();
  }
  const sp = spawnDeno(servicePath("seaprox.ts"), ["--listen", "socks5://127.0.0.1:0"]);
  procs.push(sp);
  rows.push(...await socksEchoRows("seaprox socks5", await listeningPort(sp, "socks5"), echo));
  await sp.stop();
  const env = { DEPOT_TOKEN: crypto.randomUUID() };
  for (const mux of [false, true]) {
    const server = spawnDeno(servicePath("depot-server.ts"), [
      ...["--control", "127.0.0.1:0", "--socks", "127.0.0.1:0", "--tunnel", "127.0.0.1:0"],
    ], { env });
    procs.push(server);
    const control = await listeningPort(server, "control");
    const local = spawnDeno(servicePath("depot-local.ts"), [
      ...["--server", `127.0.0.1:${control}`, ...(mux ? ["--mux"] : [])],
    ], { env });
    procs.push(local);
    await local.waitFor(/msg="connected"/);
    const name = `depot${mux ? " --mux" : ""}`;
    rows.push(...await socksEchoRows(name, await listeningPort(server, "socks"), echo));
    await stopAll([local, server]);
  }
  return `SOCKS5 UDP ASSOCIATE, echo round trips of ${datagramBytes}-byte datagrams, ${seconds} s ` +
    `per run, loopback (received = echoes back)\n\n` +
    formatTable(
      ["path", "offered", "received Mbit/s", "datagrams", "lost", "lost %", "out of order"],
      rows,
    );
}

/** Datagrams of the link table: they fit one QUIC datagram on a fresh path (about 1,280). */
const linkDatagramBytes = 1200;

/** A CA and a server leaf for localhost (the links run TLS; QUIC always does). */
async function benchCert(dir: string): Promise<{ ca: string; cert: string; key: string }> {
  const ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  const out = await new Deno.Command("sh", {
    args: [
      "-c",
      `cd ${dir} && openssl req -x509 ${ec} -days 2 -subj /CN=bench-ca -keyout ca.key -out ca.pem ` +
      `-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign && ` +
      `openssl req ${ec} -subj /CN=localhost -keyout server.key -out server.csr && ` +
      `printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > ext && ` +
      `openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 ` +
      `-extfile ext -out server.pem`,
    ],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
  return { ca: `${dir}/ca.pem`, cert: `${dir}/server.pem`, key: `${dir}/server.key` };
}

/**
 * iperf3 -u through seaprox links (issue 17): a node A whose `udp://` forward (and the
 * `static://` beside it for iperf3's control connection) leaves through `--via link://`
 * (TCP+TLS: each peer one mux stream, datagrams framed on it) or `--via quic://` (QUIC
 * datagrams), to node B, which sends them to the iperf3 server; beside direct and the local
 * `udp://` forward, all with ${linkDatagramBytes}-byte datagrams.
 */
async function linkUdpTable(procs: Proc[], serverPort: number): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "warren-bench-udp-" });
  try {
    const pki = await benchCert(dir);
    await Deno.writeTextFile(`${dir}/token`, crypto.randomUUID());
    const seaprox = (args: string[]) => {
      const p = spawn(Deno.execPath(), [
        ...["run", "-A", "--unstable-net", servicePath("seaprox.ts")],
        ...[`--link-token-file=${dir}/token`, "--prefer-ipv4", ...args],
      ], { name: "seaprox" });
      procs.push(p);
      return p;
    };
    const b = seaprox([
      ...["--listen=link://127.0.0.1:0", "--listen=quic://127.0.0.1:0"],
      ...[`--tls-cert=${pki.cert}`, `--tls-key=${pki.key}`],
    ]);
    const nodeA = async (via: string) => {
      const port = freePort();
      const a = seaprox([
        ...["--listen", `static://127.0.0.1:${port}?to=127.0.0.1:${serverPort}`],
        ...["--listen", `udp://127.0.0.1:${port}?to=127.0.0.1:${serverPort}`],
        `--via=${via}`,
        `--tls-ca=${pki.ca}`,
      ]);
      await listeningPort(a, "udp");
      await a.waitFor(/msg="link up"/);
      return port;
    };
    const local = freePort();
    procs.push(spawnDeno(servicePath("seaprox.ts"), [
      ...["--listen", `static://127.0.0.1:${local}?to=127.0.0.1:${serverPort}`],
      ...["--listen", `udp://127.0.0.1:${local}?to=127.0.0.1:${serverPort}`],
    ]));
    const paths: [string, number][] = [
      ["direct", serverPort],
      ["seaprox udp://", local],
      [
        "udp:// via link:// (TCP+TLS)",
        await nodeA(`link://localhost:${await listeningPort(b, "link")}`),
      ],
      [
        "udp:// via quic:// (datagrams)",
        await nodeA(`quic://localhost:${await listeningPort(b, "quic")}`),
      ],
    ];
    const rows: string[][] = [];
    for (const rate of rates) {
      for (const [path, p] of paths) {
        const r = await iperfUdp(p, rate, linkDatagramBytes);
        rows.push([
          path,
          rate,
          fixed(r.mbps, 1),
          `${r.packets}`,
          `${r.lost}`,
          fixed(r.lostPercent, 2),
          `${r.outOfOrder}`,
        ]);
      }
    }
    return `iperf3 -u through seaprox links, ${linkDatagramBytes}-byte datagrams, ${seconds} s per ` +
      `run, loopback\n\n` +
      formatTable(
        ["path", "offered", "received Mbit/s", "datagrams", "lost", "lost %", "out of order"],
        rows,
      );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (!hasCommand("iperf3")) {
  console.log("iperf3 is not installed: skipped (apt-get install iperf3)");
  Deno.exit(0);
}
const procs: Proc[] = [];
try {
  const serverPort = freePort();
  procs.push(spawn("iperf3", ["-s", "-p", `${serverPort}`], { output: "discard" }));
  await waitPort(serverPort);
  const port = freePort();
  const sp = spawnDeno(servicePath("seaprox.ts"), [
    "--listen",
    `static://127.0.0.1:${port}?to=127.0.0.1:${serverPort}`,
    "--listen",
    `udp://127.0.0.1:${port}?to=127.0.0.1:${serverPort}`,
  ]);
  procs.push(sp);
  await listeningPort(sp, "udp");
  const tport = freePort();
  const env = { TUNNEL_IDENTIFIER: crypto.randomUUID() };
  const ts = spawnDeno(servicePath("tunnel-server.ts"), [
    ...["--listen", "127.0.0.1:0", "--tcp-ports", `${tport}`, "--udp-ports", `${tport}`],
    ...[
      "--tcp",
      `${tport}=env:TUNNEL_IDENTIFIER`,
      "--udp",
      `${tport}:${serverPort}=env:TUNNEL_IDENTIFIER`,
    ],
  ], { env });
  procs.push(ts);
  const tc = spawnDeno(servicePath("tunnel-client.ts"), [
    ...["--server", `http://127.0.0.1:${await listeningPort(ts, "http")}`],
    ...["--local", `127.0.0.1:${serverPort}`, "--allow-port", `${serverPort}`],
  ], { env });
  procs.push(tc);
  await listeningPort(ts, `udp-${tport}`);
  const rows: string[][] = [];
  const paths = [["direct", serverPort], ["seaprox udp://", port], ["tunnel --udp", tport]];
  for (const rate of rates) {
    for (const [path, p] of paths as [string, number][]) {
      const r = await iperfUdp(p, rate);
      rows.push([
        path,
        rate,
        fixed(r.mbps, 1),
        `${r.packets}`,
        `${r.lost}`,
        fixed(r.lostPercent, 2),
        `${r.outOfOrder}`,
      ]);
    }
  }
  console.log(
    `iperf3 -u, ${datagramBytes}-byte datagrams, ${seconds} s per run, loopback\n\n` +
      formatTable(
        ["path", "offered", "received Mbit/s", "datagrams", "lost", "lost %", "out of order"],
        rows,
      ),
  );
  console.log("\n" + await socksUdpTable(procs));
  console.log("\n" + await linkUdpTable(procs, serverPort));
} finally {
  await stopAll(procs);
}
