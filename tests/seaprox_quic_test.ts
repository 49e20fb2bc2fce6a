/**
 * The seaprox link over QUIC as processes (run with --unstable-net): node A
 * (`--via quic://`) reaches node B (`--listen quic://`, certificate from the test PKI) and
 * curl through A's SOCKS5 listener moves 8 MiB down and 8 MiB up byte-exact; a raw client
 * sends 8 MiB, half-closes, and gets 8 MiB back that the origin sends only after our FIN;
 * eight streams at once; a stream nobody reads (64 MiB held back by flow control, its source
 * still blocked) does not stop another from moving 8 MiB; a
 * wrong token is refused with a log line on both ends; started without --unstable-net, a
 * quic:// flag ends the process with one line.
 */

import { assert, assertEquals } from "./_assert.ts";
import { concat } from "./_socks5.ts";
import { portFor, rawServer } from "./_seaprox.ts";
import { makePki } from "./_tls.ts";
import {
  blockStream,
  blockStreamSha256,
  drainHash,
  readWithin,
  run,
  sendBlocks,
  type ServiceProcess,
  startOrigin,
  startService,
} from "./_util.ts";
import { closeQuietly, writeAll } from "../lib/net/mod.ts";

const mib = 1024 * 1024;
const total = 8 * mib;
const quic = { denoArgs: ["--unstable-net"] };

/** SOCKS5 CONNECT to 127.0.0.1:`port` through `socksPort`; the reply code and the conn. */
async function socksConnect(socksPort: number, port: number) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: socksPort });
  await writeAll(conn, concat([5, 1, 0], [5, 1, 0, 1, 127, 0, 0, 1, port >> 8, port & 255]));
  const reply = new Uint8Array(12);
  let got = 0;
  while (got < reply.length) {
    const n = await readWithin(conn, reply.subarray(got), "the SOCKS5 replies", got);
    if (n === null) break;
    got += n;
  }
  return { rep: got >= 4 ? reply[3] : -1, conn };
}

/** curl through `socksPort` (socks5h); stdout's SHA-256 and length, or the JSON it printed. */
async function curl(socksPort: number, args: string[]): Promise<string> {
  const r = await run("sh", [
    "-c",
    `curl -sS --fail --max-time 120 --socks5-hostname 127.0.0.1:${socksPort} ${args.join(" ")}`,
  ]);
  if (r.code !== 0) throw new Error(`curl failed: ${r.stderr}`);
  return r.stdout;
}

