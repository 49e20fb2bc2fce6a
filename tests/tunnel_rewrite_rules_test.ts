/**
 * lib/tunnel/rewrite.ts on its own: what a rule does to a header list (remove, then set, then
 * add; names case-insensitive; the Host rewrite), a client's rules then the server's, and what
 * is refused whatever its source (flags, admin API, state file, a hostile client's handshake):
 * CR/LF or control characters in a value (header injection), a malformed name, framing and
 * hop-by-hop headers, Host outside `host`, too many or too large rules.
 */

import { assert, assertEquals, assertMatch, assertThrows } from "./_assert.ts";
import {
  closingResponseBytes,
  HostRewrite,
  maxRewriteRules,
  maxRewriteValueBytes,
  mergeRewriteSpecs,
  parseHostRewriteFlag,
  RewriteError,
  withoutCloseBytes,
} from "../lib/tunnel/rewrite.ts";
import { forwardHeaders, forwardHeadParts, joinParts } from "../lib/tunnel/forward.ts";
import { withoutCloseOption } from "../lib/tunnel/front_leg.ts";
import {
  fieldNameIs,
  readResponseHead,
  scanRequestHead,
  scanResponseHead,
  serializeRequestHead,
  serializeResponseHead,
} from "../lib/http/mod.ts";
import { BufferedReader } from "../lib/net/mod.ts";
import fc from "./_fc.ts";
import { fuzzParams } from "./_fuzz.ts";
import { ChunkedSource } from "./_chunked.ts";

const head: [string, string][] = [
  ["Host", "a.test"],
  ["X-A", "1"],
  ["x-a", "2"],
  ["X-Keep", "k"],
  ["Cookie", "c"],
];

Deno.test("rewrite rules: remove, set (replaces every field of the name), add, Host", () => {
  const rw = new HostRewrite({
    host: "app.internal:8080",
    request: { remove: ["cookie"], set: [["X-A", "one"]], add: [["X-B", "b1"], ["X-B", "b2"]] },
  });
  assertEquals(rw.request(head), [
    ["Host", "app.internal:8080"],
    ["X-Keep", "k"],
    ["X-A", "one"],
    ["X-B", "b1"],
    ["X-B", "b2"],
  ]);
  assertEquals(rw.rewritesResponse, false);
  assertEquals(rw.response(head), head); // no response rules: untouched
  // The object form of set/add reads the same.
  const obj = new HostRewrite({ request: { set: { "X-A": "one" } as never } });
  assertEquals(obj.request([["x-a", "1"]]), [["X-A", "one"]]);
});

Deno.test("rewrite rules: a client's rules first, then the server's, which win", () => {
  const client = new HostRewrite({
    host: "client.internal",
    request: { set: [["X-Env", "client"]], add: [["X-Client", "1"]] },
    response: { set: [["X-Frame", "client"]] },
  });
  const server = new HostRewrite({
    host: "server.internal",
    request: { set: [["X-Env", "server"]] },
    response: { remove: ["X-Frame"], add: [["X-Frame", "server"]] },
  });
  const both = client.then(server);
  assertEquals(both.request([["Host", "p.test"]]), [
    ["Host", "server.internal"],
    ["X-Client", "1"],
    ["X-Env", "server"],
  ]);
  assertEquals(both.response([["X-Frame", "app"]]), [["X-Frame", "server"]]);
  assertEquals(client.then(undefined), client);
});

Deno.test("rewrite rules: info shows names, never values", () => {
  const rw = new HostRewrite({
    request: { set: [["Authorization", "Bearer secret-value"]], remove: ["X-Debug"] },
    response: { add: [["Set-Cookie", "s=secret"]] },
  });
  const info = rw.info();
  assertEquals(info, {
    request: { set: ["Authorization"], add: [], remove: ["X-Debug"] },
    response: { set: [], add: ["Set-Cookie"], remove: [] },
  });
  assertEquals(JSON.stringify(info).includes("secret"), false);
});

