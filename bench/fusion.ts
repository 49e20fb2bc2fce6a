/**
 * bench/fusion.ts: fusion against plain TCP and kernel MPTCP on the same two shaped paths.
 *
 * Two network namespaces joined by two veth pairs shaped with tc tbf (50+50 Mbit, then
 * 80+20 Mbit). Downloads (server to client, like `ssh … cat file`) of ~4 s each:
 *   - plain TCP on each path alone (Deno to Deno, the same stack fusion uses),
 *   - fusion over path 1 alone (its overhead against plain TCP on that path),
 *   - fusion over both paths, with each scheduler (weighted, rr, random),
 *   - kernel MPTCP over both paths (`mptcpize run iperf3 -R`, two subflows),
 *   - iperf3 plain TCP on path 1 (a known outside peer).
 * Prints goodput, its ratio to the summed tbf rates and to the summed measured single-path
 * TCP goodputs, and for fusion the resent bytes and the reorder buffer peak.
 *
 *   deno run -A bench/fusion.ts            (root; iproute2, iperf3, mptcpize for MPTCP)
 */

import { sleep } from "../lib/net/mod.ts";
import { netnsAvailable, TwoPathNet } from "../tests/_netns.ts";
import {
  benchPath,
  formatTable,
  hasCommand,
  listeningPort,
  logField,
  pollIntervalMs,
  type Proc,
  servicePath,
  sh,
  stopAll,
  watch,
} from "./_util.ts";

const deno = Deno.execPath();
const peerScript = benchPath("../tests/_fusion_peer.ts");
const env = { FUSION_TOKEN: `bench-${crypto.randomUUID()}` };
/** Each download is sized to take about this long at the nominal rate. */
const targetSeconds = Number(Deno.env.get("FUSION_BENCH_SECONDS") ?? 4);
const shapes: [number, number][] = [[50, 50], [80, 20]];

if (!netnsAvailable()) {
  console.error("bench/fusion.ts needs root and iproute2 (network namespaces)");
  Deno.exit(1);
}
const haveMptcpize = hasCommand("mptcpize");
const haveIperf = hasCommand("iperf3");
const field = logField;

interface Row {
  shape: string;
  what: string;
  mbps: number;
  ofNominal: number;
  ofTcpSum: number | null;
  resent: string;
  reorderPeak: string;
}

