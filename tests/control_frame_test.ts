import {
  BufferedReader,
  ControlError,
  ControlReader,
  ControlWriter,
  defineMessage,
  defineProtocol,
  encodeFrame,
  hexOf,
  int,
  oneOf,
  optional,
  randomSecret,
  str,
  timingSafeEqual,
} from "../lib/control/mod.ts";
import { versionedJson } from "../lib/control/frame.ts";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { ChunkedSource, splits } from "./_chunked.ts";
import { concat, rawFrame } from "./_depot.ts";

const hello = defineMessage("hello", {
  token: str({ maxLength: 64 }),
  role: oneOf("a", "b"),
  name: optional(str()),
});
const connect = defineMessage("connect", { id: int({ min: 1 }), host: str(), port: int() });
const proto = defineProtocol("test", 1, [hello, connect]);

const msgs = [
  { v: 1, type: "hello", token: "tök€n", role: "a", name: "x" },
  { v: 1, type: "connect", id: 7, host: "example.org", port: 443 },
  { v: 1, type: "ping", ts: 12.5 },
  { v: 1, type: "hello", token: "", role: "b" },
];
const stream = concat(...msgs.map((m) => encodeFrame(m)));

async function readAllMsgs(src: ChunkedSource, max?: number): Promise<unknown[]> {
  const r = new ControlReader(new BufferedReader(src), proto, { maxMessageBytes: max });
  const out: unknown[] = [];
  while (true) {
    const m = await r.read();
    if (m === null) return out;
    out.push(m);
  }
}

for (const [name, split] of splits) {
  Deno.test(`control frames decode on ${name}`, async () => {
    assertEquals(await readAllMsgs(new ChunkedSource(stream, split)), msgs);
  });
}

Deno.test("control frame truncated at every offset is an error, or clean EOF at boundaries", async () => {
  const boundaries = new Set<number>([0]);
  let o = 0;
  for (const m of msgs) boundaries.add(o += encodeFrame(m).length);
  for (let cut = 0; cut < stream.length; cut++) {
    const src = new ChunkedSource(stream.subarray(0, cut), 5);
    if (boundaries.has(cut)) {
      const got = await readAllMsgs(src);
      assert(got.length <= msgs.length);
    } else {
      const err = await assertRejects(readAllMsgs(src));
      assert(err instanceof ControlError && err.reason === "truncated", `cut ${cut}: ${err}`);
    }
  }
});

Deno.test("control frame with oversize length is rejected before reading the body", async () => {
  // Announces 4 GiB - 1 but sends only the prefix: the reader must not wait or allocate.
  const src = new ChunkedSource(rawFrame("", 0xffff_ffff), 1);
  const err = await assertRejects(readAllMsgs(src));
  assert(err instanceof ControlError && err.reason === "too-large");
  const just = encodeFrame({ v: 1, type: "connect", id: 1, host: "h".repeat(90), port: 1 });
  const err2 = await assertRejects(readAllMsgs(new ChunkedSource(just, 7), 64));
  assert(err2 instanceof ControlError && err2.reason === "too-large");
  assertEquals((await readAllMsgs(new ChunkedSource(just, 7), just.length - 4)).length, 1);
});

