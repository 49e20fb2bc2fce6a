/**
 * The CPU of seaprox's protocol code per connection, without sockets (issue 20): the SOCKS5
 * type's handshake and reply (lib/proxy socks5Proxy over lib/socks5), and the HTTP type's
 * CONNECT session (lib/proxy httpProxy over lib/http: head, dial, 200, relay to an upstream that
 * ends at once), and lib/socks5's client CONNECT (`socks5Connect`: what seaprox's SOCKS5 hops
 * and upstream proxy dial with), each on in-memory connections whose reads and writes settle
 * at once. What a change to these paths saves is a few µs of a ~250 µs connection, below what a socket A/B
 * (bench/_conn_ab.ts) resolves on a shared box; here the same work runs in a loop, this tree's
 * and `--old DIR`'s in alternating batches in one process, and the table gives CPU µs per
 * connection (user + system of the process, GC included), median of the rounds.
 *
 *   deno run -A bench/_proxy_handshake.ts --old DIR [--rounds 9] [--count 50000] [--only REGEX]
 *
 * `--only` keeps the kinds whose name matches (e.g. to profile one with `--inspect` and
 * bench/_cpuprof.ts).
 * @module
 */

import { cpuUsage } from "node:process";
import { benchFlags, fixed, median, ScriptedConn } from "./_util.ts";
import type * as ProxyMod from "../lib/proxy/mod.ts";
import type * as DeadlineMod from "../lib/net/deadline.ts";
import type * as Socks5Mod from "../lib/socks5/mod.ts";

const flags = benchFlags({ numbers: { rounds: 9, count: 50_000 }, strings: ["old", "only"] });

const greeting = Uint8Array.of(5, 1, 0);
const request = Uint8Array.of(5, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x90);
/** What a SOCKS5 server answers the client: "no auth", then success bound to 127.0.0.1:8080. */
const noAuth = Uint8Array.of(5, 0);
const succeeded = Uint8Array.of(5, 0, 0, 1, 127, 0, 0, 1, 0x1f, 0x90);
const connectHead = new TextEncoder().encode(
  "CONNECT 127.0.0.1:8080 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/8.5.0\r\n\r\n",
);
const client: Deno.NetAddr = { transport: "tcp", hostname: "127.0.0.1", port: 40000 };
const bound = { host: "127.0.0.1", port: 40001 };
const never = new AbortController().signal;

/** One tree's paths: run `count` connections of `kind`. */
interface Tree {
  name: string;
  run(kind: Kind, count: number): Promise<void>;
}

/** The paths measured. */
type Kind = "SOCKS5" | "HTTP CONNECT" | "SOCKS5 client";

async function load(name: string, dir: string): Promise<Tree> {
  const proxy = await import(`${dir}/lib/proxy/mod.ts`) as typeof ProxyMod;
  const socks5 = await import(`${dir}/lib/socks5/mod.ts`) as typeof Socks5Mod;
  // As serve() does for its listener: the shared deadline wheel keeps its timer between
  // connections (else each one starts and stops it, which a server never does).
  const wheel = await import(`${dir}/lib/net/deadline.ts`) as typeof DeadlineMod;
  releases.push(wheel.deadlines.hold());
  const socks = proxy.socks5Proxy();
  const http = proxy.httpProxy();
  if (socks.kind !== "address" || http.kind !== "session") throw new Error("proxy kinds moved");
  const conn = () => new proxy.ProxyConnection(1, "x", client);
  const base = {
    signal: never,
    abort: never,
    log: undefined as never,
    authenticate: undefined,
    socket: undefined as never,
  };
  return {
    name,
    async run(kind, count) {
      for (let i = 0; i < count; i++) {
        if (kind === "SOCKS5 client") {
          await socks5.socks5Connect(new ScriptedConn([noAuth, succeeded]), bound);
        } else if (kind === "SOCKS5") {
          const c = new ScriptedConn([greeting, request]);
          const req = await socks.handshake(c, { ...base, conn: conn() });
          await req.reply?.({ ok: true, bound });
        } else {
          await http.session(new ScriptedConn([connectHead]), {
            ...base,
            conn: conn(),
            idleTimeoutMs: 300_000,
            headTimeoutMs: 10_000,
            handshakeDone: () => {},
            connect: () =>
              Promise.resolve(Object.assign(new ScriptedConn([]), { remoteAddr: client })),
          });
        }
      }
    },
  };
}

/** CPU seconds (user + system) of this process so far, to the microsecond. */
function cpuSeconds(): number {
  const u = cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** Each tree's hold on its deadline wheel, let go at the end. */
const releases: (() => void)[] = [];
const trees = [await load("new", new URL("..", import.meta.url).pathname)];
if (flags.old) trees.push(await load("old", flags.old));
const kinds = (["SOCKS5", "HTTP CONNECT", "SOCKS5 client"] as const).filter((k) =>
  flags.only === undefined || new RegExp(flags.only).test(k)
);
const us = new Map<string, number[]>();
for (const t of trees) for (const k of kinds) await t.run(k, flags.count / 5); // warm up
// A round is `count` connections per tree and kind, run in 20 alternating batches: load from
// elsewhere on the box lands on both trees alike.
const batches = 20;
for (let round = 1; round <= flags.rounds; round++) {
  for (const k of kinds) {
    const spent = trees.map(() => 0);
    for (let b = 0; b < batches; b++) {
      for (const i of b % 2 === 0 ? trees.keys() : [...trees.keys()].reverse()) {
        const c0 = cpuSeconds();
        await trees[i].run(k, flags.count / batches);
        spent[i] += cpuSeconds() - c0;
      }
    }
    for (const [i, t] of trees.entries()) {
      const key = `${k} (${t.name})`;
      us.set(key, [...us.get(key) ?? [], spent[i] * 1e6 / flags.count]);
    }
  }
  console.error(`  round ${round} done`);
}
console.log(
  `CPU µs per connection of the protocol code (in-memory connections), median of ${flags.rounds} rounds (then each round)`,
);
for (const [key, xs] of us) {
  console.log(
    `${key.padEnd(24)} ${fixed(median(xs), 2).padStart(7)}   ${
      xs.map((x) => fixed(x, 2)).join(" ")
    }`,
  );
}
for (const k of kinds) {
  const a = us.get(`${k} (new)`), b = us.get(`${k} (old)`);
  if (!a || !b) continue;
  const ratios = a.map((x, i) => x / b[i]);
  console.log(
    `${k} new/old per round: median ${fixed(median(ratios), 3)}   ${
      ratios.map((x) => fixed(x, 2)).join(" ")
    }`,
  );
}
for (const release of releases) release();
