/**
 * Redis restarted empty under load loses no client port (issue 19): a port a client asks for
 * on instance B is bound on A too; Redis restarts empty while a long upload runs through A's
 * port, with B paused (SIGSTOP) so that A reads the claims before B can write them back. A
 * keeps the port and the connection (it once closed both there), the upload completes
 * byte-exact, and new connections through A work after B wrote its records back.
 */

import { assert, assertEquals } from "./_assert.ts";
import { blockStream, blockStreamSha256, readWithin, type ServiceProcess } from "./_util.ts";
import {
  hashThrough,
  portOnBoth,
  startClientProcess,
  startClusterMember,
  startHasher,
} from "./_tunnel.ts";
import { startRedis } from "./_redis.ts";
import { writeAll } from "../lib/net/mod.ts";

const id = "ports-restart-identifier-01";
const token = "ports-restart-link-token-01";

Deno.test("tunnel cluster: Redis restarted empty keeps a client's port and its connections on the other instance", async () => {
  const redis = await startRedis();
  const hasher = startHasher();
  const procs: ServiceProcess[] = [];
  const P = portOnBoth();
  let paused: ServiceProcess | undefined;
  try {
    const member = async (host: string) => {
      const p = await startClusterMember(redis.url, token, [
        "--tcp-ports",
        `${P}-${P}`,
        "--tcp-host",
        host,
        "--host",
        "one.test=env:ID",
        // Leases of 6 s: B, paused a moment, comes back well within one.
        "--heartbeat",
        "2s",
      ], { env: { ID: id } });
      procs.push(p);
      return p;
    };
    const a = await member("127.0.0.1");
    const b = await member("127.0.0.2");
    const client = await startClientProcess(b.addrs.get("http")!, hasher.port, id, [
      "--tcp",
      `${P}=127.0.0.1:${hasher.port}`,
    ]);
    procs.push(client);
    await a.waitFor(new RegExp(`msg="listening" name=tcp-${P} addr=127\\.0\\.0\\.1:`));
    await b.waitFor(/msg="client connected"/);
    assertEquals(await hashThrough(P, 4096, 1), blockStreamSha256(4096, 1));

    // A long upload through A: half of it before the restart, half after.
    const total = 32 * 1024 * 1024 + 5;
    const chunks = [...blockStream(total, 2)];
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: P });
    try {
      const half = Math.floor(chunks.length / 2);
      for (const c of chunks.slice(0, half)) await writeAll(conn, c);

      const mark = a.lines.length;
      b.child.kill("SIGSTOP");
      paused = b;
      await redis.up();
      // A reads the claims of the empty Redis (B cannot write them back yet).
      const seen = await a.waitFor(
        new RegExp(`port released in the cluster: closed" port=${P}|port claim gone from Redis`),
        undefined,
        mark,
      );
      b.child.kill("SIGCONT");
      paused = undefined;
      assert(!/closed/.test(seen), `A closed the port: ${seen}`);

      for (const c of chunks.slice(half)) await writeAll(conn, c);
      await conn.closeWrite();
      const buf = new Uint8Array(128);
      let got = "";
      const more = () => readWithin(conn, buf, "the app's answer and its end", got.length);
      for (let n; (n = await more()) !== null;) {
        got += new TextDecoder().decode(buf.subarray(0, n));
      }
      assertEquals(got, blockStreamSha256(total, 2));
    } finally {
      conn.close();
    }
    // B wrote its records back: A serves new connections, and never closed the port.
    await b.waitFor(/redis connected/, undefined, 0);
    assertEquals(await hashThrough(P, 1024 * 1024, 3), blockStreamSha256(1024 * 1024, 3));
    assert(!a.lines.some((l) => /port released in the cluster/.test(l)), "A closed the port");
  } finally {
    paused?.child.kill("SIGCONT");
    for (const p of procs.reverse()) await p.stop();
    await hasher.close();
    await redis.stop();
  }
});