Deno.test("control frame violations carry typed reasons", async () => {
  const cases: [Uint8Array, string][] = [
    [rawFrame(""), "bad-json"],
    [rawFrame("{not json"), "bad-json"],
    [rawFrame(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])), "bad-json"],
    [rawFrame("[1,2]"), "bad-json"],
    [rawFrame("null"), "bad-json"],
    [rawFrame('{"type":"hello"}'), "bad-json"],
    [rawFrame('{"v":"1","type":"hello"}'), "bad-json"],
    [rawFrame('{"v":1,"type":7}'), "bad-json"],
    [rawFrame('{"v":2,"type":"hello","token":"t","role":"a"}'), "bad-version"],
    [rawFrame('{"v":1,"type":"launch"}'), "unknown-type"],
    [rawFrame('{"v":1,"type":"hello","role":"a"}'), "schema"],
    [rawFrame('{"v":1,"type":"hello","token":"t","role":"c"}'), "schema"],
    [rawFrame(`{"v":1,"type":"hello","token":"${"x".repeat(65)}","role":"a"}`), "schema"],
    [rawFrame('{"v":1,"type":"connect","id":0,"host":"h","port":1}'), "schema"],
    [rawFrame('{"v":1,"type":"connect","id":1.5,"host":"h","port":1}'), "schema"],
    [rawFrame('{"v":1,"type":"connect","id":1,"host":["h"],"port":1}'), "schema"],
    [rawFrame('{"v":1,"type":"ping","ts":"now"}'), "schema"],
    [rawFrame('{"v":1,"type":"__proto__"}'), "unknown-type"],
  ];
  for (const [frame, reason] of cases) {
    const err = await assertRejects(
      readAllMsgs(new ChunkedSource(frame, 3)),
      new TextDecoder().decode(frame.subarray(4)),
    );
    assert(err instanceof ControlError, String(err));
    assertEquals(err.reason, reason, new TextDecoder().decode(frame.subarray(4)));
  }
});

Deno.test("control error messages are read at any version", async () => {
  const got = await readAllMsgs(
    new ChunkedSource(rawFrame('{"v":9,"type":"error","reason":"bad-version","supported":9}'), 2),
  );
  assertEquals(got, [{ v: 9, type: "error", reason: "bad-version", supported: 9 }]);
});

Deno.test("control unknown fields are dropped, optional null reads as absent", async () => {
  const got = await readAllMsgs(
    new ChunkedSource(
      rawFrame('{"v":1,"type":"hello","token":"t","role":"a","name":null,"extra":{"a":1}}'),
      2,
    ),
  );
  assertEquals(got, [{ v: 1, type: "hello", token: "t", role: "a" }]);
});

Deno.test("control random input never crashes the reader (only ControlError)", async () => {
  for (let i = 0; i < 300; i++) {
    const len = Math.floor(Math.random() * 64);
    const junk = crypto.getRandomValues(new Uint8Array(len));
    // Half the time make the length prefix plausible so the JSON path is exercised.
    if (len > 4 && i % 2 === 0) new DataView(junk.buffer).setUint32(0, len - 4);
    try {
      await readAllMsgs(new ChunkedSource(junk, () => 1 + Math.floor(Math.random() * 9)));
    } catch (err) {
      assert(err instanceof ControlError, `unexpected ${err}`);
    }
  }
});

Deno.test("control writer serialises concurrent sends without interleaving", async () => {
  const sink = new ChunkedSource(new Uint8Array(), 1);
  // A writer whose writes are short and slow, to provoke interleaving.
  const slow = {
    async write(p: Uint8Array): Promise<number> {
      await new Promise((r) => setTimeout(r, 0));
      const n = Math.min(p.length, 11);
      return await sink.write(p.subarray(0, n)).then(() => n);
    },
  };
  const w = new ControlWriter(slow, proto);
  const sends = [];
  for (let i = 1; i <= 50; i++) {
    sends.push(w.send({ type: "connect", id: i, host: `h${i}`, port: i }));
  }
  await Promise.all(sends);
  const got = await readAllMsgs(new ChunkedSource(sink.output(), 1000));
  assertEquals(got.length, 50);
  got.forEach((m, i) =>
    assertEquals(m, { v: 1, type: "connect", id: i + 1, host: `h${i + 1}`, port: i + 1 })
  );
  const tooBig = new ControlWriter(slow, proto, { maxMessageBytes: 16 });
  const err = await assertRejects(tooBig.send({ type: "hello", token: "x".repeat(20), role: "a" }));
  assert(err instanceof ControlError && err.reason === "too-large");
});