Deno.test("seaprox quic link: curl 8 MiB each way, half-close, 8 streams, slow stream, bad token", async () => {
  const pki = await makePki();
  const origin = startOrigin();
  // 64 MiB for the stream nobody reads: more than every buffer and window on its path holds,
  // so its source is still held back (by flow control) when the other stream has finished.
  const slowTotal = 64 * mib;
  let slowSent = 0;
  const slowSource = rawServer(async (c) => {
    for (const chunk of blockStream(slowTotal, 9)) {
      await writeAll(c, chunk);
      slowSent += chunk.length;
    }
    await c.closeWrite();
  });
  // Reads the client's bytes to EOF (hashing them), and only then answers 8 MiB and FIN.
  const received: { bytes: number; sha256: string }[] = [];
  const afterEof = rawServer(async (c) => {
    received.push(await drainHash(c));
    await sendBlocks(c, total, 5);
    await c.closeWrite();
  });
  const nodes: ServiceProcess[] = [];
  try {
    await Deno.writeTextFile(`${pki.dir}/token`, "quic-link-token-1234\n");
    await Deno.writeTextFile(`${pki.dir}/wrong`, "not-the-quic-token-99\n");
    const upload = `${pki.dir}/upload.bin`;
    {
      const f = await Deno.open(upload, { write: true, create: true });
      for (const chunk of blockStream(total, 7)) await writeAll(f, chunk);
      f.close();
    }
    const b = await startService("seaprox.ts", [
      "--listen=quic://127.0.0.1:0",
      `--link-token-file=${pki.dir}/token`,
      `--tls-cert=${pki.serverCert}`,
      `--tls-key=${pki.serverKey}`,
    ], quic);
    nodes.push(b);
    const nodeA = async (tokenFile: string) => {
      const a = await startService("seaprox.ts", [
        "--listen=socks5://127.0.0.1:0",
        `--via=quic://localhost:${portFor(b, "quic")}`,
        `--link-token-file=${tokenFile}`,
        `--tls-ca=${pki.ca}`,
        "--prefer-ipv4",
      ], quic);
      nodes.push(a);
      return a;
    };
    const a = await nodeA(`${pki.dir}/token`);
    await a.waitFor(/msg="link up".*transport=quic/);
    const socks = portFor(a, "socks5");

    // curl: 8 MiB down, 8 MiB up (the origin answers the body's SHA-256).
    const down = await curl(socks, [
      `http://127.0.0.1:${origin.port}/bytes/${total}?seed=3`,
      "| sha256sum",
    ]);
    assertEquals(down.split(" ")[0], blockStreamSha256(total, 3));
    const up = JSON.parse(
      await curl(socks, [
        `--data-binary @${upload}`,
        "-H 'content-type: application/octet-stream'",
        `http://127.0.0.1:${origin.port}/sha256`,
      ]),
    );
    assertEquals(up, { bytes: total, sha256: blockStreamSha256(total, 7) });

    // Half-close: 8 MiB up, our FIN, then 8 MiB back that the far side sends after it.
    const hc = await socksConnect(socks, afterEof.port);
    assertEquals(hc.rep, 0);
    const reply = drainHash(hc.conn);
    await sendBlocks(hc.conn, total, 4);
    await hc.conn.closeWrite();
    assertEquals(await reply, { bytes: total, sha256: blockStreamSha256(total, 5) });
    assertEquals(received, [{ bytes: total, sha256: blockStreamSha256(total, 4) }]);
    closeQuietly(hc.conn);

    // Eight streams at once, each its own payload.
    const many = await Promise.all(
      [...Array(8).keys()].map((i) =>
        curl(socks, [`http://127.0.0.1:${origin.port}/bytes/${mib}?seed=${i + 20}`, "| sha256sum"])
      ),
    );
    many.forEach((out, i) => assertEquals(out.split(" ")[0], blockStreamSha256(mib, i + 20)));

    // A stream whose reader reads nothing holds its own window only: another moves 8 MiB.
    const slow = await socksConnect(socks, slowSource.port);
    assertEquals(slow.rep, 0);
    const fast = await curl(socks, [
      `http://127.0.0.1:${origin.port}/bytes/${total}?seed=11`,
      "| sha256sum",
    ]);
    assertEquals(fast.split(" ")[0], blockStreamSha256(total, 11));
    assert(slowSent < slowTotal, `the unread stream was not held back: ${slowSent} sent`);
    // The stalled one then completes, byte-exact.
    assertEquals(await drainHash(slow.conn), {
      bytes: slowTotal,
      sha256: blockStreamSha256(slowTotal, 9),
    });
    closeQuietly(slow.conn);

    // Wrong token: refused on both ends with a clear line; B keeps serving the good node.
    const bad = await nodeA(`${pki.dir}/wrong`);
    await bad.waitFor(/msg="link connect failed".*token rejected/);
    await b.waitFor(/msg="link hello: bad token"/);
    const refused = await socksConnect(portFor(bad, "socks5"), origin.port);
    assert(refused.rep !== 0, `a dial over a refused link must fail, got reply ${refused.rep}`);
    closeQuietly(refused.conn);
    const again = await curl(socks, [`http://127.0.0.1:${origin.port}/hello?id=q`]);
    assertEquals(again, "hello q");
  } finally {
    for (const n of nodes.reverse()) await n.stop();
    await afterEof.close();
    await slowSource.close();
    await origin.close();
    await pki.remove();
  }
});

Deno.test("seaprox quic:// without --unstable-net: one line, non-zero exit", async () => {
  const script = new URL("../services/seaprox.ts", import.meta.url).pathname;
  for (
    const flags of [
      ["--listen=quic://127.0.0.1:0", "--tls-cert=x", "--tls-key=y"],
      ["--listen=socks5://127.0.0.1:0", "--via=quic://127.0.0.1:7400"],
    ]
  ) {
    const r = await run(Deno.execPath(), ["run", "-A", script, ...flags], {
      env: { SEAPROX_LINK_TOKEN: "quic-link-token-1234" },
    });
    assert(r.code !== 0, `exit code ${r.code}`);
    const lines = r.stderr.trim().split("\n");
    assertEquals(lines.length, 1, r.stderr);
    assert(lines[0].includes("--unstable-net"), lines[0]);
  }
});
