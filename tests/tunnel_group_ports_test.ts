/**
 * A group's TCP and UDP ports (tunnel-server `--duplicate balance`), with real processes: a
 * tunnel-server and two tunnel-client members, each with its own local TCP service (it answers
 * its name and the SHA-256 of what it read) and UDP echo (it answers its name and the
 * datagram). The port is the group's: connections and flows are spread over the members, and
 * when the member that bound the port is killed (kill -9) new ones go to the other.
 */

import { assert, assertEquals } from "./_assert.ts";
import {
  blockStreamSha256,
  freePort,
  listenLocal,
  readWithin,
  sendBlocks,
  startService,
} from "./_util.ts";
import type { ServiceProcess } from "./_util.ts";
import { closeQuietly } from "../lib/net/mod.ts";
import { UdpSocket } from "../lib/udp/mod.ts";
import { createHash } from "node:crypto";

const id = "group-ports-identifier-01";

/** A local TCP service answering `NAME SHA256` of what it read, at EOF. */
function namedHasher(name: string) {
  const l = listenLocal();
  const handlers = new Set<Promise<void>>();
  const loop = (async () => {
    for await (const c of l) {
      const h = (async () => {
        const hash = createHash("sha256");
        const buf = new Uint8Array(64 * 1024);
        try {
          for (let n; (n = await c.read(buf)) !== null;) hash.update(buf.subarray(0, n));
          await c.write(new TextEncoder().encode(`${name} ${hash.digest("hex")}`));
        } catch {
          // Cut with its member (kill -9): the test sees the public connection fail.
        } finally {
          closeQuietly(c);
        }
      })();
      handlers.add(h);
      h.finally(() => handlers.delete(h));
    }
  })();
  return {
    port: l.addr.port,
    close: async () => {
      l.close();
      await loop.catch(() => {
        // The listener was closed: the loop ends here.
      });
      await Promise.all(handlers);
    },
  };
}

/** A local UDP service on `host:port` answering `NAME:` + each datagram. */
async function namedEcho(name: string, host: string, port: number): Promise<UdpSocket> {
  const s = await UdpSocket.bind(host, port);
  s.onMessage = (d, from) => {
    void s.send(new Uint8Array([...new TextEncoder().encode(`${name}:`), ...d]), from);
  };
  return s;
}

/** Send `total` bytes through the public TCP port, half-close, return the answer. */
async function through(port: number, total: number, seed: number): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await sendBlocks(conn, total, seed);
    await conn.closeWrite();
    let got = "";
    const buf = new Uint8Array(256);
    const more = () => readWithin(conn, buf, "the app's answer and its end", got.length);
    for (let n; (n = await more()) !== null;) {
      got += new TextDecoder().decode(buf.subarray(0, n));
    }
    return got;
  } finally {
    closeQuietly(conn);
  }
}

/**
 * A new public UDP peer (its own socket: its own flow) sends `text` until an answer comes
 * (each try waits up to 2 s; datagrams may be lost, answers are never timed).
 */
async function ask(port: number, text: string): Promise<string> {
  const sock = await UdpSocket.bind("127.0.0.1", 0);
  try {
    let answer: string | undefined;
    let wake = () => {};
    sock.onMessage = (d) => {
      answer = new TextDecoder().decode(d);
      wake();
    };
    for (let i = 0; i < 15 && answer === undefined; i++) {
      await sock.send(new TextEncoder().encode(text), { host: "127.0.0.1", port });
      await new Promise<void>((r) => {
        const t = setTimeout(r, 2_000);
        wake = () => (clearTimeout(t), r());
      });
    }
    if (answer === undefined) throw new Error(`no answer to ${text}`);
    return answer;
  } finally {
    await sock.close();
  }
}

