/**
 * Plain depot's CPU per connection by piece of work, beside the reverse floor's (issue 20):
 * reads CPU profiles written by `bench/_depot_prof.ts --out PREFIX` (with and without
 * `--floor`) and gives each sample to one piece: a syscall op by its kind (accept, read,
 * write, shutdown, close, connect: work the floor does too), GC, V8's own "(program)", or
 * else the innermost frame of our code above it (its own JS and the Deno runtime JS it
 * called: a promise, a timer, an AbortSignal), by what that code is for (the SOCKS5
 * handshake, the request's id and key, the standby spares, frames, logs and metrics,
 * deadlines, serve()'s tracking, the relay, ...).
 *
 * The profiler's time is wall time between samples: on a loaded box a process preempted in
 * a syscall (a write that wakes its peer) books the wait there, so the busy total is
 * 1.1-1.7x the process's CPU. Each piece is shown as its share of the profile's busy time
 * times the process's CPU µs per connection (user + system, from /proc), the median over
 * the files given; the raw profile µs beside it.
 *
 *   deno run -A bench/_depot_pieces.ts depot-server=prof.1.depot-server.cpuprofile@423,... \
 *     floor-server=floor.1.depot-server.cpuprofile@313,... [--n 4000]
 *
 * Each argument: a process label, `=`, comma-separated `FILE@CPU_US_PER_CONN` (one per round).
 * @module
 */

import type { CpuProfile } from "./_cpuprof.ts";
import { benchFlags } from "./_util.ts";

/** Which piece of work an op (a leaf `op_*` frame) is: the syscalls both paths make. */
const opPieces: [RegExp, string][] = [
  [/^op_net_accept/, "sys: accept (op)"],
  [/^op_read$|^op_net_recv/, "sys: read (op)"],
  [/^op_write/, "sys: write (op)"],
  [/^op_shutdown/, "sys: shutdown (op)"],
  [/^op_close/, "sys: close (op)"],
  [/^op_net_connect/, "sys: connect (op)"],
  [/^op_set_nodelay|^op_set_keepalive/, "sys: setsockopt (op)"],
  [/^op_now|^op_timer|^op_sleep/, "deadlines and timers"],
  [/^op_ffi/, "reset through FFI (dlopen)"],
];

/**
 * Our code by what it is for: the first rule matching `function file` wins, checked on the
 * innermost frame of ours first. `null` = look further out (a helper whose cost belongs to
 * its caller: the clock read for serve()'s activity tracking is serve()'s).
 */
