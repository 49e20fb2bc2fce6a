/**
 * seaprox's transparent `redir://` listener (seed 003): connections an iptables REDIRECT rule
 * sends to it are relayed to their original destination (SO_ORIGINAL_DST through FFI).
 *
 * The netns test builds a real path: a client namespace and a server namespace joined by a
 * veth pair (IPv4 and IPv6). In the server namespace run an origin (tests/_fusion_peer.ts
 * serve) and seaprox (`redir://[::]:0`, the installed permissions plus --allow-ffi), with
 * `iptables`/`ip6tables -t nat -A PREROUTING -i <veth> --dport <origin> -j REDIRECT
 * --to-ports <seaprox>`. The client connects to the origin's address; the bytes must arrive
 * byte-exact both ways with half-close, over IPv4 (dual-stack socket, v4-mapped) and IPv6,
 * and an address on the deny list must be refused. Needs root; ignored otherwise, saying why.
 */
import { closeQuietly } from "../lib/net/mod.ts";
import {
  parseListenUrl,
  type ProxyConnectionRecord,
  ProxyUrlError,
  startSeaprox,
} from "../lib/proxy/mod.ts";
import { servicePermissions } from "../tools/install.ts";
import { assert, assertEquals, assertMatch, assertThrows } from "./_assert.ts";
import { netnsSkipReason, sh, Watched } from "./_netns.ts";
import { run } from "./_util.ts";

// iptables/ip6tables are installed by the setup step (tools/setup.ts), like `ip`.
const skip = netnsSkipReason();
if (skip) console.log(`seaprox_redir_test: netns test ignored: ${skip}`);

const seaproxScript = new URL("../services/seaprox.ts", import.meta.url).pathname;
const peerScript = new URL("./_fusion_peer.ts", import.meta.url).pathname;
/** The installed seaprox's permissions (tools/install.ts) with the full environment. */
const basePermissions = servicePermissions("seaprox").filter((p) => !p.startsWith("--allow-env"))
  .concat("--allow-env");

Deno.test("redir url: no options, no credentials", () => {
  const s = parseListenUrl("redir://[::]:0");
  assertEquals(s.scheme, "redir");
  assertEquals(s.addr, { host: "::", port: 0 });
  for (
    const [url, reason] of [
      ["redir://127.0.0.1:0?to=example.org:80", "bad-option"],
      ["redir://127.0.0.1:0?proxy-protocol=1", "bad-option"],
      ["redir://u:p@127.0.0.1:0", "bad-credentials"],
    ]
  ) {
    const err = assertThrows(() => parseListenUrl(url));
    assert(err instanceof ProxyUrlError && err.reason === reason, `${url}: ${err}`);
  }
});

Deno.test("redir: seaprox without --allow-ffi refuses a redir listener in one line", async () => {
  const r = await run(Deno.execPath(), [
    "run",
    ...basePermissions,
    seaproxScript,
    "--listen",
    "redir://127.0.0.1:0",
  ]);
  assert(r.code !== 0, `exit ${r.code}`);
  const lines = r.stderr.trim().split("\n");
  assertEquals(lines.length, 1, r.stderr);
  assertMatch(lines[0], /redir:\/\/127\.0\.0\.1:0: .*SO_ORIGINAL_DST.*--allow-ffi/);
});

Deno.test("redir: a client connecting to the listener directly is closed, not relayed", async () => {
  const closed = Promise.withResolvers<ProxyConnectionRecord>();
  const sp = await startSeaprox({
    listeners: [parseListenUrl("redir://127.0.0.1:0")],
    hooks: { onClose: (rec) => closed.resolve(rec) },
  });
  try {
    const c = await Deno.connect({ hostname: "127.0.0.1", port: sp.servers[0].addr.port });
    try {
      assertEquals(await c.read(new Uint8Array(16)), null);
    } finally {
      closeQuietly(c);
    }
    const rec = await closed.promise;
    assertEquals(rec.end, "handshake-failed");
    assertEquals(rec.failure, "not-redirected");
  } finally {
    await sp.stop(0);
  }
});

let counter = 0;

