/**
 * A peer that never reads, through every spawned stack (depot plain and --mux, fusion,
 * tunnel), in both directions: the client pushes 256 MiB at a target that stops reading,
 * and a target pushes 256 MiB at a client that never reads. The sender must stall after a
 * bounded amount (socket buffers + mux window / fusion receive bound), and no service
 * process may buffer the difference: each one's RSS stays within a fixed margin.
 */

import { assert } from "./_assert.ts";
import { closeQuietly, type Duplex, writeAll } from "../lib/net/mod.ts";
import {
  pushUntilStalled,
  rssKiB,
  type Stack,
  startDepotStack,
  startFusionStack,
  startTunnelStack,
} from "./_soak.ts";

const MiB = 1024 * 1024;
const pushBytes = 256 * MiB;
/**
 * Growth of a service's RSS we accept while 256 MiB are held back: the largest legitimate
 * buffers on the way are a 16 MiB mux window, the fusion receive bound and socket-side
 * copies; V8's young generation and pooled relay buffers add a few MiB more.
 */
const rssMarginMiB = 80;
const enc = new TextEncoder();

/**
 * The target behind every stack. First bytes "S" (or an HTTP request for /source): write
 * endlessly and never read. Anything else: read that first chunk, then never read again.
 */
function startTarget(): { port: number; sourced: () => number; close(): Promise<void> } {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.TcpConn>();
  let sourced = 0;
  const serveOne = async (c: Deno.TcpConn) => {
    const first = new Uint8Array(4096);
    const n = await c.read(first);
    if (n === null) return;
    const text = new TextDecoder().decode(first.subarray(0, n));
    if (!text.startsWith("S") && !text.includes("/source")) return; // a hole from now on
    if (text.includes("HTTP/1.1")) {
      await writeAll(c, enc.encode(`HTTP/1.1 200 OK\r\nContent-Length: ${pushBytes * 2}\r\n\r\n`));
    }
    const chunk = new Uint8Array(1 << 20);
    while (true) {
      await writeAll(c, chunk);
      sourced += chunk.length;
    }
  };
  const loop = (async () => {
    try {
      for await (const c of l) {
        conns.add(c);
        serveOne(c).catch(() => {
          // Closed at the end of the test.
        });
      }
    } catch {
      // listener closed
    }
  })();
  return {
    port: (l.addr as Deno.NetAddr).port,
    sourced: () => sourced,
    async close() {
      closeQuietly(l);
      await loop;
      for (const c of conns) closeQuietly(c);
    },
  };
}

function rssMiB(stack: Stack): Record<string, number> {
  return Object.fromEntries(
    Object.entries(stack.procs).map(([k, p]) => [k, rssKiB(p.child.pid) / 1024]),
  );
}

function checkRss(label: string, before: Record<string, number>, after: Record<string, number>) {
  for (const [k, b] of Object.entries(before)) {
    const grew = after[k] - b;
    console.log(`  ${label} ${k}: RSS ${b.toFixed(0)} -> ${after[k].toFixed(0)} MiB`);
    assert(grew < rssMarginMiB, `${label}: ${k} RSS grew ${grew.toFixed(0)} MiB`);
  }
}

async function neverReads(stack: Stack, target: ReturnType<typeof startTarget>, http: boolean) {
  // Upload: the target reads the first chunk and then nothing.
  const before = rssMiB(stack);
  const up = await stack.open();
  let c: Duplex = up;
  try {
    if (http) {
      await writeAll(
        up,
        enc.encode(`POST /hole HTTP/1.1\r\nHost: app.test\r\nContent-Length: ${pushBytes}\r\n\r\n`),
      );
    } else await writeAll(up, enc.encode("H"));
    const r = await pushUntilStalled(up, pushBytes);
    const after = rssMiB(stack);
    console.log(
      `${stack.name} upload to a target that never reads: sender stalled=${r.stalled} after ` +
        `${(r.written / MiB).toFixed(1)} MiB of ${pushBytes / MiB}`,
    );
    assert(r.stalled, `${stack.name}: all ${pushBytes / MiB} MiB were accepted`);
    checkRss(`${stack.name} upload`, before, after);
  } finally {
    closeQuietly(c);
  }
  // Download: the target writes endlessly, the client never reads.
  const before2 = rssMiB(stack);
  const sourcedBefore = target.sourced();
  c = await stack.open();
  try {
    await writeAll(c, enc.encode(http ? "GET /source HTTP/1.1\r\nHost: app.test\r\n\r\n" : "S"));
    let last = -1;
    for (let i = 0; i < 100 && target.sourced() !== last; i++) {
      last = target.sourced();
      await new Promise((r) => setTimeout(r, 1_000));
    }
    const sent = target.sourced() - sourcedBefore;
    const after = rssMiB(stack);
    console.log(
      `${stack.name} download to a client that never reads: target stalled after ` +
        `${(sent / MiB).toFixed(1)} MiB`,
    );
    assert(sent < pushBytes, `${stack.name}: the target sent ${sent / MiB} MiB unhindered`);
    checkRss(`${stack.name} download`, before2, after);
  } finally {
    closeQuietly(c);
  }
}

for (
  const [name, start, http] of [
    ["depot", (p: number) => startDepotStack(p), false],
    ["depot --mux", (p: number) => startDepotStack(p, { mux: true }), false],
    ["fusion", (p: number) => startFusionStack(p), false],
    ["tunnel", (p: number) => startTunnelStack(p), true],
  ] as const
) {
  Deno.test(`never reads: ${name} bounds what it buffers both ways`, async () => {
    const target = startTarget();
    const stack = await start(target.port);
    try {
      await neverReads(stack, target, http);
    } finally {
      await stack.stop();
      await target.close();
    }
  });
}