const net = await TwoPathNet.create(shapes[0]);
const procs: Proc[] = [];
const rows: Row[] = [];
const latencies: string[] = [];
try {
  // ---- MPTCP path manager: a second subflow from the second client address ----
  let mptcpReady = false;
  if (haveMptcpize && haveIperf) {
    try {
      for (const ns of [net.clientNs, net.serverNs]) {
        await sh("ip", [
          "-n",
          ns,
          "mptcp",
          "limits",
          "set",
          "subflow",
          "2",
          "add_addr_accepted",
          "2",
        ]);
      }
      const p2 = net.paths[1];
      await sh("ip", [
        "-n",
        net.clientNs,
        "mptcp",
        "endpoint",
        "add",
        p2.clientAddr,
        "dev",
        p2.clientDev,
        "subflow",
      ]);
      mptcpReady = true;
    } catch (err) {
      console.error(`MPTCP setup failed, skipping it: ${err}`);
    }
  }

  // ---- services ----
  const start = (ns: string, args: string[], name: string): Proc => {
    const w = watch(net.spawn(ns, deno, ["run", "-A", ...args], env), name);
    procs.push(w);
    return w;
  };
  const source = start(net.serverNs, [peerScript, "source", "0.0.0.0:0"], "source");
  const sourcePort = await listeningPort(source);
  /** A fusion-server in the server namespace in front of the source; resolves with its port. */
  const startServer = async (name: string, extra: string[]) => {
    const proc = start(net.serverNs, [
      servicePath("fusion-server.ts"),
      "--listen",
      "0.0.0.0:0",
      "--target",
      `127.0.0.1:${sourcePort}`,
      ...extra,
    ], name);
    return { proc, port: await listeningPort(proc) };
  };
  /** A fusion-client in the client namespace over `paths` (indexes) to the server on `port`. */
  const startClient = (name: string, port: number, paths: number[], extra: string[]) =>
    start(net.clientNs, [
      servicePath("fusion-client.ts"),
      "--listen",
      "127.0.0.1:0",
      ...extra,
      ...paths.flatMap((i) => [
        "--path",
        `${net.paths[i].clientAddr}>${net.paths[i].serverAddr}:${port}`,
      ]),
    ], name);
  const { proc: server, port: serverPort } = await startServer("fusion-server", []);
  const client2 = startClient("fusion-client-2", serverPort, [0, 1], []);
  const client1 = startClient("fusion-client-1", serverPort, [0], []);
  const c2Port = await listeningPort(client2);
  const c1Port = await listeningPort(client1);
  // The other schedulers, each with its own server (the server schedules downloads).
  const others: { name: string; server: Proc; client: Proc; port: number }[] = [];
  for (const name of ["rr", "random"]) {
    const srv = await startServer(`fusion-server-${name}`, ["--scheduler", name]);
    const cli = startClient(`fusion-client-${name}`, srv.port, [0, 1], ["--scheduler", name]);
    others.push({ name, server: srv.proc, client: cli, port: await listeningPort(cli) });
  }
  let iperfServer: Proc | undefined;
  const iperfPort = 5201 + Math.floor(Math.random() * 1000);
  if (haveIperf) {
    const args = ["-s", "-p", String(iperfPort), "--forceflush"];
    iperfServer = watch(
      mptcpReady
        ? net.spawn(net.serverNs, "mptcpize", ["run", "iperf3", ...args])
        : net.spawn(net.serverNs, "iperf3", args),
      "iperf3-server",
    );
    procs.push(iperfServer);
    await iperfServer.waitFor(/Server listening/);
  }

  /** Download `bytes` from `addr` inside the client namespace; returns Mbit/s. */
  const fetch = async (addr: string, bytes: number): Promise<number> => {
    const w = watch(
      net.spawn(net.clientNs, deno, ["run", "-A", peerScript, "fetch", addr, String(bytes)]),
      "fetch",
    );
    try {
      const line = await w.waitFor(/^result /, 300_000);
      const got = Number(field(line, "bytes"));
      if (got !== bytes) throw new Error(`fetch ${addr}: ${got} of ${bytes} bytes`);
      return got * 8 / (Number(field(line, "ms")) / 1000) / 1e6;
    } finally {
      await w.stop();
    }
  };

  /** The newest "session closed" line of a service after `before` lines. */
  const sessionLine = async (w: Proc, before: number): Promise<string> => {
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      const hit = w.lines.slice(before).reverse().find((l) => /msg="session closed"/.test(l));
      if (hit) return hit;
      await sleep(pollIntervalMs);
    }
    return "";
  };

  const iperf = async (addr: string, mptcp: boolean): Promise<number> => {
    const args = ["-c", addr, "-p", String(iperfPort), "-t", String(targetSeconds), "-R", "-J"];
    const cmd = mptcp ? ["mptcpize", "run", "iperf3", ...args] : ["iperf3", ...args];
    const out = await sh("ip", ["netns", "exec", net.clientNs, ...cmd]);
    const j = JSON.parse(out) as { end: { sum_received: { bits_per_second: number } } };
    return j.end.sum_received.bits_per_second / 1e6;
  };

  /** 1-byte round trips through `addr`'s echo, inside the client namespace. */
  const pingpong = async (addr: string): Promise<string> => {
    const w = watch(
      net.spawn(net.clientNs, deno, ["run", "-A", peerScript, "pingpong", addr, "300"]),
      "pingpong",
    );
    try {
      const line = await w.waitFor(/^result /, 60_000);
      return `${field(line, "p50")}/${field(line, "p99")}`;
    } finally {
      await w.stop();
    }
  };

  const mib = (n: number) => `${(n / 1048576).toFixed(2)} MiB`;
  for (const shape of shapes) {
    await net.shape(shape);
    const nominal = shape[0] + shape[1];
    const label = `${shape[0]}+${shape[1]}`;
    const bytesFor = (mbit: number) => Math.round(mbit * 1e6 / 8 * targetSeconds);
    /** A row; `of` is the rate(s) it is compared with: one path's, or both (the default). */
    const add = (
      what: string,
      mbps: number,
      tcpSum: number | null,
      resent = "",
      peak = "",
      of = nominal,
    ) =>
      rows.push({
        shape: label,
        what,
        mbps,
        ofNominal: mbps / of,
        ofTcpSum: tcpSum ? mbps / tcpSum : null,
        resent,
        reorderPeak: peak,
      });
    const tcp1 = await fetch(`${net.paths[0].serverAddr}:${sourcePort}`, bytesFor(shape[0]));
    const tcp2 = await fetch(`${net.paths[1].serverAddr}:${sourcePort}`, bytesFor(shape[1]));
    const tcpSum = tcp1 + tcp2;
    add(`TCP path 1 alone (${shape[0]} Mbit)`, tcp1, null, "", "", shape[0]);
    add(`TCP path 2 alone (${shape[1]} Mbit)`, tcp2, null, "", "", shape[1]);
    {
      const b1 = client1.lines.length;
      const bs = server.lines.length;
      const f1 = await fetch(`127.0.0.1:${c1Port}`, bytesFor(shape[0]));
      const cl = await sessionLine(client1, b1);
      const sl = await sessionLine(server, bs);
      add(
        "fusion, path 1 only",
        f1,
        tcp1,
        mib(Number(field(sl, "bytesResent") ?? 0)),
        mib(Number(field(cl, "reorderPeakBytes") ?? 0)),
        shape[0],
      );
    }
    for (
      const o of [{ name: "weighted", server, client: client2, port: c2Port }, ...others]
    ) {
      const b2 = o.client.lines.length;
      const bs = o.server.lines.length;
      const f2 = await fetch(`127.0.0.1:${o.port}`, bytesFor(nominal));
      const cl = await sessionLine(o.client, b2);
      const sl = await sessionLine(o.server, bs);
      add(
        `fusion, 2 paths (${o.name})`,
        f2,
        tcpSum,
        mib(Number(field(sl, "bytesResent") ?? 0)),
        mib(Number(field(cl, "reorderPeakBytes") ?? 0)),
      );
    }
    if (mptcpReady) {
      try {
        add(
          "kernel MPTCP, 2 subflows (iperf3)",
          await iperf(net.paths[0].serverAddr, true),
          tcpSum,
        );
      } catch (err) {
        console.error(`MPTCP run failed: ${err}`);
      }
    }
    {
      const tcpLat = await pingpong(`${net.paths[0].serverAddr}:${sourcePort}`);
      const fusionLat = await pingpong(`127.0.0.1:${c2Port}`);
      latencies.push(
        `${label}: 1-byte round trip p50/p99 ms: TCP path 1 ${tcpLat}, fusion 2 paths ${fusionLat}`,
      );
    }
    if (haveIperf) {
      try {
        const ip1 = await iperf(net.paths[0].serverAddr, false);
        add("iperf3 TCP path 1 (outside peer)", ip1, null, "", "", shape[0]);
      } catch (err) {
        console.error(`iperf3 run failed: ${err}`);
      }
    }
  }
} finally {
  await stopAll(procs.reverse());
  await net.destroy();
}

console.log(
  `\nfusion bench: downloads of ~${targetSeconds} s over two tbf-shaped veth paths ` +
    `(mptcpize ${haveMptcpize ? "present" : "MISSING"}, iperf3 ${
      haveIperf ? "present" : "MISSING"
    })`,
);
console.log(
  "ratio/nominal: goodput / tbf rate(s) (TCP goodput tops out near 0.95 of a tbf rate: headers)",
);
console.log("ratio/TCP sum: goodput / sum of the single-path TCP goodputs measured in this run\n");
console.log(formatTable(
  ["shape", "what", "Mbit/s", "ratio/nominal", "ratio/TCP sum", "resent", "reorder peak"],
  rows.map((r) => [
    r.shape,
    r.what,
    r.mbps.toFixed(1),
    r.ofNominal.toFixed(3),
    r.ofTcpSum === null ? "" : r.ofTcpSum.toFixed(3),
    r.resent,
    r.reorderPeak,
  ]),
  { style: "plain", align: ["left", "left"] },
));
if (latencies.length > 0) console.log(`\n${latencies.join("\n")}`);