Deno.test({
  name: "redir netns: REDIRECTed connections reach their original destination byte-exact " +
    "(IPv4 and IPv6, half-close); a denied original destination is refused",
  ignore: skip !== undefined,
  async fn() {
    const tag = `${Deno.pid}${String.fromCharCode(97 + counter++ % 26)}`;
    const clientNs = `wrc${tag}`, serverNs = `wrs${tag}`;
    const clientIf = `wr${tag}c`, serverIf = `wr${tag}s`;
    const octet = 16 + Deno.pid % 200;
    const v4 = `198.18.${octet}`, v6 = `fd00:5e:${octet.toString(16)}:`;
    const allowed = { v4: `${v4}.2`, v6: `${v6}:2`, denied: `${v4}.3` };
    const bytes = 4 * 1024 * 1024;
    const watched: Watched[] = [];
    const inNs = (ns: string, name: string, args: string[]) => {
      const w = new Watched(
        new Deno.Command("ip", {
          args: ["netns", "exec", ns, Deno.execPath(), ...args],
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
        }).spawn(),
        name,
      );
      watched.push(w);
      return w;
    };
    const nsSh = (ns: string, ...args: string[]) => sh("ip", ["netns", "exec", ns, ...args]);
    try {
      await sh("ip", ["netns", "add", clientNs]);
      await sh("ip", ["netns", "add", serverNs]);
      await sh("ip", [
        "link",
        "add",
        clientIf,
        "netns",
        clientNs,
        "type",
        "veth",
        "peer",
        "name",
        serverIf,
        "netns",
        serverNs,
      ]);
      for (
        const [ns, dev, addrs] of [
          [clientNs, clientIf, [`${v4}.1/24`, `${v6}:1/64`]],
          [serverNs, serverIf, [`${allowed.v4}/24`, `${allowed.denied}/24`, `${allowed.v6}/64`]],
        ] as const
      ) {
        for (const a of addrs) {
          await sh("ip", [
            "-n",
            ns,
            "addr",
            "add",
            a,
            "dev",
            dev,
            ...(a.includes(":") ? ["nodad"] : []),
          ]);
        }
        await sh("ip", ["-n", ns, "link", "set", dev, "up"]);
        await sh("ip", ["-n", ns, "link", "set", "lo", "up"]);
      }

      const origin = inNs(serverNs, "origin", [
        "run",
        "-A",
        peerScript,
        "serve",
        "[::]:0",
        `${bytes}`,
      ]);
      const originPort = portIn(await origin.waitFor(/msg="listening"/));
      const seaprox = inNs(serverNs, "seaprox", [
        "run",
        ...basePermissions,
        "--allow-ffi",
        seaproxScript,
        "--listen",
        "redir://[::]:0",
        "--deny",
        allowed.denied,
      ]);
      const redirPort = portIn(await seaprox.waitFor(/msg="listening" name=redir/));
      for (const tool of ["iptables", "ip6tables"]) {
        await nsSh(
          serverNs,
          tool,
          "-t",
          "nat",
          "-A",
          "PREROUTING",
          "-i",
          serverIf,
          "-p",
          "tcp",
          "--dport",
          `${originPort}`,
          "-j",
          "REDIRECT",
          "--to-ports",
          `${redirPort}`,
        );
      }

      for (const [i, host] of [allowed.v4, `[${allowed.v6}]`].entries()) {
        const client = inNs(clientNs, `client ${host}`, [
          "run",
          "-A",
          peerScript,
          "connect",
          `${host}:${originPort}`,
          `${bytes}`,
        ]);
        const got = parse(await client.waitFor(/^result /));
        assertEquals((await client.done).code, 0);
        const served = parse(await origin.waitForNth(/^result /, i + 1));
        assertEquals(got.bytes, bytes, `${host}: bytes back`);
        assertEquals(served.bytes, bytes, `${host}: bytes at the origin`);
        assertEquals(served.sha256, got.sent, `${host}: upload hash`);
        assertEquals(got.sha256, served.sent, `${host}: download hash`);
        // seaprox recovered the address the client dialled (not its own, not the origin's bind).
        const bare = host.replace(/[[\]]/g, "");
        const line = await seaprox.waitFor(
          new RegExp(`msg="connection closed".*${escape(bare)}\\]?:${originPort}.* end=done`),
        );
        assertMatch(line, /up=4194304 down=4194304/);
      }

      const denied = inNs(clientNs, "client denied", [
        "run",
        "-A",
        peerScript,
        "connect",
        `${allowed.denied}:${originPort}`,
        "1000",
      ]);
      await denied.done;
      const line = await seaprox.waitFor(/end=dial-failed/);
      assertMatch(line, new RegExp(`${escape(allowed.denied)}:${originPort}`));
      assertMatch(line, /failure=not-allowed/);
      assertEquals(origin.count(/^result /), 2, "the denied connection never reached the origin");
    } finally {
      for (const w of watched) await w.stop();
      for (const ns of [clientNs, serverNs]) {
        await sh("ip", ["netns", "del", ns]).catch((err) => console.error(`${ns}: ${err}`));
      }
    }
  },
});

/** The port of the `addr=` field of a log line. */
function portIn(line: string): number {
  const m = /addr=\S*:(\d+)/.exec(line);
  if (!m) throw new Error(`no addr= in ${line}`);
  return Number(m[1]);
}

/** The fields of a `_fusion_peer.ts` result line. */
function parse(line: string): { bytes: number; sha256: string; sent: string } {
  const f = Object.fromEntries(line.split(" ").slice(1).map((kv) => kv.split("=")));
  return { bytes: Number(f.bytes), sha256: f.sha256, sent: f.sent };
}

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
