/**
 * `SERVE_TREE=DIR SERVE_MODE=MODE deno run -A bench/_serve_target.ts`: lib/net's `serve()` of
 * the checkout DIR (default: this one) on a 127.0.0.1 port of its own, with the least handler
 * a service has: read the 8-byte request of bench/_util.ts `smallExchange`, call
 * `handshakeDone()`, answer `smallAnswerBytes` and return (serve() closes the connection).
 * Prints `{"port":N}` once it listens. bench/_serve_ab.ts runs it for old and new trees: what
 * serve() itself costs per connection, without a service's own work (issue 20).
 *
 * MODE: `bare` (a `for await` accept loop, no serve(): the floor), `serve` (serve()'s
 * defaults: limit, idle shedding, handshake deadline), `source` (as depot's SOCKS listener:
 * also a per-source share below the limit), `lean` (no handshake deadline, no shedding).
 * @module
 */

import { lengthHeader, smallAnswerBytes } from "./_util.ts";

const tree = (Deno.env.get("SERVE_TREE") ?? new URL("..", import.meta.url).pathname)
  .replace(/\/$/, "");
const mode = Deno.env.get("SERVE_MODE") ?? "serve";
const requestBytes = lengthHeader(0).length;
const answer = new Uint8Array(smallAnswerBytes);

/** Read the request (all of it), then answer; false if the peer closed first. */
async function exchange(conn: Deno.Conn, buf: Uint8Array): Promise<boolean> {
  let got = 0;
  while (got < requestBytes) {
    const n = await conn.read(buf.subarray(got));
    if (n === null) return false;
    got += n;
  }
  return true;
}

/** Write all of `answer`. */
async function answerAll(conn: Deno.Conn): Promise<void> {
  for (let at = 0; at < answer.length;) at += await conn.write(answer.subarray(at));
}

const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
console.log(JSON.stringify({ port: listener.addr.port }));

if (mode === "bare") {
  for await (const conn of listener) {
    (async () => {
      try {
        conn.setNoDelay(true);
        if (await exchange(conn, new Uint8Array(requestBytes))) await answerAll(conn);
      } catch {
        // The bench's peer went away: the floor only closes.
      } finally {
        conn.close();
      }
    })();
  }
} else {
  const net = await import(`${tree}/lib/net/mod.ts`) as typeof import("../lib/net/mod.ts");
  const maxConns = net.defaultMaxConns;
  net.serve(listener, async (conn, ctx) => {
    if (!await exchange(conn, new Uint8Array(requestBytes))) return;
    ctx.handshakeDone();
    await answerAll(conn);
  }, {
    maxConns,
    maxConnsPerSource: mode === "source" ? net.perSourceShare(maxConns) : undefined,
    handshakeTimeoutMs: mode === "lean" ? 0 : undefined,
    shedIdleMs: mode === "lean" ? Infinity : undefined,
  });
}
