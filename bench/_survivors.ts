/**
 * `deno run -A bench/_survivors.ts INSPECT_PORT TARGET_PORT [COUNT]`: which allocation sites of
 * a process under `--inspect=127.0.0.1:INSPECT_PORT` survive the young generation (issue 20).
 * Runs COUNT small exchanges (32 concurrent) to TARGET_PORT (a static listener to a
 * {@linkcode serveLengthSource}) while V8's sampling heap profiler counts what is live at the
 * end or collected only by a full GC (`includeObjectsCollectedByMajorGC`), not what a scavenge
 * took: the objects that were promoted. Prints bytes per connection by allocation site (the
 * innermost four frames).
 * @module
 */

import { concurrentRps, tcpRoute } from "./_util.ts";

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
interface Reply {
  id: number;
  result?: { profile?: { head: SampleNode } };
}

const [inspectPort, targetPort, countArg] = Deno.args;
const count = Number(countArg ?? 8000);
const targets = await (await fetch(`http://127.0.0.1:${inspectPort}/json`)).json() as {
  webSocketDebuggerUrl: string;
}[];
const ws = new WebSocket(targets[0].webSocketDebuggerUrl);
await new Promise((resolve) => ws.onopen = resolve);
let lastId = 0;
const waiting = new Map<number, (r: Reply) => void>();
ws.onmessage = (e) => {
  const m = JSON.parse(e.data) as Reply;
  waiting.get(m.id)?.(m);
  waiting.delete(m.id);
};
const call = (method: string, params: Record<string, unknown> = {}) =>
  new Promise<Reply>((resolve) => {
    const id = ++lastId;
    waiting.set(id, resolve);
    ws.send(JSON.stringify({ id, method, params }));
  });

await call("HeapProfiler.enable");
await call("HeapProfiler.startSampling", {
  samplingInterval: 512,
  includeObjectsCollectedByMajorGC: true,
  includeObjectsCollectedByMinorGC: false,
});
await concurrentRps(tcpRoute("target", Number(targetPort)), count, 32);
const head = (await call("HeapProfiler.stopSampling")).result?.profile?.head;
ws.close();
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
  `survived the young generation: ${(total / count / 1024).toFixed(2)} KB per connection`,
);
for (const [site, bytes] of [...bySite].sort((a, b) => b[1] - a[1]).slice(0, 25)) {
  console.log(`${(bytes / count).toFixed(0).padStart(6)} B/conn  ${site}`);
}
