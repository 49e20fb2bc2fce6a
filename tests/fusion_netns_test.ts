/**
 * Fusion over a real network: two namespaces joined by two veth pairs shaped with tc tbf,
 * fusion-client and fusion-server running inside them. 64 MiB each way by SHA-256 on equal
 * and unequal paths, a path taken down and one blackholed mid-transfer (both returning),
 * and seed 000 itself: ssh through fusion to a real sshd, streaming a file.
 * Ignored only where namespaces cannot be made (not root, or no kernel support), saying why.
 */
import { assert, assertEquals } from "./_assert.ts";
import { netnsSkipReason, sh, TwoPathNet, Watched } from "./_netns.ts";
import { sha256, within } from "./_util.ts";

const MiB = 1024 * 1024;
const deno = Deno.execPath();
const here = (p: string) => new URL(p, import.meta.url).pathname;
const peerScript = here("./_fusion_peer.ts");
const env = { FUSION_TOKEN: `netns-${crypto.randomUUID()}` };
const skip = netnsSkipReason();
if (skip) console.log(`fusion_netns_test: ignored: ${skip}`);
const ignore = skip !== undefined;
const silenceMs = 1000;

const listeningAddr = (line: string): string => /addr=(\S+)/.exec(line)![1];
const portOf = (addr: string): number => Number(addr.slice(addr.lastIndexOf(":") + 1));
const count = (w: Watched, re: RegExp): number => w.count(re);
/** The `via`/`label` of path `i` in fusion-client's log, as a regular expression. */
const via = (net: TwoPathNet, i: number): string =>
  `${net.paths[i].clientAddr}>${net.paths[i].serverAddr}:`.replaceAll(".", "\\.");
/**
 * Bound on waiting for one event (a path dropped, back, a session closed): generous, since a
 * busy machine delays them; nothing in the test depends on them being quick.
 */
const eventTimeoutMs = 90_000;
/** Bound on one 64 MiB transfer each way. */
const transferTimeoutMs = 240_000;

/** fusion-server in the server namespace and fusion-client in the client one. */
async function startFusion(
  net: TwoPathNet,
  target: string,
  procs: Watched[],
): Promise<{ client: Watched; server: Watched; clientPort: number }> {
  const server = new Watched(
    net.spawn(net.serverNs, deno, [
      "run",
      "-A",
      here("../services/fusion-server.ts"),
      "--listen",
      "0.0.0.0:0",
      "--target",
      target,
      "--silence-timeout",
      String(silenceMs),
    ], env),
    "fusion-server",
  );
  procs.push(server);
  const serverPort = portOf(listeningAddr(await server.waitFor(/msg="listening"/)));
  const client = new Watched(
    net.spawn(net.clientNs, deno, [
      "run",
      "-A",
      here("../services/fusion-client.ts"),
      "--listen",
      "127.0.0.1:0",
      ...net.paths.flatMap((p) => ["--path", `${p.clientAddr}>${p.serverAddr}:${serverPort}`]),
      "--silence-timeout",
      String(silenceMs),
    ], env),
    "fusion-client",
  );
  procs.push(client);
  const clientPort = portOf(listeningAddr(await client.waitFor(/msg="listening"/)));
  return { client, server, clientPort };
}

