/**
 * seaprox's transparent `redir://` listener (seed 003): connections an iptables REDIRECT rule
 * sends to it are relayed to their original destination (SO_ORIGINAL_DST through FFI).
 *
 * The netns test builds a real path: a client namespace and a server namespace joined by a
 * veth pair (IPv4 and IPv6). In the server namespace run an origin (tests/_fusion_peer.ts
 * serve) and seaprox (`redir://[::]:0`, the installed permissions: FFI for libc only), with
 * `iptables`/`ip6tables -t nat -A PREROUTING -i <veth> --dport <origin> -j REDIRECT
 * --to-ports <seaprox>`. The client connects to the origin's address; the bytes must arrive
 * byte-exact both ways with half-close, over IPv4 (dual-stack socket, v4-mapped) and IPv6,
 * and an address on the deny list must be refused. Needs root; ignored otherwise, saying why.
 */
import { closeQuietly, OriginalDstError, parseSockaddr } from "../lib/net/mod.ts";
import {
  parseListenUrl,
  type ProxyConnectionRecord,
  ProxyUrlError,
  startSeaprox,
} from "../lib/proxy/mod.ts";
import { servicePermissions } from "../tools/install.ts";
import { assert, assertEquals, assertMatch, assertThrows } from "./_assert.ts";
import { netnsSkipReason, sh, Watched } from "./_netns.ts";
import { readWithin, run } from "./_util.ts";

// iptables/ip6tables are installed by the setup step (tools/setup.ts), like `ip`.
const skip = netnsSkipReason();
if (skip) console.log(`seaprox_redir_test: netns test ignored: ${skip}`);

const seaproxScript = new URL("../services/seaprox.ts", import.meta.url).pathname;
const peerScript = new URL("./_fusion_peer.ts", import.meta.url).pathname;
/**
 * The installed seaprox's permissions (tools/install.ts), but the whole environment: with only
 * `--allow-env=WARREN_*,SEAPROX_*` seaprox stops at start reading ALL_PROXY (the egress proxy
 * settings), a problem of its own that this test is not about.
 */
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

Deno.test("redir: sockaddr_in / sockaddr_in6 from SO_ORIGINAL_DST as host and port", () => {
  const sa = (family: number, port: number, addr: number[], at: number) => {
    const b = new Uint8Array(28);
    b.set([family, 0, port >> 8, port & 0xff]);
    b.set(addr, at);
    return b;
  };
  assertEquals(parseSockaddr(sa(2, 4444, [127, 0, 0, 2], 4)), { host: "127.0.0.2", port: 4444 });
  const v6 = (groups: number[]) => groups.flatMap((g) => [g >> 8, g & 0xff]);
  const cases: [number[], string][] = [
    [[0, 0, 0, 0, 0, 0, 0, 1], "::1"],
    [[0xfd00, 0x5e, 0x7e, 0, 0, 0, 0, 2], "fd00:5e:7e::2"],
    [[0x2001, 0xdb8, 0, 1, 0, 0, 1, 0], "2001:db8:0:1::1:0"], // a lone 0 stays
    [[1, 0, 0, 2, 0, 0, 3, 4], "1::2:0:0:3:4"], // of equal runs, the first
    [[0x2001, 0xdb8, 1, 2, 3, 4, 5, 6], "2001:db8:1:2:3:4:5:6"],
    [[0, 0, 0, 0, 0, 0xffff, 0xc612, 0x7e02], "198.18.126.2"], // v4-mapped
  ];
  for (const [groups, text] of cases) {
    assertEquals(parseSockaddr(sa(10, 80, v6(groups), 8)), { host: text, port: 80 });
  }
  const err = assertThrows(() => parseSockaddr(sa(1, 0, [], 4)));
  assert(err instanceof OriginalDstError && err.reason === "getsockopt", String(err));
});