Deno.test("rewrite rules: injection, framing, hop-by-hop, Host and size limits are refused", () => {
  const refused = (spec: unknown, re: RegExp) => {
    const err = assertThrows(() => new HostRewrite(spec as never));
    assert(err instanceof RewriteError, String(err));
    assertMatch(err.message, re);
    assertEquals(err.message.includes("evil"), false, "the value is not echoed");
  };
  for (const v of ["a\r\nX-Injected: evil", "evil\n", "ev\u0000il", "evil\r"]) {
    refused({ request: { set: [["X-A", v]] } }, /printable, no line breaks/);
    refused({ response: { add: [["X-A", v]] } }, /printable, no line breaks/);
  }
  refused({ request: { set: [["X A", "1"]] } }, /is no header name/);
  refused({ request: { add: [["X-A:\r\nX-B", "1"]] } }, /is no header name/);
  for (
    const name of [
      "Content-Length",
      "transfer-encoding",
      "Connection",
      "Keep-Alive",
      "Proxy-Connection",
      "TE",
      "Trailer",
      "Upgrade",
    ]
  ) {
    for (const where of ["request", "response"]) {
      for (const action of ["set", "add"]) {
        refused({ [where]: { [action]: [[name, "1"]] } }, /framing or hop-by-hop/);
      }
      refused({ [where]: { remove: [name] } }, /framing or hop-by-hop/);
    }
  }
  refused({ request: { set: [["Host", "x"]] } }, /rewritten with "host"/);
  refused({ host: "a b" }, /host must be host\[:port\]/);
  refused({ host: "a.test:99999" }, /host must be host\[:port\]/);
  refused({ host: "x\r\nX-B: 1" }, /host must be host\[:port\]/);
  refused({}, /need host, request or response rules/);
  refused({ request: { set: "X-A: 1" } }, /must be \{name: value\}/);
  refused({ request: { remove: "X-A" } }, /must be a list of header names/);
  const many = Array.from({ length: maxRewriteRules + 1 }, (_, i) => [`X-${i}`, "v"]);
  refused({ request: { add: many } }, /at most 32/);
  refused({ request: { set: [["X-A", "v".repeat(maxRewriteValueBytes + 1)]] } }, /at most 1024/);
  const big = Array.from({ length: 20 }, (_, i) => [`X-${i}`, "v".repeat(1000)]);
  refused({ request: { add: big } }, /at most 16384 bytes/);
});

Deno.test("rewrite rules: --host-rewrite values, merged per host", () => {
  const [h1, a] = parseHostRewriteFlag("a.test=host:app.internal:8080");
  const [h2, b] = parseHostRewriteFlag("a.test=req-set:X-Env:prod:blue");
  const [, c] = parseHostRewriteFlag("a.test=res-remove:Server");
  assertEquals([h1, h2], ["a.test", "a.test"]);
  const spec = mergeRewriteSpecs(mergeRewriteSpecs(a, b), c);
  assertEquals(spec, {
    host: "app.internal:8080",
    request: { set: [["X-Env", "prod:blue"]], add: [], remove: [] },
    response: { set: [], add: [], remove: ["Server"] },
  });
  new HostRewrite(spec);
  for (const bad of ["a.test=req-sett:X:1", "a.test=req-set:novalue", "a.test"]) {
    assert(assertThrows(() => parseHostRewriteFlag(bad)) instanceof RewriteError, bad);
  }
});

// ---- The byte-level rewrite (the standalone front's path) against the field lists'.