Deno.test({
  name: "fusion netns: 64 MiB each way over two shaped veth paths, paths failing and returning",
  ignore,
  sanitizeOps: true,
  sanitizeResources: true,
}, async (t) => {
  const size = 64 * MiB;
  const net = await TwoPathNet.create([200, 200]);
  const procs: Watched[] = [];
  try {
    const peer = new Watched(
      net.spawn(net.serverNs, deno, ["run", "-A", peerScript, "serve", "127.0.0.1:0", `${size}`]),
      "target",
    );
    procs.push(peer);
    const target = listeningAddr(await peer.waitFor(/msg="listening"/));
    const { client, clientPort } = await startFusion(net, target, procs);

    /**
     * One transfer through fusion; `during` runs while it is in flight. With `hold`, the
     * upload stops halfway until `during` is done, so whatever `during` waits for happens
     * mid-transfer however slow the machine is.
     */
    const transfer = async (during?: () => Promise<void>, hold = false) => {
      const before = count(peer, /^result /);
      const conn = new Watched(
        net.spawn(net.clientNs, deno, [
          "run",
          "-A",
          peerScript,
          "connect",
          `127.0.0.1:${clientPort}`,
          `${size}`,
          ...(hold ? [`${size / 2}`] : []),
        ]),
        "source",
      );
      try {
        await during?.();
        if (hold) {
          // Still mid-transfer: the source holds the second half of its upload until now.
          await conn.waitFor(/^paused sent=/, eventTimeoutMs);
          assertEquals(count(conn, /^result /), 0, "the transfer was still running");
          conn.child.kill("SIGUSR1");
        }
        const got = await conn.waitFor(/^result /, transferTimeoutMs);
        console.log(`  ${got}`);
        const atTarget = await peer.waitForNth(/^result /, before + 1, eventTimeoutMs);
        const field = (l: string, k: string) => new RegExp(` ${k}=(\\S+)`).exec(l)?.[1];
        assertEquals(field(got, "bytes"), String(size), "bytes down");
        assertEquals(field(got, "sha256"), field(atTarget, "sent"), "sha256 down");
        assertEquals(field(atTarget, "bytes"), String(size), "bytes up");
        assertEquals(field(atTarget, "sha256"), field(got, "sent"), "sha256 up");
      } finally {
        await conn.stop();
      }
    };

    await t.step("equal paths, 200 + 200 Mbit", () => transfer());

    await t.step("unequal paths, 320 + 80 Mbit (4:1)", async () => {
      await net.shape([320, 80]);
      await transfer();
    });

    // Each transfer is a new fusion session: its "path up" lines are counted from `ups`.
    const up = /msg="path up"/;
    const pathUp = (i: number) => new RegExp(`msg="path up" .*via="${via(net, i)}`);
    const pathDown = (i: number) => new RegExp(`msg="path down" .*label="${via(net, i)}`);

    await t.step("a path taken down mid-transfer comes back", async () => {
      await net.shape([100, 100]);
      const ups = count(client, up);
      const ups0 = count(client, pathUp(0));
      const downs0 = count(client, pathDown(0));
      await transfer(async () => {
        await client.waitForNth(up, ups + 2, eventTimeoutMs); // both paths of this session
        await net.linkDown(0);
        await client.waitForNth(pathDown(0), downs0 + 1, eventTimeoutMs);
        await net.linkUp(0);
        // ups0 + 1 was this session's first path 0; + 2 is the same path coming back.
        await client.waitForNth(pathUp(0), ups0 + 2, eventTimeoutMs);
      }, true);
      assert(count(client, pathDown(0)) > downs0, "the path was dropped");
      assert(count(client, up) >= ups + 3, "the path came back during the transfer");
    });

    await t.step("a path blackholed mid-transfer comes back", async () => {
      const ups = count(client, up);
      const ups1 = count(client, pathUp(1));
      const silents = count(client, /msg="path silent/);
      const downs1 = count(client, pathDown(1));
      await transfer(async () => {
        await client.waitForNth(up, ups + 2, eventTimeoutMs);
        await net.blackhole(1);
        await client.waitForNth(pathDown(1), downs1 + 1, eventTimeoutMs);
        await net.unblackhole(1);
        await client.waitForNth(pathUp(1), ups1 + 2, eventTimeoutMs);
      }, true);
      assert(count(client, /msg="path silent/) > silents, "the silent path was dropped");
      assert(count(client, up) >= ups + 3, "the path came back during the transfer");
    });
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await net.destroy();
  }
});

Deno.test({
  name: "fusion netns: ssh through fusion to a real sshd runs a command, streams a file, " +
    "survives a path going down",
  ignore,
  sanitizeOps: true,
  sanitizeResources: true,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "fusion-sshd-" });
  const net = await TwoPathNet.create([200, 200]);
  const procs: Watched[] = [];
  try {
    // sshd's privilege-separation directory is compiled in; Debian's init creates it at boot,
    // which a container or CI machine never ran. Left in place: it is the standard one, and
    // another sshd may be using it.
    await Deno.mkdir("/run/sshd", { recursive: true, mode: 0o755 });
    await sh("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", `${dir}/host_key`]);
    await sh("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", `${dir}/user_key`]);
    await Deno.copyFile(`${dir}/user_key.pub`, `${dir}/authorized_keys`);
    const file = new Uint8Array(24 * MiB);
    for (let o = 0; o < file.length; o += 65536) {
      crypto.getRandomValues(file.subarray(o, o + 65536));
    }
    await Deno.writeFile(`${dir}/file`, file);
    // A free port: bind, read it, close (the server namespace is empty anyway).
    const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const sshdPort = probe.addr.port;
    probe.close();
    await Deno.writeTextFile(
      `${dir}/sshd_config`,
      [
        `Port ${sshdPort}`,
        "ListenAddress 127.0.0.1",
        `HostKey ${dir}/host_key`,
        `PidFile ${dir}/sshd.pid`,
        "UsePAM no",
        "StrictModes no",
        "PermitRootLogin yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        `AuthorizedKeysFile ${dir}/authorized_keys`,
        "",
      ].join("\n"),
    );
    const sshd = new Watched(
      net.spawn(net.serverNs, "/usr/sbin/sshd", ["-D", "-e", "-f", `${dir}/sshd_config`]),
      "sshd",
    );
    procs.push(sshd);
    await sshd.waitFor(/Server listening/);
    const { client, server, clientPort } = await startFusion(
      net,
      `127.0.0.1:${sshdPort}`,
      procs,
    );

    const ssh = async (command: string): Promise<{ code: number; out: Uint8Array }> => {
      const child = new Deno.Command("ip", {
        args: [
          "netns",
          "exec",
          net.clientNs,
          "ssh",
          "-p",
          String(clientPort),
          "-o",
          "StrictHostKeyChecking=no",
          "-o",
          "UserKnownHostsFile=/dev/null",
          "-o",
          "BatchMode=yes",
          "-o",
          "LogLevel=ERROR",
          "-i",
          `${dir}/user_key`,
          "root@127.0.0.1",
          command,
        ],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      });
      const out = await within(child.output(), `ssh ${command} to finish`, 120_000);
      if (out.code !== 0) console.error(new TextDecoder().decode(out.stderr));
      return { code: out.code, out: out.stdout };
    };
    const hello = await ssh("echo fused over $((1+1)) paths");
    assertEquals(hello.code, 0);
    assertEquals(new TextDecoder().decode(hello.out), "fused over 2 paths\n");
    const cat = await ssh(`cat ${dir}/file`);
    assertEquals(cat.code, 0);
    assertEquals(cat.out.length, file.length);
    assertEquals(sha256(cat.out), sha256(file));
    // The seed's promise: the ssh transfer survives a path dying under it.
    await net.shape([50, 50]);
    const during = ssh(`cat ${dir}/file`);
    await new Promise((r) => setTimeout(r, 1200));
    await net.linkDown(0);
    const survived = await during;
    await net.linkUp(0);
    assertEquals(survived.code, 0);
    assertEquals(sha256(survived.out), sha256(file));
    // Every session ended cleanly at both ends (fins exchanged, no reset).
    for (const w of [client, server]) {
      await w.waitForNth(/msg="session closed"/, 3, eventTimeoutMs);
      assertEquals(count(w, /msg="session closed".* end=done /), 3, `${w.name} sessions`);
    }
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await net.destroy();
    await Deno.remove(dir, { recursive: true });
  }
});
