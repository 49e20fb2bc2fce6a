/**
 * Faults through each spawned service stack (depot, depot --mux, fusion, tunnel) with
 * byte-exact checks: the upstream closes mid-transfer (the client gets exactly the bytes
 * sent, then EOF), the upstream resets (a prefix, then an end — never a hang), the server
 * process restarts while the client side keeps retrying, the client-side process is killed
 * and restarted, and DNS fails (SOCKS reply 0x04). What already has its own test elsewhere
 * is named at the end of this file.
 */

import { assert, assertEquals } from "./_assert.ts";
import { closeQuietly, dial, type Duplex, writeAll } from "../lib/net/mod.ts";
import { Reply, socks5Connect, Socks5ReplyError } from "../lib/socks5/mod.ts";
import { ResetCode } from "../lib/sequencer/mod.ts";
import {
  blockStream,
  blockStreamSha256,
  portOf,
  readWithin,
  startService,
  TimedOutError,
  until,
  within,
} from "./_util.ts";
import {
  type Stack,
  startDepotStack,
  startFusionStack,
  startTunnelStack,
  tunnelIdentifier,
} from "./_soak.ts";
import { createHash } from "node:crypto";

const enc = new TextEncoder();
const MiB = 1024 * 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Target: reads a command line, then
 *   "C<n>\n": sends n block-stream bytes (seed 5) and closes;
 *   "R<n>\n": sends n bytes, then closes with unread input pending (the kernel sends RST);
 *   an HTTP request for /close/<n> or /reset/<n>: the same behind a response head that
 *   promises twice as many bytes.
 */
function startFaultTarget(): { port: number; close(): Promise<void> } {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.TcpConn>();
  const one = async (c: Deno.TcpConn) => {
    let line = "";
    const b = new Uint8Array(1);
    while (!line.endsWith("\n")) {
      if ((await c.read(b)) === null) return;
      line += String.fromCharCode(b[0]);
    }
    let mode = line[0];
    let n = Number(line.slice(1, -1));
    const m = /^(?:GET|POST) \/(close|reset)\/(\d+)/.exec(line);
    if (m) {
      mode = m[1] === "close" ? "C" : "R";
      n = Number(m[2]);
      // Read (most of) the head; with "R" the rest of it stays unread on purpose.
      if (mode === "C") {
        let tail = line;
        while (!tail.endsWith("\r\n\r\n")) {
          if ((await c.read(b)) === null) return;
          tail = (tail + String.fromCharCode(b[0])).slice(-4);
        }
      }
      await writeAll(c, enc.encode(`HTTP/1.1 200 OK\r\nContent-Length: ${2 * n}\r\n\r\n`));
    }
    for (const chunk of blockStream(n, 5)) await writeAll(c, chunk);
    if (mode === "R") await sleep(100); // let the client's extra bytes arrive unread
    c.close();
    conns.delete(c);
  };
  const loop = (async () => {
    try {
      for await (const c of l) {
        conns.add(c);
        one(c).catch(() => {
          // The client side may vanish first; nothing to check here.
        });
      }
    } catch {
      // listener closed
    }
  })();
  return {
    port: (l.addr as Deno.NetAddr).port,
    async close() {
      closeQuietly(l);
      await loop;
      for (const c of conns) closeQuietly(c);
    },
  };
}

/**
 * Drain `c`; a reset ends it like EOF. Returns bytes + SHA-256. After `cutAfterMs` (a stuck
 * attempt, retried) we close `c` ourselves; 0: never (the caller bounds it and needs the end
 * to come from the far side). `progress.bytes` follows the bytes drained so far.
 */
async function drainOrReset(
  c: Duplex,
  skipHead = false,
  cutAfterMs = 20_000,
  progress: { bytes: number } = { bytes: 0 },
): Promise<{ bytes: number; sha256: string }> {
  const h = createHash("sha256");
  let bytes = 0;
  const buf = new Uint8Array(256 * 1024);
  let head = skipHead ? "" : null;
  const timer = cutAfterMs > 0 ? setTimeout(() => closeQuietly(c), cutAfterMs) : undefined;
  try {
    while (true) {
      let n: number | null;
      try {
        n = await readWithin(c, buf, "the transfer's bytes or its end", bytes);
      } catch (err) {
        if (err instanceof TimedOutError) throw err;
        break; // cut (by the timer above, or reset): what came is what counts
      }
      if (n === null) break;
      let p = buf.subarray(0, n);
      if (head !== null) {
        const before = head.length;
        head += String.fromCharCode(...p.subarray(0, Math.min(p.length, 8192)));
        const i = head.indexOf("\r\n\r\n");
        if (i < 0) continue;
        p = p.subarray(i + 4 - before);
        head = null;
      }
      h.update(p);
      bytes += p.length;
      progress.bytes = bytes;
    }
  } finally {
    clearTimeout(timer);
  }
  return { bytes, sha256: h.digest("hex") };
}

