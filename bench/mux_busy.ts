/**
 * `deno run -A bench/mux_busy.ts [--samples 100] [--chains 8] [--work-us 20] [--old DIR]`: the
 * lib/mux writer's worst case (issue 20). The writer yields microtasks until 8 in a row bring
 * no frame, so everything a turn queues leaves in one transport write; on a process whose
 * event loop is busy with microtask work, a lone small write waits for those yields. Measured:
 * the time from a lone 8-byte `write()` on an idle stream to the transport write that carries
 * it, and how many rounds of the other work ran in between, in four cases:
 *
 * - idle: nothing else runs;
 * - macrotask work: `--chains` loops of `--work-us` µs of work and a `setTimeout(0)` each;
 * - microtask work: the same loops awaiting a resolved promise instead (a turn that lasts);
 * - microtask work that writes: the same loops each writing 64 bytes on a stream of their
 *   own every round (a turn that keeps queueing frames: the writer's longest wait).
 *
 * Both sessions run in this process over loopback TCP; the transport write is timed when the
 * session calls it. `--old DIR` measures another checkout's lib/mux beside this one, in
 * alternating order. Not a test: numbers are as measured on a shared machine.
 * @module
 */

import { benchFlags, fixed, median } from "./_util.ts";

interface MuxStream {
  write(p: Uint8Array): Promise<number>;
  read(p: Uint8Array): Promise<number | null>;
  close(): void;
}
interface MuxSession {
  open(): Promise<MuxStream>;
  accept(): Promise<MuxStream | null>;
  close(): Promise<void>;
}
interface MuxModule {
  Session: {
    client(conn: Watched, o: object): MuxSession;
    server(conn: Deno.Conn, o: object): MuxSession;
  };
}

const flags = benchFlags({
  numbers: { samples: 100, chains: 8, "work-us": 20 },
  strings: ["old"],
});

/** Rounds of other work done so far (every chain's every round). */
let rounds = 0;
/** Transport writes so far; the time and the rounds count at the last one. */
let writes = 0, lastWriteMs = 0, lastWriteRounds = 0;

/** A transport that notes when the session writes to it (`inner`: found by noDelay). */
class Watched {
  constructor(readonly inner: Deno.TcpConn) {}
  read(p: Uint8Array): Promise<number | null> {
    return this.inner.read(p);
  }
  write(p: Uint8Array): Promise<number> {
    writes++;
    lastWriteMs = performance.now();
    lastWriteRounds = rounds;
    return this.inner.write(p);
  }
  closeWrite(): Promise<void> {
    return this.inner.closeWrite();
  }
  close(): void {
    this.inner.close();
  }
}

function spin(us: number): void {
  const end = performance.now() + us / 1000;
  while (performance.now() < end) { /* the other work */ }
}

type Kind = "idle" | "macrotask" | "microtask" | "microtask + writes";
const kinds: Kind[] = ["idle", "macrotask", "microtask", "microtask + writes"];

async function measure(mux: MuxModule, kind: Kind): Promise<{ ms: number[]; rounds: number[] }> {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const [a, b] = await Promise.all([
    Deno.connect({ hostname: "127.0.0.1", port: l.addr.port }),
    l.accept(),
  ]);
  l.close();
  const opts = { keepaliveIntervalMs: 0 };
  const client = mux.Session.client(new Watched(a), opts);
  const server = mux.Session.server(b, opts);
  // The peer reads and discards every stream.
  const draining = (async () => {
    for (let s = await server.accept(); s; s = await server.accept()) {
      const buf = new Uint8Array(64 * 1024);
      (async () => {
        while (await s.read(buf) !== null) { /* discard */ }
      })().catch(() => {/* reset at the end: nothing to keep */});
    }
  })();
  const lone = await client.open();
  const others = await Promise.all(
    Array.from({ length: flags.chains }, () => client.open()),
  );
  const small = new Uint8Array(8), chunk = new Uint8Array(64);
  const ms: number[] = [], rs: number[] = [];
  for (let i = 0; i < flags.samples; i++) {
    let running = true;
    const chains = kind === "idle" ? [] : others.map(async (s) => {
      while (running) {
        spin(flags["work-us"]);
        rounds++;
        if (kind === "macrotask") await new Promise((r) => setTimeout(r, 0));
        else if (kind === "microtask") await null;
        else await s.write(chunk);
      }
    });
    await null; // the chains are under way
    const w0 = writes, r0 = rounds, t0 = performance.now();
    lone.write(small);
    // The lone frame leaves in the first transport write after it (nothing else is queued
    // before it in the idle and microtask cases; with writes, theirs share that write).
    while (writes === w0) {
      await (kind === "macrotask" ? new Promise((r) => setTimeout(r, 0)) : null);
    }
    ms.push(lastWriteMs - t0);
    rs.push(lastWriteRounds - r0);
    running = false;
    await Promise.all(chains);
    await new Promise((r) => setTimeout(r, 1)); // let the writes drain
  }
  for (const s of [lone, ...others]) s.close();
  await client.close();
  await server.close();
  await draining;
  return { ms, rounds: rs };
}

const trees: [string, MuxModule][] = [["new", await import("../lib/mux/mod.ts") as MuxModule]];
if (flags.old) {
  trees.push(["old", await import(`${Deno.realPathSync(flags.old)}/lib/mux/mod.ts`) as MuxModule]);
}
console.log(
  `lone 8-byte write → its transport write: ${flags.samples} samples, ${flags.chains} chains of ` +
    `${flags["work-us"]} µs work per round`,
);
console.log(
  `${"case".padEnd(22)}${"tree".padEnd(6)}${"p50 ms".padStart(9)}${"max ms".padStart(9)}` +
    `${"p50 rounds".padStart(12)}${"max rounds".padStart(12)}`,
);
for (const kind of kinds) {
  for (const [name, mux] of trees) {
    const r = await measure(mux, kind);
    console.log(
      `${kind.padEnd(22)}${name.padEnd(6)}${fixed(median(r.ms), 3).padStart(9)}${
        fixed(Math.max(...r.ms), 3).padStart(9)
      }${fixed(median(r.rounds)).padStart(12)}${fixed(Math.max(...r.rounds)).padStart(12)}`,
    );
  }
}
