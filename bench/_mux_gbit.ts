/**
 * `deno run -A bench/_mux_gbit.ts --trees 'a=DIR,b=DIR:K=V+K=V' [--mbit 1000] [--rounds 5]
 * [--secs 4] [--queue-ms 20] [--gap-ms 10]` (root: a network namespace): one lib/mux bulk stream
 * over a veth shaped with `tc tbf` (1 Gbit by default, about 119 MiB/s: below lib/mux's 128 MiB/s
 * "slow" verdict, bench/RESULTS.md mlow), tree against tree, and small answers beside it. The
 * sending end is each tree's tests/_mux_shaped_peer.ts in the namespace (an endless download in
 * 4 MiB writes; `:K=V+K=V` after a tree's directory is extra environment for it: a scratch
 * variant switched by environment); this process (this checkout's lib/mux) reads the download and,
 * after a one-second warm-up (the drain verdict is taken by then), for `--secs` seconds asks one
 * 1 KiB answer after another on other streams of the session, `--gap-ms` apart. Per tree, medians
 * over the rounds: the download's rate, the sender's and this receiver's CPU seconds per GiB
 * (schedstat of their threads), the answers' p50 / p90 / max ms and the download bytes that came
 * ahead of the median answer, and the sender's TCP_NOTSENT_LOWAT at the end (its verdict: 65536
 * slow, 1 MiB fast, 262144... as configured). `--queue-ms` is tbf's `latency` (the shaper's queue:
 * 20 ms as tests/_netns.ts has it holds 2.5 MB at 1 Gbit, ahead of every answer whatever the
 * sender does). Trees alternate round by round. Not a test: numbers as measured.
 * @module
 */
import { Session } from "../lib/mux/mod.ts";
import { closeQuietly } from "../lib/net/mod.ts";
import { shapedNamespace } from "../tests/_netns.ts";
import {
  countReads,
  peerLowat,
  readText,
  shapedPeerPort,
  startShapedPeer,
  stopShapedPeer,
} from "../tests/_mux_shaped.ts";
import { benchFlags, benchTrees, fixed, formatTable, median, sh, threadRunNs } from "./_util.ts";

const flags = benchFlags({
  numbers: { mbit: 1000, rounds: 5, secs: 4, "queue-ms": 20, "gap-ms": 10 },
  strings: ["trees"],
});
const trees = benchTrees(flags.trees, `this=${new URL("..", import.meta.url).pathname}`, ":");

/** On-CPU ns of this process's own threads (not its children's). */
function selfRunNs(): number {
  let sum = 0;
  for (const t of Deno.readDirSync("/proc/self/task")) {
    try {
      sum += Number(Deno.readTextFileSync(`/proc/self/task/${t.name}/schedstat`).split(" ")[0]);
    } catch {
      // ended between the listing and the read
    }
  }
  return sum;
}

/** tbf on both ends of the namespace's veth: `mbit`, a burst of ~10 ms, a queue of `queueMs`. */
async function shape(ns: string, mbit: number, queueMs: number): Promise<void> {
  const burstKb = Math.max(32, Math.ceil(mbit / 8 * 10));
  const tbf = ["tbf", "rate", `${mbit}mbit`, "burst", `${burstKb}kb`, "latency", `${queueMs}ms`];
  await sh("tc", ["-n", ns, "qdisc", "replace", "dev", `${ns}n`, "root", ...tbf]);
  await sh("tc", ["qdisc", "replace", "dev", `${ns}h`, "root", ...tbf]);
}

interface Row {
  mbps: number;
  sendS: number;
  recvS: number;
  p50: number;
  p90: number;
  max: number;
  aheadMB: number;
  lowat: number;
}