/** Names the random heads and rules draw from: some the rules touch, in any case. */
const names = ["X-A", "x-a", "X-B", "Server", "server", "X-Frame-Options", "Cookie", "X-^", "X-~"];
const nameArb = fc.constantFrom(...names);
/** A value as a serialiser writes it: visible latin-1, inner spaces and tabs. */
const valueArb = fc.stringMatching(
  /^([\x21-\x7e\xa0-\xff]([ \t\x21-\x7e\xa0-\xff]{0,8}[\x21-\x7e\xa0-\xff])?)?$/,
);
const pairsArb = fc.array(fc.tuple(nameArb, valueArb.filter((v) => v !== "")), { maxLength: 3 });
const rulesArb = fc.record({
  set: pairsArb,
  add: pairsArb,
  remove: fc.array(nameArb, { maxLength: 3 }),
});
/** One to three steps (a client's rules, then the server's...), each with a Host or not. */
const rewriteArb = fc.array(
  fc.record({
    host: fc.option(fc.constantFrom("app.internal", "b.test:8080"), { nil: undefined }),
    request: rulesArb,
    response: rulesArb,
  }),
  { minLength: 1, maxLength: 3 },
).map((specs) => {
  let rw: HostRewrite | undefined;
  for (const s of specs) {
    const spec = s.host === undefined ? { request: s.request, response: s.response } : s;
    let step: HostRewrite;
    try {
      step = new HostRewrite(spec);
    } catch {
      continue; // no rule at all
    }
    rw = rw ? rw.then(step) : step;
  }
  return rw ?? new HostRewrite({ host: "only.host" });
});
const fieldsArb = fc.array(fc.tuple(nameArb, valueArb), { maxLength: 8 });
const latin1 = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));
const text = (b: Uint8Array) => String.fromCharCode(...b);
const peer = { ip: "192.0.2.7", remote: "192.0.2.7:5000" };

/** A head's start line and fields as a serialiser writes them, ending with the empty line. */
function headText(startLine: string, fields: [string, string][]): string {
  return `${startLine}\r\n${fields.map(([k, v]) => `${k}: ${v}\r\n`).join("")}\r\n`;
}

/**
 * A request head with one Host put among `fields` at `hostAt` (the front refuses a request
 * without one): its scanned head and the front's byte parts (head, X-Forwarded-* lines).
 */
function requestHead(requestLine: string, fields: [string, string][], hostAt: number) {
  fields.splice(Math.min(hostAt, fields.length), 0, ["Host", "p.test"]);
  const raw = latin1(headText(requestLine, fields));
  const scan = scanRequestHead(raw);
  assert(scan, "a head as a serialiser writes it");
  const parts = forwardHeadParts(raw, scan.head, peer, "http");
  assert(parts);
  return { head: scan.head, parts };
}

/**
 * A response head followed by `body`: its bytes, the head's scanned length, and the head as
 * readResponseHead reads it from reads of `chunk` bytes.
 */
async function responseHead(
  statusLine: string,
  fields: [string, string][],
  body: Uint8Array,
  chunk: number,
) {
  const bytes = new Uint8Array([...latin1(headText(statusLine, fields)), ...body]);
  const scan = scanResponseHead(bytes);
  assert(scan, "a head as a serialiser writes it");
  const head = await readResponseHead(new BufferedReader(new ChunkedSource(bytes, chunk)));
  return { bytes, length: scan.length, head };
}

Deno.test("rewrite rules: a response head rewritten at byte level is the serialised rewrite", async () => {
  await fc.assert(
    fc.asyncProperty(
      rewriteArb,
      fc.constantFrom("HTTP/1.1 200 OK", "HTTP/1.0 404 Not Found", "HTTP/1.1 204 "),
      fieldsArb,
      fc.uint8Array({ maxLength: 20 }),
      async (rw, statusLine, fields, body) => {
        const { bytes, length, head } = await responseHead(statusLine, fields, body, 7);
        const want = serializeResponseHead({ ...head, headers: rw.response(head.headers) });
        const got = rw.responseBytes(bytes, length);
        const wanted = text(want) + text(body);
        // A plain compare (assertEquals' diff of every shrunk case is slow).
        assert(text(got) === wanted, `${JSON.stringify(text(got))} !== ${JSON.stringify(wanted)}`);
      },
    ),
    fuzzParams(100),
  );
});

