/**
 * `deno run -A bench/_survivors.ts INSPECT_PORT TARGET_PORT [COUNT] [--all]`: which allocation
 * sites of a process under `--inspect=127.0.0.1:INSPECT_PORT` survive the young generation (issue
 * 20); with `--all`, every allocation (what a connection allocates, collected or not).
 * Runs COUNT small exchanges (32 concurrent) to TARGET_PORT (a static listener to a
 * {@linkcode serveLengthSource}) while V8's sampling heap profiler counts what is live at the
 * end or collected only by a full GC (`includeObjectsCollectedByMajorGC`), not what a scavenge
 * took: the objects that were promoted. Prints bytes per connection by allocation site (the
 * innermost four frames). `--socks`: TARGET_PORT is a SOCKS5 port (depot-server's), and a
 * length source runs in this process.
 * @module
 */

import { inspector } from "./_cpuprof.ts";
import { concurrentRps, serveLengthSource, socksRoute, tcpRoute } from "./_util.ts";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface SampleNode {
  callFrame: CallFrame;
  selfSize: number;
  children: SampleNode[];
}
/** `HeapProfiler.stopSampling`'s result. */
interface Sampled {
  profile?: { head: SampleNode };
}

const all = Deno.args.includes("--all");
/** `--socks`: TARGET_PORT is a SOCKS5 proxy (plain depot); the length source runs here. */
const socks = Deno.args.includes("--socks");
const [inspectPort, targetPort, countArg] = Deno.args.filter((a) => !a.startsWith("--"));
const count = Number(countArg ?? 8000);
const { call, close } = await inspector("127.0.0.1", Number(inspectPort));
await call("HeapProfiler.enable");
await call("HeapProfiler.startSampling", {
  samplingInterval: 512,
  includeObjectsCollectedByMajorGC: true,
  includeObjectsCollectedByMinorGC: all,
});
let route = tcpRoute("target", Number(targetPort));
if (socks) {
  const source = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  serveLengthSource(source).catch(() => {
    // The process exits at the end: the source's loop ends with it.
  });
  route = socksRoute("target", Number(targetPort), source.addr.port);
}
await concurrentRps(route, count, 32);
const head = (await call("HeapProfiler.stopSampling") as Sampled | undefined)?.profile?.head;
close();
if (!head) throw new Error("no profile from the inspector");

const bySite = new Map<string, number>();
const walk = (node: SampleNode, stack: string[]) => {
  const f = node.callFrame;
  const here = `${f.functionName || "(anonymous)"} ${f.url.split("/").slice(-2).join("/")}:${
    f.lineNumber + 1
  }`;
  const frames = [here, ...stack].slice(0, 4);
  if (node.selfSize > 0) {
    const key = frames.join(" < ");
    bySite.set(key, (bySite.get(key) ?? 0) + node.selfSize);
  }
  for (const c of node.children) walk(c, frames);
};
walk(head, []);
const total = [...bySite.values()].reduce((a, b) => a + b, 0);
console.log(
  `${all ? "allocated" : "survived the young generation"}: ${
    (total / count / 1024).toFixed(2)
  } KB per connection`,
);
for (const [site, bytes] of [...bySite].sort((a, b) => b[1] - a[1]).slice(0, all ? 40 : 25)) {
  console.log(`${(bytes / count).toFixed(0).padStart(6)} B/conn  ${site}`);
}
if (socks) Deno.exit(0);