Deno.test("redir: seaprox without --allow-ffi refuses a redir listener in one line", async () => {
  const r = await run(Deno.execPath(), [
    "run",
    ...basePermissions.filter((p) => !p.startsWith("--allow-ffi")),
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
      assertEquals(await readWithin(c, new Uint8Array(16), "seaprox closing the connection"), null);
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

/** `ip netns exec ns [prefix…] deno args…`, watched, added to `watched` (stopped by the caller). */
function spawnIn(
  watched: Watched[],
  ns: string,
  name: string,
  args: string[],
  prefix: string[] = [],
): Watched {
  const w = new Watched(
    new Deno.Command("ip", {
      args: ["netns", "exec", ns, ...prefix, Deno.execPath(), ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn(),
    name,
  );
  watched.push(w);
  return w;
}

/**
 * The netns scenario; with `viaHop`, seaprox sends every connection through a second seaprox
 * (a SOCKS5 hop in the server namespace) given as `--forward`, whose log must show each
 * original destination: the redir listener dials through the shared chain.
 */
async function redirScenario(viaHop: boolean): Promise<void> {
  const tag = `${Deno.pid}${String.fromCharCode(97 + counter++ % 26)}`;
  const clientNs = `wrc${tag}`, serverNs = `wrs${tag}`;
  const clientIf = `wr${tag}c`, serverIf = `wr${tag}s`;
  const octet = 16 + (Deno.pid + counter) % 200;
  const v4 = `198.18.${octet}`, v6 = `fd00:5e:${octet.toString(16)}:`;
  const allowed = { v4: `${v4}.2`, v6: `${v6}:2`, denied: `${v4}.3` };
  const bytes = 4 * 1024 * 1024;
  const watched: Watched[] = [];
  const inNs = (ns: string, name: string, args: string[]) => spawnIn(watched, ns, name, args);
  const ip = (args: string) => sh("ip", args.split(" "));
  try {
    await ip(`netns add ${clientNs}`);
    await ip(`netns add ${serverNs}`);
    await ip(
      `link add ${clientIf} netns ${clientNs} type veth peer name ${serverIf} netns ${serverNs}`,
    );
    const sides = [
      [clientNs, clientIf, [`${v4}.1/24`, `${v6}:1/64`]],
      [serverNs, serverIf, [`${allowed.v4}/24`, `${allowed.denied}/24`, `${allowed.v6}/64`]],
    ] as const;
    for (const [ns, dev, addrs] of sides) {
      for (const a of addrs) {
        await ip(`-n ${ns} addr add ${a} dev ${dev}${a.includes(":") ? " nodad" : ""}`);
      }
      await ip(`-n ${ns} link set ${dev} up`);
      await ip(`-n ${ns} link set lo up`);
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
    const seaproxArgs = ["run", ...basePermissions, seaproxScript];
    let hop: Watched | undefined;
    const forward: string[] = [];
    if (viaHop) {
      hop = inNs(serverNs, "hop", [...seaproxArgs, "--listen", "socks5://127.0.0.1:0"]);
      forward.push("--forward", `socks5://127.0.0.1:${portIn(await hop.waitFor(/"listening"/))}`);
    }
    const seaprox = inNs(serverNs, "seaprox", [
      ...seaproxArgs,
      ...["--listen", "redir://[::]:0", "--deny", allowed.denied, ...forward],
    ]);
    const redirPort = portIn(await seaprox.waitFor(/msg="listening" name=redir/));
    for (const tool of ["iptables", "ip6tables"]) {
      const rule = `-t nat -A PREROUTING -i ${serverIf} -p tcp --dport ${originPort} ` +
        `-j REDIRECT --to-ports ${redirPort}`;
      await sh("ip", ["netns", "exec", serverNs, tool, ...rule.split(" ")]);
    }

    for (const [i, host] of [allowed.v4, `[${allowed.v6}]`].entries()) {
      const target = `${host}:${originPort}`;
      const client = inNs(clientNs, `client ${host}`, [
        "run",
        "-A",
        peerScript,
        "connect",
        target,
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
      const dest = new RegExp(`msg="connection closed".* dest=${escape(target)} .* end=done`);
      assertMatch(await seaprox.waitFor(dest), /up=4194304 down=4194304/);
      if (hop) assertMatch(await hop.waitFor(dest), /up=4194304 down=4194304/);
    }

    const denied = inNs(clientNs, "client denied", [
      ...["run", "-A", peerScript, "connect", `${allowed.denied}:${originPort}`, "1000"],
    ]);
    await denied.done;
    const line = await seaprox.waitFor(/end=dial-failed/);
    assertMatch(line, new RegExp(` dest=${escape(allowed.denied)}:${originPort} `));
    assertMatch(line, /failure=not-allowed/);
    assertEquals(origin.count(/^result /), 2, "the denied connection never reached the origin");
    if (hop) assertEquals(hop.count(/msg="connection closed"/), 2, "nor the hop");
  } finally {
    for (const w of watched) await w.stop();
    for (const ns of [clientNs, serverNs]) {
      await sh("ip", ["netns", "del", ns]).catch((err) => console.error(`${ns}: ${err}`));
    }
  }
}

Deno.test({
  name: "redir netns: REDIRECTed connections reach their original destination byte-exact " +
    "(IPv4 and IPv6, half-close); a denied original destination is refused",
  ignore: skip !== undefined,
  fn: () => redirScenario(false),
});

Deno.test({
  name: "redir netns: through a --forward SOCKS5 hop, the hop dials each original destination",
  ignore: skip !== undefined,
  fn: () => redirScenario(true),
});

Deno.test({
  name: "redir netns: locally generated traffic (OUTPUT chain, seaprox's gid excluded) is " +
    "relayed byte-exact; a rule that catches seaprox's own dials is cut as a redirect loop",
  ignore: skip !== undefined,
  async fn() {
    const ns = `wro${Deno.pid}${String.fromCharCode(97 + counter++ % 26)}`;
    /** seaprox runs with this group id; the OUTPUT rule leaves its connections alone. */
    const seaproxGid = 4242;
    /** Redirected with no exclusion: seaprox's dial there comes back to it. Never bound. */
    const loopPort = 9;
    const bytes = 4 * 1024 * 1024;
    const watched: Watched[] = [];
    try {
      await sh("ip", ["netns", "add", ns]);
      await sh("ip", ["-n", ns, "link", "set", "lo", "up"]);
      const origin = spawnIn(watched, ns, "origin", [
        ...["run", "-A", peerScript, "serve", "127.0.0.1:0", `${bytes}`],
      ]);
      const originPort = portIn(await origin.waitFor(/msg="listening"/));
      const seaprox = spawnIn(watched, ns, "seaprox", [
        ...["run", ...basePermissions, seaproxScript],
        ...["--listen", "redir://127.0.0.1:0", "--max-conns", "64"],
      ], ["setpriv", `--regid=${seaproxGid}`, "--clear-groups"]);
      const redirPort = portIn(await seaprox.waitFor(/msg="listening" name=redir/));
      const rules = [
        `--dport ${originPort} -m owner ! --gid-owner ${seaproxGid}`,
        `--dport ${loopPort}`,
      ];
      for (const r of rules) {
        const rule = `-t nat -A OUTPUT -o lo -p tcp ${r} -j REDIRECT --to-ports ${redirPort}`;
        await sh("ip", ["netns", "exec", ns, "iptables", ...rule.split(" ")]);
      }

      const target = `127.0.0.1:${originPort}`;
      const client = spawnIn(watched, ns, "client", [
        ...["run", "-A", peerScript, "connect", target, `${bytes}`],
      ]);
      const got = parse(await client.waitFor(/^result /));
      const served = parse(await origin.waitFor(/^result /));
      assertEquals([got.bytes, served.bytes], [bytes, bytes]);
      assertEquals(served.sha256, got.sent, "upload hash");
      assertEquals(got.sha256, served.sent, "download hash");
      const dest = new RegExp(`msg="connection closed".* dest=${escape(target)} .* end=done`);
      assertMatch(await seaprox.waitFor(dest), /up=4194304 down=4194304/);

      const looped = spawnIn(watched, ns, "client loop", [
        ...["run", "-A", peerScript, "connect", `127.0.0.1:${loopPort}`, "1000"],
      ]);
      await looped.done;
      assertMatch(await seaprox.waitFor(/failure=redirect-loop/), /end=handshake-failed/);
      const loopDest = new RegExp(`msg="connection closed".* dest=127\\.0\\.0\\.1:${loopPort} `);
      await seaprox.waitFor(loopDest); // the client's connection (its dial came back to us)
      // The relay to the origin, the client's looping connection, seaprox's own dial: no more.
      assertEquals(seaprox.count(/msg="connection closed"/), 3, seaprox.lines.join("\n"));
    } finally {
      for (const w of watched) await w.stop();
      await sh("ip", ["netns", "del", ns]).catch((err) => console.error(`${ns}: ${err}`));
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