Deno.test("rewrite rules: a request head rewritten at byte level is the serialised rewrite", () => {
  fc.assert(
    fc.property(
      rewriteArb,
      fc.constantFrom("GET / HTTP/1.1", "POST /x?y=1 HTTP/1.0"),
      fieldsArb,
      fc.nat(8),
      (rw, requestLine, fields, hostAt) => {
        const { head, parts } = requestHead(requestLine, fields, hostAt);
        const want = serializeRequestHead({
          ...head,
          headers: rw.request(forwardHeaders(head, peer, "http", false)),
        });
        const got = text(rw.requestBytes(parts[0], parts[1])!);
        assert(got === text(want), `${JSON.stringify(got)} !== ${JSON.stringify(text(want))}`);
      },
    ),
    fuzzParams(100),
  );
});

Deno.test("rewrite rules: a rule that drops an X-Forwarded-* field leaves requests to the field path", () => {
  const rw = new HostRewrite({ request: { remove: ["x-forwarded-for"] } });
  assertEquals(rw.requestBytes(latin1("GET / HTTP/1.1\r\nHost: a\r\n"), latin1("\r\n")), undefined);
});

// ---- A request's `close` taken out and a response's put in at byte level (the standalone
// front's pool, front_http.ts) against the field lists'.

/** Connection fields in any case, with `close` alone or beside other options. */
const connectionArb = fc.tuple(
  fc.constantFrom("Connection", "connection", "CONNECTION"),
  fc.constantFrom("close", "Close", "CLOSE", "keep-alive", "close, Upgrade", "Upgrade", "clos"),
);
const closeFieldsArb = fc.array(fc.oneof(fc.tuple(nameArb, valueArb), connectionArb), {
  maxLength: 8,
});

Deno.test("rewrite rules: a request without its close at byte level is the serialised one", () => {
  fc.assert(
    fc.property(
      fc.option(rewriteArb, { nil: undefined }),
      fc.constantFrom("GET / HTTP/1.1", "HEAD /x?y=1 HTTP/1.1"),
      closeFieldsArb,
      fc.nat(8),
      (rw, requestLine, fields, hostAt) => {
        const { head, parts } = requestHead(requestLine, fields, hostAt);
        const kept = withoutCloseBytes(parts[0]);
        const onlyClose = fields.every(([k, v]) =>
          !fieldNameIs(k, "connection") || v.toLowerCase() === "close"
        );
        assertEquals(kept !== undefined, onlyClose, JSON.stringify(fields));
        if (!kept) return;
        const headers = withoutCloseOption(forwardHeaders(head, peer, "http", false));
        const want = text(serializeRequestHead({
          ...head,
          headers: rw ? rw.request(headers) : headers,
        }));
        const got = text(rw ? rw.requestBytes(kept, parts[1])! : joinParts([kept, parts[1]]));
        // In one array with the X-Forwarded-* lines, as the front makes it without rewrites.
        const whole = text(withoutCloseBytes(parts[0], parts[1])!);
        assert(whole === text(joinParts([kept, parts[1]])), whole);
        assert(got === want, `${JSON.stringify(got)} !== ${JSON.stringify(want)}`);
      },
    ),
    fuzzParams(200),
  );
});

Deno.test("rewrite rules: a response given its close at byte level is the serialised one", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom("HTTP/1.1 200 OK", "HTTP/1.0 404 Not Found", "HTTP/1.1 204 "),
      closeFieldsArb,
      fc.uint8Array({ maxLength: 20 }),
      async (statusLine, fields, body) => {
        const { bytes, length, head } = await responseHead(statusLine, fields, body, 5);
        const headers = head.headers.filter(([k]) => !fieldNameIs(k, "connection"));
        headers.push(["Connection", "close"]);
        const wanted = text(serializeResponseHead({ ...head, headers })) + text(body);
        const got = text(closingResponseBytes(bytes, length));
        assert(got === wanted, `${JSON.stringify(got)} !== ${JSON.stringify(wanted)}`);
      },
    ),
    fuzzParams(200),
  );
});