/** SHA-256 of the first `n` bytes of the block stream (seed 5). */
/**
 * Size of a transfer that a kill after its first MiB must cut: 4 GiB takes seconds even on a
 * fast loopback (256 MiB through depot once finished within 300 ms in CI).
 */
const killedTransferBytes = 4096 * MiB;

function prefixSha(n: number): string {
  return blockStreamSha256(n, 5);
}

async function upstreamFaults(stack: Stack, http: boolean) {
  const n = 3 * MiB + 12345;
  // Upstream closes mid-transfer: exactly n bytes, then EOF.
  const c = await stack.open();
  try {
    await writeAll(
      c,
      enc.encode(http ? `GET /close/${n} HTTP/1.1\r\nHost: app.test\r\n\r\n` : `C${n}\n`),
    );
    const got = await drainOrReset(c, http);
    assertEquals(got.bytes, n, `${stack.name}: close mid-transfer`);
    assertEquals(got.sha256, prefixSha(n));
  } finally {
    closeQuietly(c);
  }
  // Upstream resets: what arrives is a prefix of what was sent, and the stream ends.
  const r = await stack.open();
  try {
    await writeAll(
      r,
      enc.encode(
        http
          ? `POST /reset/${n} HTTP/1.1\r\nHost: app.test\r\nContent-Length: 65536\r\n\r\n`
          : `R${n}\n`,
      ),
    );
    await writeAll(r, new Uint8Array(65536)).catch(() => {
      // The reset may already have cut the connection.
    });
    const got = await drainOrReset(r, http);
    assert(got.bytes <= n, `${stack.name}: ${got.bytes} bytes after a reset`);
    assertEquals(got.sha256, prefixSha(got.bytes), `${stack.name}: reset prefix corrupted`);
    console.log(
      `${stack.name}: upstream reset after ${n} bytes: client got ${got.bytes}, then the end`,
    );
  } finally {
    closeQuietly(r);
  }
}

/**
 * How long a cut transfer may take to end once its far side died: a hang's bound, since the
 * end must come from the stack (drained with no cut of our own), never from this test.
 */
const endTimeoutMs = 240_000;

/**
 * One byte-exact 1 MiB round trip through the stack, retrying while it reconnects (for up to
 * `timeoutMs`: a hang's bound, not a timing assertion).
 */
async function roundTrip(stack: Stack, http: boolean, timeoutMs = 120_000) {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    let c: Duplex | undefined;
    try {
      c = await stack.open();
      await writeAll(
        c,
        enc.encode(http ? `GET /close/${MiB} HTTP/1.1\r\nHost: app.test\r\n\r\n` : `C${MiB}\n`),
      );
      const got = await drainOrReset(c, http);
      if (got.bytes === MiB && got.sha256 === prefixSha(MiB)) return;
      last = new Error(`got ${got.bytes} bytes`);
    } catch (err) {
      last = err;
    } finally {
      closeQuietly(c);
    }
    await sleep(200);
  }
  throw new Error(`${stack.name}: no good round trip in ${timeoutMs} ms: ${last}`);
}

const stacks = [
  ["depot", (p: number) => startDepotStack(p), false],
  ["depot --mux", (p: number) => startDepotStack(p, { mux: true }), false],
  ["fusion", (p: number) => startFusionStack(p), false],
  ["tunnel", (p: number) => startTunnelStack(p), true],
] as const;

for (const [name, start, http] of stacks) {
  Deno.test(`faults: ${name} — upstream closes or resets mid-transfer, byte-exact`, async () => {
    const target = startFaultTarget();
    const stack = await start(target.port);
    try {
      await roundTrip(stack, http);
      await upstreamFaults(stack, http);
      await roundTrip(stack, http); // the stack is still fine afterwards
    } finally {
      await stack.stop();
      await target.close();
    }
  });
}

