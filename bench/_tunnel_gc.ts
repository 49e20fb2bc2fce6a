/**
 * `deno run -A bench/_tunnel_gc.ts --trees 'new=DIR,old=DIR' [--rounds 5] [--seconds 4]
 * [--keep] [--each]`: what tunnel-server's and tunnel-client's young-generation GCs keep per
 * request, for several checkouts in one run (issue 20), as bench/_depot_gc.ts does for depot.
 * nginx answers `hello world` (the origin); per tree a tunnel-server and a tunnel-client (raw
 * transport) run with V8's `--trace-gc-nvp`; each round drives each tree once with
 * `wrk -t2 -c50` for `--seconds`, every request on a public connection of its own
 * (`Connection: close`; `--keep`: kept-alive connections instead), trees in alternating order,
 * and keeps that round's scavenges. Per tree and process: CPU µs per request (median of the
 * rounds), and per request the bytes that survived a scavenge, the bytes promoted and the
 * scavenge pause (wall: on a loaded box it includes waiting for a core; compare the bytes
 * first). `--each`: every GC of each server in the last round, mark-compacts among them. A tree
 * `name=DIR:FLAG+FLAG` runs its services with those V8 flags too (`--no-allocation-site-pretenuring`).
 * @module
 */

import {
  benchFlags,
  benchTrees,
  gcEachLines,
  type GcLine,
  gcRow,
  gcTraceLines,
  logField,
  type Proc,
  procCpuSeconds,
  roundOrder,
  spawnTraced,
  startHelloNginx,
  stopAll,
  wrk,
} from "./_util.ts";

const flags = benchFlags({
  numbers: { rounds: 5, seconds: 4, warmup: 3 },
  booleans: ["keep", "each"],
  strings: ["trees"],
});
const trees = benchTrees(flags.trees, `this=${new URL("..", import.meta.url).pathname}`, ":");
const sides = ["server", "client"] as const;
const startTimeoutMs = 60_000;

interface Path {
  name: string;
  /** tunnel-server, tunnel-client. */
  procs: [Proc, Proc];
  url: string;
}

const nginx = await startHelloNginx("warren-tunnel-gc-");
const procs: Proc[] = [nginx.proc];
try {
  const paths: Path[] = [];
  for (const tree of trees) {
    const id = `gc-bench-${crypto.randomUUID()}`;
    const v8 = `--v8-flags=--trace-gc-nvp${tree.extra ? `,${tree.extra}` : ""}`;
    const server = spawnTraced(
      `${tree.dir}/services/tunnel-server.ts`,
      [
        ...["--listen", "127.0.0.1:0", "--host", "app.test=env:BENCH_ID", "--log-level", "info"],
      ],
      v8,
      { env: { BENCH_ID: id }, name: `tunnel-server ${tree.name}` },
    );
    procs.push(server);
    // Not listeningPort(): its 20 s wait is too short for five trees starting on a loaded box.
    const addr = logField(
      await server.waitFor(/msg="listening" name=http /, startTimeoutMs),
      "addr",
    );
    const port = Number(addr?.slice(addr.lastIndexOf(":") + 1));
    const client = spawnTraced(
      `${tree.dir}/services/tunnel-client.ts`,
      [
        ...["--server", `http://127.0.0.1:${port}`, "--local", `127.0.0.1:${nginx.port}`],
        ...["--log-level", "info"],
      ],
      v8,
      { env: { TUNNEL_IDENTIFIER: id }, name: `tunnel-client ${tree.name}` },
    );
    procs.push(client);
    await client.waitFor(/msg="connected"/, startTimeoutMs);
    paths.push({ name: tree.name, procs: [server, client], url: `http://127.0.0.1:${port}` });
  }
  const headers = flags.keep ? [] : ["Connection: close"];
  const load = (p: Path, seconds: number) =>
    wrk(`${p.url}/hello`, { seconds, host: "app.test", headers });
  for (const p of paths) await load(p, flags.warmup);
  /** Per path, per process: CPU µs/request of each round, and the round's scavenges. */
  const cpu = paths.map(() => sides.map(() => [] as number[]));
  const gcs = paths.map(() => sides.map(() => [] as GcLine[]));
  const requests = paths.map(() => 0);
  const lastRound = paths.map(() => [] as GcLine[]);
  for (let round = 1; round <= flags.rounds; round++) {
    for (const [i, p] of roundOrder(paths, round)) {
      const from = p.procs.map((q) => q.lines.length);
      const before = p.procs.map((q) => procCpuSeconds([q]));
      const r = await load(p, flags.seconds);
      if (r.non2xx || r.errors) console.error(`${p.name}: ${r.non2xx} non-2xx, ${r.errors} errors`);
      requests[i] += r.requests;
      p.procs.forEach((q, j) => {
        cpu[i][j].push((procCpuSeconds([q]) - before[j]) * 1e6 / r.requests);
        const lines = gcTraceLines(q.lines.slice(from[j]));
        gcs[i][j].push(...lines.filter((g) => g.gc === "s"));
        if (j === 0 && round === flags.rounds) lastRound[i] = lines;
      });
    }
    console.error(`  round ${round} done`);
  }
  console.log(
    `tunnel ${
      flags.keep ? "kept-alive requests" : "new connections"
    }, wrk -t2 -c50 ${flags.seconds} s x ${flags.rounds} rounds: CPU µs/req (median), per request: scavenges' survived and ` +
      "promoted bytes, pause µs",
  );
  for (const [i, p] of paths.entries()) {
    for (const [j, side] of sides.entries()) {
      console.log(gcRow(p.name, side, cpu[i][j], gcs[i][j], requests[i], 4));
    }
  }
  if (flags.each) {
    for (const line of gcEachLines(paths.map((p, i) => ({ name: p.name, gcs: lastRound[i] })))) {
      console.log(line);
    }
  }
} finally {
  await stopAll(procs, "SIGKILL"); // a bench: no drain to wait for
  Deno.removeSync(nginx.dir, { recursive: true });
}
