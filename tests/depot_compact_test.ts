/**
 * depot compact frames (feature "compact", lib/depot/compact.ts): every hot message decodes to
 * what its JSON frame would, on any split of the input; truncated, mutated and random frames
 * end in a typed ControlError, never anything else; a reader without the codec refuses them
 * as before; and depots relay byte-exact with half-close whichever side speaks only JSON.
 */
import {
  BufferedReader,
  compactFrame,
  ControlConn,
  ControlError,
  ControlReader,
  encodeFrame,
  type Outgoing,
} from "../lib/control/mod.ts";
import { type DepotMessage, depotProtocol } from "../lib/depot/mod.ts";
import { depotCompact } from "../lib/depot/compact.ts";
import { dial, withPrefix, writeAll } from "../lib/net/mod.ts";
import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { ChunkedSource, splits } from "./_chunked.ts";
import { concat, socksDial, startDepot, startTarget } from "./_depot.ts";
import { blockStreamSha256, nextWithin, readAll, sendBlocks, until, within } from "./_util.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

function rnd(n: number): number {
  return Math.floor(Math.random() * n);
}
function hexKey(): string {
  return Array.from({ length: 32 }, () => "0123456789abcdef"[rnd(16)]).join("");
}
function randomId(): number {
  const pick = rnd(4);
  return pick === 0 ? 1 : pick === 1 ? Number.MAX_SAFE_INTEGER : 1 + rnd(2 ** 40);
}
/** Hosts: names, addresses, non-ASCII (IDN as typed), the longest accepted. */
function randomHost(max = 255): string {
  const pick = rnd(5);
  if (pick === 0) return "example.org";
  if (pick === 1) return "2001:db8::1";
  if (pick === 2) return "bücher.example";
  if (pick === 3) return "a".repeat(max);
  return Array.from({ length: 1 + rnd(max) }, () => String.fromCharCode(33 + rnd(0x3000)))
    .join("").slice(0, max);
}
function randomMessage(): Outgoing<DepotMessage> {
  switch (rnd(5)) {
    case 0:
      return {
        type: "connect",
        id: randomId(),
        key: hexKey(),
        host: randomHost(),
        port: rnd(65536),
      };
    case 1:
      return rnd(2) === 0 ? { type: "tunnel", id: randomId(), key: hexKey() } : {
        type: "tunnel",
        id: randomId(),
        key: hexKey(),
        boundHost: rnd(3) === 0 ? "" : randomHost(64),
        boundPort: rnd(65536),
      };
    case 2:
      return {
        type: "standby",
        name: ["default", "a", "x".repeat(64), "e-1.b_2"][rnd(4)],
        sessionKey: hexKey(),
      };
    case 3:
      return { type: "end", id: randomId() };
    default:
      return { type: "tunnelAccepted", id: randomId() };
  }
}

/** What the JSON frame of `msg` decodes to: the reference for its compact frame. */
function viaJson(msg: Outgoing<DepotMessage>): DepotMessage {
  return depotProtocol.check(JSON.parse(JSON.stringify({ v: depotProtocol.version, ...msg })));
}

async function readAllMsgs(data: Uint8Array, split: number | (() => number), compact = true) {
  const r = new ControlReader(new BufferedReader(new ChunkedSource(data, split)), depotProtocol, {
    maxMessageBytes: 1024,
    compact: compact ? depotCompact : undefined,
  });
  const out: DepotMessage[] = [];
  for (let m = await r.read(); m !== null; m = await r.read()) out.push(m);
  return out;
}

const samples = Array.from({ length: 300 }, randomMessage);

for (const [name, split] of splits) {
  Deno.test(`depot compact: 300 random messages, mixed with JSON frames, decode as their JSON on ${name}`, async () => {
    const frames = samples.map((m, i) => {
      const f = depotCompact.encode(m);
      assert(f !== undefined, `${m.type} has a compact form`);
      assert(f[0] >= 0x80, "the prefix's top bit marks it");
      // Every fifth goes as JSON: both kinds of frame share one stream.
      return i % 5 === 0 ? encodeFrame({ v: 1, ...m }) : f;
    });
    assertEquals(await readAllMsgs(concat(...frames), split), samples.map(viaJson));
  });
}

Deno.test("depot compact: a frame cut at any offset is truncated, or a clean EOF at boundaries", async () => {
  const frames = samples.slice(0, 20).map((m) => depotCompact.encode(m)!);
  const stream = concat(...frames);
  const boundaries = new Set<number>([0]);
  let o = 0;
  for (const f of frames) boundaries.add(o += f.length);
  for (let cut = 0; cut < stream.length; cut++) {
    if (boundaries.has(cut)) {
      assert((await readAllMsgs(stream.subarray(0, cut), 7)).length <= frames.length);
      continue;
    }
    const err = await assertRejects(() => readAllMsgs(stream.subarray(0, cut), 7));
    assert(err instanceof ControlError && err.reason === "truncated", `cut at ${cut}: ${err}`);
  }
});