Deno.test("faults: depot — server restarted while the local keeps retrying; local killed and restarted", async () => {
  const target = startFaultTarget();
  const env = { DEPOT_TOKEN: "fault-token" };
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const ports = [probe.addr.port];
  probe.close();
  // The restarted server must come back on the same addresses: take kernel-chosen ports
  // once and reuse them (a tiny race with other processes is possible, hence the retries).
  const p2 = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const p3 = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  ports.push(p2.addr.port, p3.addr.port);
  p2.close();
  p3.close();
  const serverArgs = [
    "--control",
    `127.0.0.1:${ports[0]}`,
    "--socks",
    `127.0.0.1:${ports[1]}`,
    "--tunnel",
    `127.0.0.1:${ports[2]}`,
  ];
  const localArgs = ["--server", `127.0.0.1:${ports[0]}`, "--backoff-max", "300ms"];
  let server = await startService("depot-server.ts", serverArgs, { readyCount: 3, env });
  let local = await startService("depot-local.ts", localArgs, {
    readyCount: 0,
    ready: /msg="connected"/,
    env,
  });
  const stack: Stack = {
    name: "depot",
    procs: {},
    async open() {
      const c = await dial("127.0.0.1", ports[1]);
      try {
        const { leftover } = await socks5Connect(c, { host: "127.0.0.1", port: target.port });
        assertEquals(leftover.length, 0);
        return c;
      } catch (err) {
        closeQuietly(c);
        throw err;
      }
    },
    stop: () => Promise.resolve(),
  };
  try {
    await roundTrip(stack, false);
    // Server killed: the local keeps retrying; a new server on the same ports is joined.
    const killedAt = local.lines.length;
    await server.stop("SIGKILL");
    // It lost the server and then tried again with none there (a second "reconnecting").
    const lost = await local.waitFor(/msg="reconnecting"/, 60_000, killedAt);
    await local.waitFor(/msg="reconnecting"/, 60_000, local.lines.indexOf(lost, killedAt) + 1);
    server = await startService("depot-server.ts", serverArgs, { readyCount: 3, env });
    await local.waitFor(/msg="connected"/, 60_000, killedAt);
    await roundTrip(stack, false);
    // Local killed mid-transfer and restarted: the transfer ends, a new local serves.
    const c = await stack.open();
    await writeAll(c, enc.encode(`C${killedTransferBytes}\n`));
    const progress = { bytes: 0 };
    const draining = drainOrReset(c, false, 0, progress);
    await until("the transfer's first MiB", () => progress.bytes >= MiB);
    await local.stop("SIGKILL");
    const cut = await within(
      draining,
      "the transfer to end after its exit was killed",
      endTimeoutMs,
    );
    assert(cut.bytes < killedTransferBytes, "the transfer outlived its exit");
    assertEquals(cut.sha256, prefixSha(cut.bytes));
    closeQuietly(c);
    local = await startService("depot-local.ts", localArgs, {
      readyCount: 0,
      ready: /msg="connected"/,
      env,
    });
    await roundTrip(stack, false);
    // DNS failure: an unresolvable name is answered with 0x04 (host unreachable).
    const d = await dial("127.0.0.1", ports[1]);
    try {
      await socks5Connect(d, { host: "no-such-host.invalid", port: 80 });
      throw new Error("connected to an unresolvable name");
    } catch (err) {
      assert(err instanceof Socks5ReplyError, String(err));
      assertEquals(err.reply, Reply.hostUnreachable);
    } finally {
      closeQuietly(d);
    }
  } finally {
    await local.stop("SIGKILL");
    await server.stop("SIGKILL");
    await target.close();
  }
});