Deno.test("control writer: frames sent during a write leave together in the next one", async () => {
  const writes: Uint8Array[] = [];
  const slow = {
    async write(p: Uint8Array): Promise<number> {
      await new Promise((r) => setTimeout(r, 5));
      writes.push(p.slice());
      return p.length;
    },
  };
  const w = new ControlWriter(slow, proto);
  const sends = [];
  for (let i = 1; i <= 10; i++) sends.push(w.send({ type: "connect", id: i, host: "h", port: i }));
  await Promise.all(sends);
  // The first went at once; the nine sent while it was in flight went in one write.
  assertEquals(writes.length, 2);
  const got = await readAllMsgs(new ChunkedSource(concat(...writes), 7));
  assertEquals(got.map((m) => (m as { id: number }).id), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);

  // A failed write fails the frames queued behind it and every later send.
  const broken = {
    async write(_p: Uint8Array): Promise<number> {
      await new Promise((r) => setTimeout(r, 5));
      throw new Deno.errors.BrokenPipe("gone");
    },
  };
  const b = new ControlWriter(broken, proto);
  const results = await Promise.allSettled(
    [1, 2, 3].map((i) => b.send({ type: "connect", id: i, host: "h", port: i })),
  );
  for (const r of results) {
    assert(r.status === "rejected" && r.reason instanceof ControlError, String(r.status));
    assertEquals(r.reason.reason, "closed");
  }
  const later = await assertRejects(b.send({ type: "connect", id: 4, host: "h", port: 4 }));
  assert(later instanceof ControlError && later.reason === "closed");
});

Deno.test("timingSafeEqual compares strings and bytes", () => {
  assert(timingSafeEqual("abc", "abc"));
  assert(!timingSafeEqual("abc", "abd"));
  assert(!timingSafeEqual("abc", "abcd"));
  assert(!timingSafeEqual("", "a"));
  assert(timingSafeEqual(new Uint8Array([1, 2]), new Uint8Array([1, 2])));
});

Deno.test("hexOf and randomSecret: lowercase hex of any bytes, range and length", () => {
  const naive = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  assertEquals(hexOf(all), naive(all));
  for (let i = 0; i < 300; i++) {
    const b = crypto.getRandomValues(new Uint8Array(1 + Math.floor(Math.random() * 40)));
    const at = Math.floor(Math.random() * b.length);
    const n = Math.floor(Math.random() * (b.length - at + 1));
    assertEquals(hexOf(b, at, n), naive(b.subarray(at, at + n)));
  }
  const big = crypto.getRandomValues(new Uint8Array(10_000)); // past one apply() piece
  assertEquals(hexOf(big), naive(big));
  assertEquals(hexOf(new Uint8Array(0)), "");
  const keys = new Set<string>();
  for (let i = 0; i < 600; i++) keys.add(randomSecret(16)); // past one 4 KiB random block
  assertEquals(keys.size, 600);
  for (const k of keys) assert(/^[0-9a-f]{32}$/.test(k), k);
  assert(/^[0-9a-f]{10000}$/.test(randomSecret(5000)));
});

Deno.test("control versionedJson: the same text as stringifying { v, ...msg }, for any message", () => {
  const samples: object[] = [
    { type: "end", id: 7 },
    { type: "open", id: 1, host: "exämple.test", port: 443, note: undefined },
    { note: undefined },
    {},
    { type: "x", v: 9 },
    { type: "x", nested: { a: [1, "\u2028", null] }, s: '"\\' },
  ];
  // Random messages: keys and values from a small alphabet, some undefined.
  let seed = 12345;
  const rnd = (n: number) => (seed = (seed * 1103515245 + 12345) % 2147483648) % n;
  const atoms = [0, -1, 1.5, "", "é", "a\nb", true, null, undefined, [1, { k: 2 }]];
  for (let i = 0; i < 500; i++) {
    const m: Record<string, unknown> = {};
    for (let k = rnd(5); k > 0; k--) {
      m[["type", "id", "v", "host", "0", "ü"][rnd(6)]] = atoms[rnd(atoms.length)];
    }
    samples.push(m);
  }
  for (const msg of samples) {
    assertEquals(versionedJson(3, msg), JSON.stringify({ v: 3, ...msg }), JSON.stringify(msg));
  }
});
