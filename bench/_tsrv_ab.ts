/**
 * tunnel-server's on-CPU µs per request of several trees in one run (issue 20):
 * `deno run -A bench/_tsrv_ab.ts --trees 'new=DIR,old=DIR' [--close] [--rounds 9]
 * [--seconds 3] [--together]`. Each tree runs its own tunnel-server and tunnel-client (the
 * client of this checkout for every tree, so only the server differs) to one nginx origin;
 * every round loads each tree's server once with `wrk -t2 -c50` on GET /hello (`--close`:
 * `Connection: close`, every request a new public connection), in alternating order
 * (`--together`: all trees at once, one wrk each, so a burst of load from elsewhere lands on
 * all alike). The figure is the server's threads' on-CPU time (schedstat, ns) per request, and
 * the client's beside it; the table gives each tree's median and its median [min-max]
 * same-round ratio to the first tree, by which a change is told from noise (bench/tunnel.ts's
 * rows move by 10-30 % per round on a shared box).
 * @module
 */

import {
  benchFlags,
  benchPath,
  benchTrees,
  listeningPort,
  median,
  type Proc,
  spawnDeno,
  startHelloNginx,
  startTunnelClient,
  stopAll,
  threadRunNs,
  wrkHello,
} from "./_util.ts";

const flags = benchFlags({
  numbers: { rounds: 9, seconds: 3 },
  booleans: ["close", "together"],
  strings: ["trees"],
});
const thisTree = benchPath("..").replace(/\/$/, "");
const trees = benchTrees(flags.trees, `new=${thisTree}`);

const nginx = await startHelloNginx("warren-tsrv-nginx-");
const procs: Proc[] = [nginx.proc];

/** One tree's server and client, and what each round measured. */
interface Side {
  name: string;
  port: number;
  server: Proc;
  client: Proc;
  serverUs: number[];
  clientUs: number[];
  rps: number[];
}

/** Load `s` for `seconds` and note its server's and client's CPU per request. */
async function measure(s: Side, seconds: number): Promise<void> {
  const s0 = threadRunNs(s.server.child.pid), c0 = threadRunNs(s.client.child.pid);
  const n = await wrkHello(s.port, seconds, flags.close);
  const s1 = threadRunNs(s.server.child.pid), c1 = threadRunNs(s.client.child.pid);
  s.serverUs.push((s1 - s0) / 1000 / Math.max(1, n));
  s.clientUs.push((c1 - c0) / 1000 / Math.max(1, n));
  s.rps.push(n / seconds);
}

const sides: Side[] = [];
try {
  for (const t of trees) {
    const id = `tsrv-${t.name}-` + crypto.randomUUID();
    const server = spawnDeno(`${t.dir}/services/tunnel-server.ts`, [
      "--listen",
      "127.0.0.1:0",
      "--host",
      "v.test=env:TSRV_ID",
      "--log-level",
      "info",
    ], { env: { TSRV_ID: id } });
    procs.push(server);
    const port = await listeningPort(server, "http");
    // This checkout's client for every tree: only the server differs.
    const client = await startTunnelClient(thisTree, port, nginx.port, id, procs);
    sides.push({ name: t.name, port, server, client, serverUs: [], clientUs: [], rps: [] });
  }
  for (const s of sides) await wrkHello(s.port, 2, flags.close); // warm-up
  for (let r = 0; r < flags.rounds; r++) {
    if (flags.together) {
      await Promise.all(sides.map((s) => measure(s, flags.seconds)));
    } else {
      const order = r % 2 === 0 ? sides : [...sides].reverse();
      for (const s of order) await measure(s, flags.seconds);
    }
    console.error(`  round ${r + 1} of ${flags.rounds} done`);
  }
  const first = sides[0];
  const ratios = (a: number[], b: number[]) => a.map((v, i) => v / b[i]);
  const range = (a: number[]) =>
    `${median(a).toFixed(3)} [${Math.min(...a).toFixed(2)}-${Math.max(...a).toFixed(2)}]`;
  console.log(
    `tunnel-server CPU per ${flags.close ? "new connection" : "kept-alive request"}, ` +
      `${flags.rounds} rounds of ${flags.seconds} s${flags.together ? ", together" : ""}`,
  );
  console.log(
    "tree        rps   server µs   client µs   server / first (same round)   each round's server µs",
  );
  for (const s of sides) {
    console.log(
      `${s.name.padEnd(8)} ${median(s.rps).toFixed(0).padStart(6)} ${
        median(s.serverUs).toFixed(1).padStart(11)
      } ${median(s.clientUs).toFixed(1).padStart(11)}   ${
        (s === first ? "-" : range(ratios(s.serverUs, first.serverUs))).padEnd(28)
      }  ${s.serverUs.map((v) => v.toFixed(0)).join(" ")}`,
    );
  }
} finally {
  await stopAll(procs);
  Deno.removeSync(nginx.dir, { recursive: true });
}