Deno.test("tunnel group ports: TCP connections and UDP flows are spread over the members; kill -9 of the member that bound them hands them to the other, byte-exact", async () => {
  const tcpPort = freePort();
  const probe = await UdpSocket.bind("127.0.0.2", 0);
  const udpLocal = probe.addr.port;
  await probe.close();
  const probeUdp = await UdpSocket.bind("127.0.0.1", 0);
  const udpPort = probeUdp.addr.port;
  await probeUdp.close();
  const apps = [namedHasher("A"), namedHasher("B")];
  // Both members are asked for the same local UDP port (a server-defined tunnel): each
  // finds it on its own --local host.
  const echoes = [
    await namedEcho("A", "127.0.0.2", udpLocal),
    await namedEcho("B", "127.0.0.3", udpLocal),
  ];
  const procs: ServiceProcess[] = [];
  try {
    const server = await startService("tunnel-server.ts", [
      "--listen",
      "127.0.0.1:0",
      "--duplicate",
      "balance",
      "--host",
      `app.test=${id}`,
      `--tcp-ports=${tcpPort}-${tcpPort}`,
      `--udp-ports=${udpPort}-${udpPort}`,
      `--udp=${udpPort}:${udpLocal}=env:GROUP_ID`,
    ], { env: { GROUP_ID: id } });
    procs.push(server);
    const at = server.addrs.get("http")!;
    const member = async (i: number) => {
      const p = await startService("tunnel-client.ts", [
        "--server",
        `http://${at}`,
        "--local",
        `127.0.0.${2 + i}:1`,
        "--allow-port",
        String(udpLocal),
        "--tcp",
        `${tcpPort}=127.0.0.1:${apps[i].port}`,
      ], { readyCount: 0, ready: /msg="connected"/, env: { TUNNEL_IDENTIFIER: id } });
      procs.push(p);
      return p;
    };
    const memberA = await member(0);
    await member(1);
    await server.waitFor(/msg="client connected".* members=2/);

    // Round-robin over both members, connection by connection and flow by flow.
    const size = 3 * 1024 * 1024 + 17;
    const before: string[] = [];
    for (let seed = 1; seed <= 4; seed++) before.push(await through(tcpPort, size, seed));
    assertEquals(
      before,
      ["A", "B", "A", "B"].map((n, i) => `${n} ${blockStreamSha256(size, i + 1)}`),
    );
    const flows = [await ask(udpPort, "one"), await ask(udpPort, "two")];
    assertEquals(flows, ["A:one", "B:two"]);

    // The member that bound both ports is killed: the ports stay, the other member serves them.
    await memberA.stop("SIGKILL");
    await server.waitFor(/msg="tcp tunnel handed on".* members=1/);
    await server.waitFor(/msg="udp tunnel handed on".* members=1/);
    const after = await Promise.all([5, 6, 7, 8].map((seed) => through(tcpPort, size, seed)));
    assertEquals(after, [5, 6, 7, 8].map((seed) => `B ${blockStreamSha256(size, seed)}`));
    assertEquals([await ask(udpPort, "three"), await ask(udpPort, "four")], ["B:three", "B:four"]);

    // The last member out unbinds the ports.
    await procs[2].stop();
    let released = false;
    for (let i = 0; i < 1_000 && !released; i++) {
      try {
        Deno.listen({ hostname: "127.0.0.1", port: tcpPort }).close();
        released = true;
      } catch {
        await new Promise((r) => setTimeout(r, 20)); // not yet: the server is still closing it
      }
    }
    assert(released, "the TCP port was not released with the last member");
  } finally {
    for (const p of procs.reverse()) await p.stop("SIGKILL");
    for (const e of echoes) await e.close();
    for (const a of apps) await a.close();
  }
});

Deno.test("tunnel group ports: a member out of rotation (health check failing) gets no new TCP connection, and gets them again once back", async () => {
  const tcpPort = freePort();
  const apps = [namedHasher("A"), namedHasher("B")];
  // Each member's health check asks its own small HTTP app, which fails while `down`.
  const down = [false, false];
  const health = [0, 1].map((i) =>
    Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      () => new Response(null, { status: down[i] ? 503 : 200 }),
    )
  );
  const procs: ServiceProcess[] = [];
  try {
    const server = await startService("tunnel-server.ts", [
      "--listen",
      "127.0.0.1:0",
      "--duplicate",
      "balance",
      "--host",
      `app.test=${id}`,
      `--tcp-ports=${tcpPort}-${tcpPort}`,
    ]);
    procs.push(server);
    for (const i of [0, 1]) {
      procs.push(
        await startService("tunnel-client.ts", [
          "--server",
          `http://${server.addrs.get("http")}`,
          "--local",
          `127.0.0.1:${health[i].addr.port}`,
          ...["--health-check", "/healthz", "--health-interval", "100ms", "--health-failures", "1"],
          "--tcp",
          `${tcpPort}=127.0.0.1:${apps[i].port}`,
        ], { readyCount: 0, ready: /in rotation/, env: { TUNNEL_IDENTIFIER: id } }),
      );
    }
    const inRotation = () => server.lines.filter((l) => /msg="client healthy/.test(l)).length;
    const until = async (pred: () => boolean, what: string) => {
      for (let i = 0; !pred(); i++) {
        if (i > 3_000) throw new Error(`not reached: ${what}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    await until(() => inRotation() === 2, "both members in rotation");
    const size = 1024 * 1024;
    const names = async (seeds: number[]) => {
      const out: string[] = [];
      for (const seed of seeds) {
        const [name, hash] = (await through(tcpPort, size, seed)).split(" ");
        assertEquals(hash, blockStreamSha256(size, seed));
        out.push(name);
      }
      return out;
    };
    assertEquals((await names([1, 2])).sort(), ["A", "B"]);
    down[1] = true;
    await server.waitFor(/msg="client unhealthy: out of rotation"/);
    assertEquals(await names([3, 4, 5, 6]), ["A", "A", "A", "A"]);
    down[1] = false;
    await until(() => inRotation() === 3, "B back in rotation");
    assertEquals((await names([7, 8])).sort(), ["A", "B"]);
  } finally {
    for (const p of procs.reverse()) await p.stop("SIGKILL");
    for (const h of health) await h.shutdown();
    for (const a of apps) await a.close();
  }
});