Deno.test("depot compact: random bodies of every code decode to a valid message or a typed error", async () => {
  let decoded = 0;
  for (let i = 0; i < 20_000; i++) {
    const code = rnd(2) === 0 ? 1 + rnd(6) : 1 + rnd(127);
    const len = rnd(3) === 0 ? rnd(8) : rnd(80);
    const f = compactFrame(code, len);
    crypto.getRandomValues(f.subarray(4));
    // Often a plausible id and ASCII, so the decoders' later checks run too.
    if (rnd(2) === 0 && len >= 8) f.fill(0, 4, 6);
    if (rnd(2) === 0) { for (let j = 28; j < f.length; j++) f[j] &= 0x7f; }
    try {
      const [m] = await readAllMsgs(f, 1 + rnd(9));
      // Whatever decodes is a message its JSON form would also be.
      assertEquals(depotProtocol.check(JSON.parse(JSON.stringify(m))), m);
      decoded++;
    } catch (err) {
      assert(err instanceof ControlError, `code ${code}: ${err}`);
      assert(["schema", "unknown-type", "truncated"].includes(err.reason), err.reason);
    }
  }
  assert(decoded > 100, `some random bodies decode (${decoded})`);
});

Deno.test("depot compact: violations are typed like their JSON forms'", async () => {
  const id = (n: number) => {
    const f = compactFrame(4, 8);
    new DataView(f.buffer, f.byteOffset).setBigUint64(4, BigInt(n));
    return f;
  };
  const reason = async (f: Uint8Array) => {
    const err = await assertRejects(() => readAllMsgs(f, 1));
    assert(err instanceof ControlError, String(err));
    return err.reason;
  };
  assertEquals(await reason(id(0)), "schema"); // id 0
  assertEquals(await reason(id(2 ** 53)), "schema"); // past a safe integer
  assertEquals((await readAllMsgs(id(2 ** 53 - 1), 1))[0], { v: 1, type: "end", id: 2 ** 53 - 1 });
  assertEquals(await reason(compactFrame(4, 9)), "schema"); // end with a byte too many
  assertEquals(await reason(compactFrame(5, 7)), "schema"); // tunnelAccepted short
  assertEquals(await reason(compactFrame(99, 8)), "unknown-type");
  assertEquals(await reason(compactFrame(2, 25)), "schema"); // tunnel: half a bound port
  const connect = (host: Uint8Array) => {
    const f = compactFrame(1, 26 + host.length);
    f[11] = 1; // id 1
    f.set(host, 30);
    return f;
  };
  assertEquals(await reason(connect(new Uint8Array(0))), "schema"); // empty host
  assertEquals(await reason(connect(new Uint8Array([0x62, 0xff, 0x63]))), "schema"); // not UTF-8
  assertEquals(await reason(connect(enc.encode("a".repeat(256)))), "schema"); // 256 chars
  assertEquals((await readAllMsgs(connect(enc.encode("€".repeat(255))), 1))[0].type, "connect");
  const standby = (name: string) => {
    const f = compactFrame(3, 16 + name.length);
    f.set(enc.encode(name), 20);
    return f;
  };
  assertEquals(await reason(standby("bad name")), "schema");
  assertEquals(await reason(standby("")), "schema");
  assertEquals((await readAllMsgs(standby("ok.1"), 1))[0], {
    v: 1,
    type: "standby",
    name: "ok.1",
    sessionKey: "0".repeat(32),
  });
  // Longer than the reader's maximum: refused before the body is read.
  const big = compactFrame(1, 2000);
  assertEquals(await reason(big.subarray(0, 4)), "too-large");
});

Deno.test("depot compact: a reader without the codec refuses a compact frame as an older one did", async () => {
  const f = depotCompact.encode({ type: "end", id: 7 })!;
  const err = await assertRejects(() => readAllMsgs(f, 3, false));
  assert(err instanceof ControlError && err.reason === "too-large", String(err));
});