/** One round of `tree`: a fresh namespace, peer and session. */
async function once(dir: string, extra: string, r: number): Promise<Row> {
  const subnet = `198.18.${100 + (Deno.pid + r) % 150}`;
  const net = await shapedNamespace(
    `wmg${Deno.pid % 100000}`,
    `${subnet}.1`,
    `${subnet}.2`,
    flags.mbit,
  );
  let peer: Deno.ChildProcess | undefined;
  try {
    await shape(net.ns, flags.mbit, flags["queue-ms"]);
    const env: Record<string, string> = {};
    for (const kv of extra.split(",").filter(Boolean)) {
      const [k, v = ""] = kv.split(/=(.*)/s);
      env[k] = v;
    }
    peer = startShapedPeer(net.ns, { dir, env });
    const port = await shapedPeerPort(peer);
    const conn = await Deno.connect({ hostname: `${subnet}.2`, port });
    const session = Session.client(conn, { keepaliveIntervalMs: 0 });
    const download = await session.open({ data: new Uint8Array([98]) });
    const bulk = countReads(download);
    await new Promise((res) => setTimeout(res, 1000));
    const b0 = bulk.bytes, t0 = performance.now();
    const s0 = threadRunNs(peer.pid), r0 = selfRunNs();
    const ms: number[] = [];
    const ahead: number[] = [];
    while (performance.now() - t0 < flags.secs * 1000) {
      const a = bulk.bytes, t = performance.now();
      await readText(await session.open({ data: new Uint8Array([115]), fin: true }));
      ms.push(performance.now() - t);
      ahead.push(bulk.bytes - a);
      await new Promise((res) => setTimeout(res, flags["gap-ms"]));
    }
    const s1 = threadRunNs(peer.pid), r1 = selfRunNs();
    const bytes = bulk.bytes - b0, secs = (performance.now() - t0) / 1000;
    const lowat = await peerLowat(session);
    bulk.stopped = true;
    await session.close();
    closeQuietly(download);
    await bulk.done;
    const gib = bytes / (1 << 30);
    ms.sort((x, y) => x - y);
    return {
      mbps: bytes / 1e6 / secs,
      sendS: (s1 - s0) / 1e9 / gib,
      recvS: (r1 - r0) / 1e9 / gib,
      p50: ms[Math.floor(ms.length / 2)],
      p90: ms[Math.floor(ms.length * 0.9)],
      max: ms[ms.length - 1],
      aheadMB: median(ahead) / 1e6,
      lowat,
    };
  } finally {
    await stopShapedPeer(peer);
    await net.destroy();
  }
}

const rows = new Map<string, Row[]>(trees.map((t) => [t.name, []]));
for (let r = 0; r < flags.rounds; r++) {
  const order = r % 2 === 0 ? trees : [...trees].reverse();
  for (const t of order) {
    const row = await once(t.dir, t.extra, r);
    rows.get(t.name)!.push(row);
    console.log(
      `round ${r + 1} ${t.name}: ${fixed(row.mbps, 0)} MB/s, send ${fixed(row.sendS, 3)} + recv ${
        fixed(row.recvS, 3)
      } s/GiB, answers p50 ${fixed(row.p50, 1)} p90 ${fixed(row.p90, 1)} max ${
        fixed(row.max, 1)
      } ms, ${fixed(row.aheadMB, 2)} MB ahead, lowat ${row.lowat}`,
    );
  }
}
const med = (xs: Row[], k: keyof Row) => median(xs.map((x) => x[k]));
console.log(
  `\n${flags.mbit} Mbit tbf (queue ${
    flags["queue-ms"]
  } ms), ${flags.secs} s x ${flags.rounds} rounds, ` +
    `load ${Deno.loadavg().map((x) => x.toFixed(2)).join(" ")}; medians over the rounds`,
);
console.log(formatTable(
  [
    "tree",
    "MB/s",
    "send s/GiB",
    "recv s/GiB",
    "answer p50 ms",
    "p90",
    "max",
    "MB ahead (p50)",
    "lowat at end",
  ],
  trees.map((t) => {
    const xs = rows.get(t.name)!;
    return [
      t.extra ? `${t.name} (${t.extra})` : t.name,
      fixed(med(xs, "mbps"), 0),
      fixed(med(xs, "sendS"), 3),
      fixed(med(xs, "recvS"), 3),
      fixed(med(xs, "p50"), 1),
      fixed(med(xs, "p90"), 1),
      fixed(med(xs, "max"), 1),
      fixed(med(xs, "aheadMB"), 2),
      xs.map((x) => x.lowat).join(" "),
    ];
  }),
));
