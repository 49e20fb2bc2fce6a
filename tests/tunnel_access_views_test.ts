/**
 * The access log's response copy over the mux stream's views (issue 20): a response that lies
 * whole in a view goes out from it; one split across views, a chunked one, one behind an
 * interim head or one bigger than a view goes through the copying reader; and back. Every
 * byte reaches the public client once and in order, and each request gets its own line with
 * its status and the bytes of its response. The same with response rewrites (a field added,
 * one removed): each final head rewritten where it lies, the interim one passed as it came.
 */

import { assertEquals } from "./_assert.ts";
import { startClient, startTunnel } from "./_tunnel.ts";
import { readAll, until } from "./_util.ts";
import { Logger } from "../lib/log.ts";
import { closeQuietly, writeAll } from "../lib/net/mod.ts";

const latin1 = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));
const ok = (body: string) => `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`;

const big = "0123456789abcdef".repeat(20_000);
const chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
const split = ["HTTP/1.1 200 OK\r\nContent-Le", "ngth: 5\r\n\r\nsplit"];

/** What the app answers per path, in the order of the test's pipelined requests. */
const answers: [string, string][] = [
  ["/one", ok("1")],
  ["/two", "HTTP/1.1 200 OK\r\nX-Drop: d\r\nContent-Length: 2\r\n\r\n22"], // with /one
  ["/split", split.join("")], // its head in two writes, the second after the front took the first
  ["/chunked", chunked + ok("after")], // a chunked response and /after in one write
  ["/after", ""],
  ["/early", "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n" + ok("e")],
  ["/big", ok(big) + ok("last")], // and /last in the same write: its tail shares a view with /last
  ["/last", ""],
];

/** A response as the rewrites below give it: its final head without X-Drop and with X-R. */
function rewritten(response: string): string {
  const at = response.startsWith("HTTP/1.1 103") ? response.indexOf("\r\n\r\n") + 4 : 0;
  const end = response.indexOf("\r\n\r\n", at);
  return response.slice(0, at) + response.slice(at, end).replace("\r\nX-Drop: d", "") +
    "\r\nX-R: 1" + response.slice(end);
}

Deno.test("tunnel access log: responses whole in a view, split across views or framed otherwise go out byte-exact, each with its line", async () => {
  await views(false);
});

Deno.test("tunnel access log: the same responses with response rewrites, each final head rewritten", async () => {
  await views(true);
});

async function views(rewrite: boolean): Promise<void> {
  const lines: string[] = [];
  const log = new Logger("info", { svc: "front" }, (line) => lines.push(line));
  const t = startTunnel({}, 0, { accessLog: true, log });
  const id = "identifier-views-" + crypto.randomUUID();
  await t.server.addHost("app.test", id);
  if (rewrite) {
    await t.server.setRewrite("app.test", {
      response: { add: [["X-R", "1"]], remove: ["x-drop", "link"] },
    });
  }
  const out = rewrite ? rewritten : (response: string) => response;
  const bytesOut = () => t.server.stats.host("app.test").bytesOut;

  // The app: one connection, request heads read as they come; answers written as scripted.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const app = (async () => {
    const c = await listener.accept();
    let buf = "";
    let sent = 0;
    const chunk = new Uint8Array(16 * 1024);
    try {
      for (const [path, answer] of answers) {
        let end: number;
        while ((end = buf.indexOf("\r\n\r\n")) < 0) {
          const n = await c.read(chunk);
          if (n === null) return;
          buf += String.fromCharCode(...chunk.subarray(0, n));
        }
        assertEquals(buf.split(" ")[1], path);
        buf = buf.slice(end + 4);
        if (path === "/one") continue; // answered with /two
        if (path === "/two") {
          await writeAll(c, latin1(ok("1") + answer));
          sent += ok("1").length + answer.length;
        } else if (path === "/split") {
          await writeAll(c, latin1(split[0]));
          sent += split[0].length;
          // The front took the first piece (its view is counted when used up).
          await until(
            "the front to take the first piece of a split head",
            () => bytesOut() >= sent,
          );
          await writeAll(c, latin1(split[1]));
          sent += split[1].length;
        } else {
          await writeAll(c, latin1(answer));
          sent += answer.length;
        }
      }
    } finally {
      closeQuietly(c);
    }
  })();

  const client = startClient({
    server: t.url,
    identifier: id,
    local: { host: "127.0.0.1", port: listener.addr.port },
  });
  const pub = await Deno.connect({ hostname: "127.0.0.1", port: t.port });
  try {
    await client.connected();
    await writeAll(
      pub,
      latin1(answers.map(([p]) => `GET ${p} HTTP/1.1\r\nHost: app.test\r\n\r\n`).join("")),
    );
    await pub.closeWrite();
    const got = await readAll(pub);
    const sent = answers.map(([, a]) => a).join("");
    const outOf: Record<string, string> = {
      "/one": ok("1"),
      "/two": answers[1][1],
      "/split": split.join(""),
      "/chunked": chunked,
      "/after": ok("after"),
      "/early": answers[5][1],
      "/big": ok(big),
      "/last": ok("last"),
    };
    const want = answers.map(([p]) => out(outOf[p])).join("");
    assertEquals(got.length, want.length);
    assertEquals(new TextDecoder("latin1").decode(got), want);
    await until(
      "every access line",
      () => lines.filter((l) => / msg="?access"? /.test(l)).length >= answers.length,
    );
    const access = lines.filter((l) => / msg="?access"? /.test(l)).map((l) => {
      const f = (name: string) => new RegExp(`\\b${name}=(\\S+)`).exec(l)?.[1];
      return [f("path"), f("status"), Number(f("out"))];
    });
    assertEquals(
      access,
      answers.map(([p]) => [p, "200", out(outOf[p]).length]),
    );
    // What came from the app (the stream's bytes), rewritten or not.
    assertEquals(bytesOut(), sent.length);
  } finally {
    closeQuietly(pub);
    await client.stop();
    await t.close();
    listener.close();
    await app;
  }
}
