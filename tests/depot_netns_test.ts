/**
 * The reverse-proxy property for real: depot-local runs in its own network namespace, where
 * the target listens on that namespace's 127.0.0.1 (unreachable from the host). A SOCKS
 * client on the host reaches it through depot-server. Needs root (`ip netns`); ignored
 * otherwise, saying why.
 */
import { DepotServer } from "../lib/depot/mod.ts";
import { writeAll } from "../lib/net/mod.ts";
import { assertEquals } from "./_assert.ts";
import { socksDial } from "./_depot.ts";
import { nextWithin, readAll, run } from "./_util.ts";
import { netnsSkipReason } from "./_netns.ts";

const skip = netnsSkipReason();
if (skip) console.log(`depot_netns_test: ignored: ${skip}`);

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Run `cmd` and fail the test with its stderr when it fails. */
async function sh(cmd: string, ...args: string[]): Promise<string> {
  const r = await run(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(" ")}: ${r.stderr.trim()}`);
  return r.stdout;
}

/**
 * Read lines of `stream` until one matches; returns the match. Reads the stream itself (no
 * pipeThrough, which would keep it locked), so the caller can still cancel it afterwards.
 */
async function lineMatching(
  stream: ReadableStream<Uint8Array>,
  re: RegExp,
): Promise<RegExpExecArray> {
  let pending = "";
  const decoder = new TextDecoder();
  const reader = stream.getReader();
  try {
    while (true) {
      const { value, done } = await nextWithin(reader, `a line matching ${re} (got: ${pending})`);
      if (done) throw new Error(`stream ended before ${re}: ${pending}`);
      pending += decoder.decode(value, { stream: true });
      const m = re.exec(pending);
      if (m) return m;
    }
  } finally {
    reader.releaseLock();
  }
}

Deno.test({
  name: "depot netns: a target on the exit namespace's own loopback is reached through depot",
  ignore: skip !== undefined,
  async fn() {
    const tag = crypto.randomUUID().slice(0, 6);
    const ns = `depot-t-${tag}`;
    const hostIf = `dph${tag}`, nsIf = `dpl${tag}`;
    const octet = 16 + (parseInt(tag.slice(0, 2), 16) % 200);
    const hostIp = `10.213.${octet}.1`, nsIp = `10.213.${octet}.2`;
    const children: { child: Deno.ChildProcess; piped: ReadableStream<Uint8Array> }[] = [];
    let server: DepotServer | undefined;
    try {
      await sh("ip", "netns", "add", ns);
      await sh("ip", "link", "add", hostIf, "type", "veth", "peer", "name", nsIf);
      await sh("ip", "link", "set", nsIf, "netns", ns);
      await sh("ip", "addr", "add", `${hostIp}/30`, "dev", hostIf);
      await sh("ip", "link", "set", hostIf, "up");
      await sh("ip", "netns", "exec", ns, "ip", "addr", "add", `${nsIp}/30`, "dev", nsIf);
      await sh("ip", "netns", "exec", ns, "ip", "link", "set", nsIf, "up");
      await sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up");

      server = new DepotServer({ token: "ns-token", heartbeatMs: 500 });
      server.start({
        control: Deno.listen({ hostname: hostIp, port: 0 }),
        socks: Deno.listen({ hostname: "127.0.0.1", port: 0 }),
        tunnel: Deno.listen({ hostname: hostIp, port: 0 }),
      });

      // An echo target on the namespace's loopback: invisible from the host.
      const target = new Deno.Command("ip", {
        args: [
          "netns",
          "exec",
          ns,
          Deno.execPath(),
          "eval",
          `
          const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
          console.log("port=" + l.addr.port);
          for await (const c of l) {
            (async () => {
              const b = new Uint8Array(4096);
              for (let n = await c.read(b); n !== null; n = await c.read(b)) await c.write(b.subarray(0, n));
              await c.closeWrite();
            })().catch(() => {});
          }`,
        ],
        stdout: "piped",
        stderr: "null",
      }).spawn();
      children.push({ child: target, piped: target.stdout });
      const targetPort = Number((await lineMatching(target.stdout, /port=(\d+)/))[1]);

      const local = new Deno.Command("ip", {
        args: [
          "netns",
          "exec",
          ns,
          Deno.execPath(),
          "run",
          "-A",
          new URL("../services/depot-local.ts", import.meta.url).pathname,
          "--server",
          `${hostIp}:${server.addrs.control.port}`,
        ],
        env: { DEPOT_TOKEN: "ns-token" },
        stdout: "null",
        stderr: "piped",
      }).spawn();
      children.push({ child: local, piped: local.stderr });
      await lineMatching(local.stderr, /msg="connected"/);

      const c = await socksDial(server.addrs.socks.port, { host: "127.0.0.1", port: targetPort });
      await writeAll(c, enc.encode("from the host"));
      await c.closeWrite();
      assertEquals(dec.decode(await readAll(c)), "from the host");
      c.close();
      assertEquals(server.status().exits[0].remote.startsWith(nsIp), true);
    } finally {
      for (const { child, piped } of children) {
        try {
          child.kill("SIGKILL");
        } catch {
          // already exited
        }
        await child.status;
        await piped.cancel().catch(() => {
          // Already released or closed: nothing left to drain.
        });
      }
      await server?.stop(100);
      await run("ip", ["netns", "del", ns]); // removes the veth pair with it
      await run("ip", ["link", "del", hostIf]); // in case the namespace was never created
    }
  },
});