Deno.test("faults: fusion — server restarted and client killed/restarted; new sessions byte-exact", async () => {
  const target = startFaultTarget();
  const env = { FUSION_TOKEN: "fault-token" };
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serverPort = probe.addr.port;
  probe.close();
  const serverArgs = [
    "--listen",
    `127.0.0.1:${serverPort}`,
    "--target",
    `127.0.0.1:${target.port}`,
  ];
  let server = await startService("fusion-server.ts", serverArgs, { env });
  const clientArgs = [
    "--listen",
    "127.0.0.1:0",
    "--server",
    `127.0.0.1:${serverPort}`,
    "--paths",
    "2",
  ];
  let client = await startService("fusion-client.ts", clientArgs, { env });
  const stack: Stack = {
    name: "fusion",
    procs: {},
    open: () => dial("127.0.0.1", portOf(client.addrs.get("listen")!)),
    stop: () => Promise.resolve(),
  };
  try {
    await roundTrip(stack, false);
    // Server killed mid-session and restarted: the client's paths redial, the new server
    // does not know the session (unknown session), so it ends at once instead of waiting
    // out its grace period (30 s; it would end "no-paths"); the bytes that did arrive are an
    // exact prefix.
    const c = await stack.open();
    await writeAll(c, enc.encode(`C${killedTransferBytes}\n`));
    const progress = { bytes: 0 };
    const draining = drainOrReset(c, false, 0, progress);
    await until("the transfer's first MiB", () => progress.bytes >= MiB);
    const linesBefore = client.lines.length;
    await server.stop("SIGKILL");
    const killedAt = performance.now();
    server = await startService("fusion-server.ts", serverArgs, { env });
    const cut = await within(draining, "the orphaned session to end", endTimeoutMs);
    const endedMs = performance.now() - killedAt;
    console.log(
      `fusion: server killed after ${cut.bytes} bytes; session ended ${
        Math.round(endedMs)
      } ms later`,
    );
    // Ended by the new server's "unknown session", not by the grace period.
    await client.waitFor(/msg="server no longer knows the session"/, 60_000, linesBefore);
    const failed = await client.waitFor(/msg="session failed"/, 60_000, linesBefore);
    assert(/ failure=peer-reset/.test(failed), failed);
    assertEquals(cut.sha256, prefixSha(cut.bytes));
    closeQuietly(c);
    await roundTrip(stack, false);
    // Client killed and restarted.
    await client.stop("SIGKILL");
    client = await startService("fusion-client.ts", clientArgs, { env });
    await roundTrip(stack, false);
  } finally {
    await client.stop("SIGKILL");
    await server.stop("SIGKILL");
    await target.close();
  }
});

// Covered elsewhere, not repeated here:
// - depot reply codes for refused (0x05), unresolvable (0x04, in-process), policy (0x02):
//   depot_reply_codes_test.ts; a local started before its server: depot_service_test.ts.
// - tunnel client killed/restarted and server restarted while the client retries:
//   tunnel_failover_test.ts, tunnel_service_test.ts.
// - seaprox garbage/truncation/dribbling: seaprox_hostile_test.ts.

Deno.test("faults: DNS failure — fusion's target and the tunnel's local app unresolvable", async () => {
  // Fusion: the session is reset (target-failed) and the client connection ends promptly.
  const env = { FUSION_TOKEN: "fault-token" };
  const server = await startService("fusion-server.ts", [
    "--listen",
    "127.0.0.1:0",
    "--target",
    "no-such-host.invalid:22",
  ], { env });
  const client = await startService("fusion-client.ts", [
    "--listen",
    "127.0.0.1:0",
    "--server",
    server.addrs.get("listen")!,
  ], { env });
  try {
    const c = await dial("127.0.0.1", portOf(client.addrs.get("listen")!));
    const got = await within(
      drainOrReset(c, false, 0),
      "the session to end after its target failed",
      endTimeoutMs,
    );
    closeQuietly(c);
    assertEquals(got.bytes, 0);
    await server.waitFor(/target dial failed/);
    // Ended by the server's reset (target failed), not by a timer of the client's.
    const failed = await client.waitFor(/msg="session failed"/);
    assert(failed.includes(`code ${ResetCode.targetFailed})`), failed);
    assert(/ failure=peer-reset /.test(failed), failed);
  } finally {
    await client.stop("SIGKILL");
    await server.stop("SIGKILL");
  }
  // Tunnel: a request for a vhost whose client cannot resolve its local app gets a 502.
  // The stack gives a server with the vhost; its client is swapped for one whose local app
  // is an unresolvable name.
  const t = await startTunnelStack(1);
  await t.procs["tunnel-client"].stop("SIGKILL");
  const server2 = t.procs["tunnel-server"];
  const port = portOf(server2.addrs.get("http")!);
  const tc = await startService("tunnel-client.ts", [
    "--server",
    `http://127.0.0.1:${port}`,
    "--local",
    "no-such-host.invalid:80",
  ], { readyCount: 0, ready: /msg="connected"/, env: { TUNNEL_IDENTIFIER: tunnelIdentifier } });
  try {
    const c = await dial("127.0.0.1", port);
    try {
      await writeAll(
        c,
        enc.encode("GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"),
      );
      const buf = new Uint8Array(4096);
      const n = await readWithin(c, buf, "the front's answer");
      const status = new TextDecoder().decode(buf.subarray(0, n ?? 0)).split("\r\n")[0];
      assertEquals(status.split(" ")[1], "502", status);
    } finally {
      closeQuietly(c);
    }
  } finally {
    await tc.stop("SIGKILL");
    await server2.stop();
  }
});