Deno.test("depot compact: what has no compact form is left to JSON", () => {
  const none: Outgoing<DepotMessage>[] = [
    { type: "connect", id: 1, key: "A".repeat(32), host: "h", port: 1 }, // not lowercase hex
    { type: "connect", id: 0, key: hexKey(), host: "h", port: 1 },
    { type: "connect", id: 1, key: hexKey(), host: "\ud800x", port: 1 }, // lone surrogate
    { type: "connect", id: 1, key: hexKey(), host: "h".repeat(256), port: 1 },
    { type: "tunnel", id: 1, key: hexKey(), boundHost: "h" }, // a host without its port
    { type: "standby", name: "bad name", sessionKey: hexKey() },
    { type: "connectFailed", id: 1, reason: "refused" },
    { type: "associate", id: 1, key: hexKey() },
    { type: "ping", ts: 1 },
  ];
  for (const m of none) assertEquals(depotCompact.encode(m), undefined, JSON.stringify(m));
});

Deno.test("depot compact: on the wire, a hand-driven local that announces it gets and sends compact frames", async () => {
  const depot = await startDepot({ locals: [], server: { token: "t" } });
  const ctl = new ControlConn(await dial("127.0.0.1", depot.controlPort), depotProtocol);
  const features = ["open", "end", "compact"];
  await ctl.send({ type: "hello", role: "depot-local", token: "t", name: "default", features });
  const welcome = await ctl.expect("welcome", 30_000);
  assert(welcome.features?.includes("compact"), "the server offers compact");
  ctl.useCompact(depotCompact);
  const spare = await dial("127.0.0.1", depot.tunnelPort);
  try {
    await writeAll(
      spare,
      depotCompact.encode({ type: "standby", name: "default", sessionKey: welcome.sessionKey! })!,
    );
    // Once the server holds the spare, the request takes it (before, the control connection).
    await until(
      "the server to hold the spare",
      () => depot.server.status().exits.find((e) => e.name === "default")?.spares === 1,
    );
    const client = socksDial(depot.socksPort, { host: "app.invalid", port: 8080 });
    const r = new BufferedReader(spare, 1024);
    const first = await within(r.readExact(1, false), "the request on the spare");
    assert(first[0] >= 0x80, "the request comes compact");
    r.unread(new Uint8Array([0x81]));
    const req = await nextWithin(
      new ControlReader(r, depotProtocol, { compact: depotCompact }),
      "the whole request on the spare",
    );
    assert(req?.type === "connect", `got ${req?.type}`);
    assertEquals([req.host, req.port], ["app.invalid", 8080]);
    const rest = withPrefix(spare, r.takeBuffered());
    await writeAll(
      rest,
      depotCompact.encode({
        type: "tunnel",
        id: req.id,
        key: req.key,
        boundHost: "10.0.0.1",
        boundPort: 4321,
      })!,
    );
    await writeAll(rest, enc.encode("down"));
    await rest.closeWrite();
    await ctl.send({ type: "end", id: req.id }); // compact on the control connection
    const c = await client;
    // The compact end confirmed the FIN: the client reads a clean end, not a reset.
    assertEquals(dec.decode(await readAll(c)), "down");
    await writeAll(c, enc.encode("up"));
    await c.closeWrite();
    assertEquals(dec.decode(await readAll(rest)), "up");
    c.close();
  } finally {
    spare.close();
    ctl.close();
    await depot.close();
  }
});

/** Small exchanges (half-close both ways) and one upload checked by SHA-256. */
async function exchanges(socksPort: number, targetPort: number): Promise<void> {
  const dest = { host: "127.0.0.1", port: targetPort };
  await Promise.all(Array.from({ length: 40 }, async (_, i) => {
    const c = await socksDial(socksPort, dest);
    await writeAll(c, enc.encode(`E${i} `));
    await c.closeWrite();
    assertEquals(dec.decode(await readAll(c)), `${i} `);
    c.close();
  }));
  const size = 3 << 20;
  const up = await socksDial(socksPort, dest);
  await writeAll(up, enc.encode("U"));
  await sendBlocks(up, size, 5);
  await up.closeWrite();
  assertEquals(dec.decode(await readAll(up)).trim(), `${size} ${blockStreamSha256(size, 5)}`);
  up.close();
}

for (
  const [label, server, local] of [
    ["both compact", true, true],
    ["a JSON-only local", true, false],
    ["a JSON-only server", false, true],
  ] as const
) {
  for (const mux of [false, true]) {
    Deno.test(`depot compact: ${label}${mux ? " --mux" : ""} relays byte-exact with half-close`, async () => {
      const target = startTarget();
      const depot = await startDepot({
        server: { compact: server },
        locals: [{ compact: local, mux }],
      });
      try {
        await exchanges(depot.socksPort, target.port);
        assert(depot.server.status().total >= 41);
      } finally {
        await depot.close();
        await target.close();
      }
    });
  }
}