const codePieces: [RegExp, string | null][] = [
  [/^clockMs net\/deadline\.ts/, null],
  [/^(writeAll|writeQuietly|closeQuietly|resetQuietly) net\/duplex\.ts/, null],
  [/bench\/floor_reverse\.ts$/, "the floor's own JS"],
  [/net\/(serve|live_list|ratelimit|shed)\.ts$/, "serve(): accept loop, tracking, limits"],
  [
    / (depot\/socks_front|socks5\/\w+)\.ts$|^(sendSocks5Reply|handleSocks|#checkSocksAuth) /,
    "SOCKS5",
  ],
  [/^(randomSecret|hexOf|equalFixedLength|#requestKey) /, "request id and key"],
  [
    /^(#requestDirect|DirectRequest|settle|fire|#answered|#outcomeOf|#failed|requestFrame|#ask|#request) depot\/server\.ts/,
    "request and answer (DirectRequest)",
  ],
  [
    /^(Standby|#holdStandby|#trimStandby|#standbyShare|#fairShare|#sharesChanged|done|giveUp|leftover|send) depot\/server\.ts|depot\/spares\.ts$|net\/pool\.ts$|^#watchStandby |^#dialServer |^#refill|^#spare/,
    "standby spares",
  ],
  [
    /(control\/\w+|depot\/compact|depot\/protocol|net\/reader|net\/bytes)\.ts$/,
    "frames: encode, decode, buffered reads",
  ],
  [/(lib\/log|lib\/stats|depot\/metrics|lib\/metrics|status\/\w+)\.ts$/, "logs, metrics, status"],
  [/net\/deadline\.ts$/, "deadlines and timers"],
  [/net\/(dial|abort)\.ts$/, "dial (timeout, abort)"],
  [/depot\/tunnel_end\.ts$|^gate depot/, "end confirmation (gate)"],
  [/net\/(relay|duplex|prefix)\.ts$|^(#relayGranted|#relayDone|relayDone|withPrefix) /, "relay"],
  [/^(#tunnel|handleTunnel) /, "tunnel accept, first frame"],
  [/^#handleConnect /, "local: request handler"],
  [/depot\/(server|local)\.ts$/, "depot other"],
  [/depot-(server|local)\.ts$/, "service"],
];

/** Piece of one profile node's stack (`stack` innermost first, as `function file`). */
function pieceOf(stack: string[]): string {
  const leaf = stack[0];
  if (leaf === "(garbage collector)") return "GC";
  if (leaf === "(program)") return "V8 (program)";
  if (leaf.startsWith("op_")) {
    for (const [re, piece] of opPieces) if (re.test(leaf)) return piece;
  }
  for (const frame of stack) {
    if (!/\.ts$/.test(frame)) continue; // Deno's runtime JS: its caller's piece
    for (const [re, piece] of codePieces) {
      if (!re.test(frame)) continue;
      if (piece === null) break; // a helper: its caller decides
      return piece;
    }
  }
  return leaf.startsWith("op_") ? "sys: other ops" : "Deno runtime JS (no caller of ours)";
}

/** Milliseconds per piece of `p`, and its busy total (all but idle). */
export function pieces(p: CpuProfile): { ms: Map<string, number>; busy: number } {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const memo = new Map<number, string>();
  const ms = new Map<string, number>();
  let busy = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const id = p.samples[i];
    if (byId.get(id)!.callFrame.functionName === "(idle)") continue;
    let piece = memo.get(id);
    if (piece === undefined) {
      const stack: string[] = [];
      for (let x: number | undefined = id; x !== undefined; x = parent.get(x)) {
        const f = byId.get(x)!.callFrame;
        // The file with its folder (lib/socks5/server.ts and lib/depot/server.ts differ).
        const file = f.url.split("/").slice(-2).join("/");
        stack.push(file ? `${f.functionName || "(anon)"} ${file}` : f.functionName);
      }
      piece = pieceOf(stack);
      memo.set(id, piece);
    }
    const d = (p.timeDeltas[i] ?? 0) / 1000;
    ms.set(piece, (ms.get(piece) ?? 0) + d);
    busy += d;
  }
  return { ms, busy };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

if (import.meta.main) {
  const flags = benchFlags({ numbers: { n: 4000 } }, Deno.args.filter((a) => a.startsWith("--")));
  const labels: string[] = [];
  const table = new Map<string, Map<string, number[]>>(); // piece -> label -> µs per round
  const raw = new Map<string, Map<string, number[]>>();
  const cpus = new Map<string, number[]>();
  for (const arg of Deno.args.filter((a) => !a.startsWith("--"))) {
    const [label, list] = arg.split("=");
    labels.push(label);
    const rounds = list.split(",").map((s) => {
      const at = s.lastIndexOf("@");
      return { file: s.slice(0, at), cpu: Number(s.slice(at + 1)) };
    });
    cpus.set(label, rounds.map((r) => r.cpu));
    for (const [i, r] of rounds.entries()) {
      const { ms, busy } = pieces(JSON.parse(Deno.readTextFileSync(r.file)) as CpuProfile);
      const all = new Set([...table.keys(), ...ms.keys()]);
      for (const piece of all) {
        const v = ms.get(piece) ?? 0;
        for (const [t, scaled] of [[table, v / busy * r.cpu], [raw, v * 1000 / flags.n]] as const) {
          if (!t.has(piece)) t.set(piece, new Map());
          const row = t.get(piece)!;
          if (!row.has(label)) row.set(label, []);
          const xs = row.get(label)!;
          while (xs.length < i) xs.push(0); // absent from an earlier round
          xs.push(scaled);
        }
      }
    }
  }
  const cell = (xs: number[] | undefined, want: number) => {
    const v = [...(xs ?? [])];
    while (v.length < want) v.push(0);
    return median(v);
  };
  const rows = [...table].map(([piece, by]) => ({
    piece,
    v: labels.map((l) => cell(by.get(l), cpus.get(l)!.length)),
    r: labels.map((l) => cell(raw.get(piece)!.get(l), cpus.get(l)!.length)),
  })).sort((a, b) => Math.max(...b.v) - Math.max(...a.v));
  console.log(
    `| piece | ${labels.map((l) => `${l} µs/conn`).join(" | ")} | ${
      labels.map((l) => `${l} raw`).join(" | ")
    } |`,
  );
  console.log(
    `| --- | ${labels.map(() => "---:").join(" | ")} | ${labels.map(() => "---:").join(" | ")} |`,
  );
  for (const { piece, v, r } of rows) {
    console.log(
      `| ${piece} | ${v.map((x) => x.toFixed(1)).join(" | ")} | ${
        r.map((x) => x.toFixed(0)).join(" | ")
      } |`,
    );
  }
  console.log(
    `| CPU (user+sys) | ${labels.map((l) => median(cpus.get(l)!).toFixed(0)).join(" | ")} | ${
      labels.map(() => "").join(" | ")
    } |`,
  );
}
