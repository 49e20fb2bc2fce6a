/**
 * `deno run -A bench/udp.ts [--seconds N] [--rates 50M,200M,500M]`: `iperf3 -u` direct and
 * through seaprox's `udp://` forward (issue 17), on loopback. iperf3 runs its control
 * connection over TCP on the same port as its datagrams, so seaprox listens with a `static://`
 * and a `udp://` listener on one port number, both to the iperf3 server. For each offered rate:
 * the receiver's rate, datagrams sent, lost (and %) and out of order, as iperf3 counts them —
 * loss is reported, never hidden. 1400-byte datagrams. Not a test: numbers are as measured on
 * a shared machine.
 * @module
 */

import {
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

async function iperfUdp(port: number, rate: string): Promise<UdpRun> {
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
      `${datagramBytes}`,
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
  const rows: string[][] = [];
  for (const rate of rates) {
    for (const [path, p] of [["direct", serverPort], ["seaprox udp://", port]] as const) {
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
} finally {
  await stopAll(procs);
}
