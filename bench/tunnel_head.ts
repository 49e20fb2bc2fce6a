/**
 * The standalone tunnel front's work on one small request head, without sockets (issue 20):
 * read the head from a buffered reader, check Host and target, find the body framing and the
 * Connection tokens, add X-Forwarded-* and serialise what goes on the tunnel stream (the steps
 * of front_http.ts's `#request`). `deno run -A bench/tunnel_head.ts`; with `BENCH_OLD=DIR`
 * the same steps of another checkout run beside, for a before/after in one run.
 * @module
 */

import { cpuUsage } from "node:process";

type Lib = {
  net: typeof import("../lib/net/mod.ts");
  http: typeof import("../lib/http/mod.ts");
  fwd: typeof import("../lib/tunnel/forward.ts");
  leg: typeof import("../lib/tunnel/front_leg.ts");
};
const load = async (root: string): Promise<Lib> => ({
  net: await import(`${root}/lib/net/mod.ts`),
  http: await import(`${root}/lib/http/mod.ts`),
  fwd: await import(`${root}/lib/tunnel/forward.ts`),
  leg: await import(`${root}/lib/tunnel/front_leg.ts`),
});

const enc = new TextEncoder();
/** What wrk sends, and what a browser-like client sends. */
const heads: Record<string, string> = {
  wrk: "GET /hello HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
  browser: "GET /assets/app.js?v=3 HTTP/1.1\r\nHost: app.example.test\r\n" +
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\n" +
    "Accept: */*\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n" +
    "Referer: http://app.example.test/\r\nConnection: keep-alive\r\n" +
    "Cookie: session=abcdef0123456789; theme=dark\r\n\r\n",
};
const peer = { ip: "127.0.0.1", remote: "127.0.0.1:50000" };

const trees: [string, Lib][] = [[
  "new",
  await load(new URL("..", import.meta.url).href.replace(/\/$/, "")),
]];
const old = Deno.env.get("BENCH_OLD");
if (old) trees.push(["old", await load(`file://${old}`)]);

/** One run of the steps for `bytes` on `lib`. */
function steps(lib: Lib, bytes: Uint8Array): () => Promise<void> {
  const { net, http, fwd, leg } = lib;
  const src = { read: (p: Uint8Array) => (p.set(bytes), Promise.resolve(bytes.length)) };
  const r = new net.BufferedReader(src, 4096);
  // A tree from before the splice (no readRequestHeadRawWithin) serialises every head.
  const rawRead = (http as Partial<typeof http>).readRequestHeadRawWithin;
  const splice = (fwd as Partial<typeof fwd>).forwardHeadBytes;
  return async () => {
    let head, raw;
    if (rawRead) {
      const read = await rawRead(r, 30_000, () => {});
      head = read?.head, raw = read?.raw;
    } else head = await http.readRequestHeadWithin(r, 30_000, () => {});
    if (!head) throw new Error("no head");
    const routed = fwd.routedTarget(head);
    http.requestBodyFraming(head);
    const connection = http.headerTokens(head.headers, "connection");
    leg.upgradeOffer(head, connection);
    leg.isLastRequest(head, connection);
    http.getHeader(head.headers, "authorization");
    let out = raw && splice && routed.head === head ? splice(raw, head, peer, "http") : undefined;
    if (!out) {
      const headers = fwd.forwardHeaders(routed.head, peer, "http", false);
      out = http.serializeRequestHead({ ...routed.head, headers });
    }
    if (out.length < bytes.length) throw new Error("short head");
  };
}

const batch = 5000, rounds = Number(Deno.env.get("BENCH_ROUNDS") ?? 15);
for (const [name, text] of Object.entries(heads)) {
  const bytes = enc.encode(text);
  const runs = trees.map(([tree, lib]) => ({ tree, run: steps(lib, bytes), us: [] as number[] }));
  for (let i = 0; i < rounds; i++) {
    for (const t of runs) {
      const t0 = cpuUsage();
      for (let j = 0; j < batch; j++) await t.run();
      const t1 = cpuUsage(t0);
      t.us.push((t1.user + t1.system) / batch);
    }
  }
  for (const t of runs) {
    const s = t.us.slice(2).sort((a, b) => a - b);
    console.log(
      `${name} (${t.tree}): CPU min ${s[0].toFixed(2)} µs, median ${
        s[s.length >> 1].toFixed(2)
      } µs`,
    );
  }
}
