/**
 * The observability and admin listeners cannot be exhausted (issue 16): a service whose fd
 * limit is lowered (prlimit) gets hundreds of partial requests on --metrics or --admin. The
 * listener caps them and its accept loop waits out "Too many open files" instead of the
 * process dying (Deno.serve died: `Uncaught Http: Error: Too many open files`); once the
 * flood is gone the endpoint answers again, and a partial request is closed by the head timer.
 */

import { assert, assertEquals } from "./_assert.ts";
import {
  readWithin,
  type ServiceProcess,
  setFdLimit,
  startService,
  TimedOutError,
} from "./_util.ts";

const partialHead = new TextEncoder().encode("GET /metrics HTTP/1.1\r\nHost: x\r\n");
const floodConns = 300;

/** The service's exit, or undefined while it runs. */
async function exited(svc: ServiceProcess): Promise<number | undefined> {
  return await Promise.race([svc.child.status.then((s) => s.code), undefined]);
}

function died(svc: ServiceProcess, code: number): Error {
  return new Error(`service died (exit ${code}) under the flood:\n${svc.lines.join("\n")}`);
}

/**
 * Open `n` connections to `port`, each sending a request head that never ends; stops at the
 * first refused connect (a dying service) and returns that error beside the connections.
 */
async function flood(port: number, n: number): Promise<{ conns: Deno.TcpConn[]; error?: Error }> {
  const conns: Deno.TcpConn[] = [];
  for (let i = 0; i < n; i++) {
    let c: Deno.TcpConn;
    try {
      c = await Deno.connect({ hostname: "127.0.0.1", port });
    } catch (error) {
      return { conns, error: error as Error };
    }
    conns.push(c);
    // The listener may already have closed it (over its cap): that is the point.
    await c.write(partialHead).catch(() => 0);
  }
  return { conns };
}

/** Wait for a log line, failing at once with the log if the service exits first. */
async function lineOrDeath(svc: ServiceProcess, re: RegExp): Promise<string> {
  const death = svc.child.status.then((s) => Promise.reject(died(svc, s.code)));
  return await Promise.race([svc.waitFor(re, 60_000), death]);
}

/**
 * Flood `port` while the service has few fds: it must log the fd shortage at accept (the
 * loop goes on), stay up, and answer `check` once the flood is closed.
 */
async function survivesFlood(
  svc: ServiceProcess,
  port: number,
  check: () => Promise<void>,
): Promise<void> {
  await setFdLimit(svc.child.pid, { openPlus: 16 });
  const { conns, error } = await flood(port, floodConns);
  try {
    await lineOrDeath(svc, /msg="accept failed, retrying".*Too many open files/);
  } finally {
    for (const c of conns) c.close();
  }
  assertEquals(error, undefined, "every flood connection was accepted");
  await check();
  await svc.waitFor(/msg="accepting again"/);
  assertEquals(await exited(svc), undefined, "the service still runs");
}

async function readToEnd(c: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(1024);
  // A reset instead of a FIN also means the server closed it; silence is no close.
  const next = () =>
    readWithin(c, buf, "the server to close it").catch((err) => {
      if (err instanceof TimedOutError) throw err;
      return null;
    });
  while ((await next()) !== null) { /* drain */ }
}

Deno.test("listeners: --metrics survives a flood of partial requests at a low fd limit", async () => {
  const svc = await startService("seaprox.ts", [
    ...["--listen", "static://127.0.0.1:0?to=127.0.0.1:9", "--metrics", "127.0.0.1:0"],
  ]);
  try {
    const line = await svc.waitFor(/msg="metrics listening"/);
    const addr = /addr=(\S+)/.exec(line)![1];
    const port = Number(addr.slice(addr.lastIndexOf(":") + 1));
    await survivesFlood(svc, port, async () => {
      const res = await fetch(`http://${addr}/metrics`);
      assertEquals(res.status, 200);
      assert((await res.text()).includes("warren_build_info"), "the metrics text");
    });
    // The head timer: a request head that never ends is closed by the server.
    const slow = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      await slow.write(partialHead);
      await readToEnd(slow);
    } finally {
      slow.close();
    }
    const text = await (await fetch(`http://${addr}/metrics`)).text();
    for (const reason of ["accept", "handshake-timeout"]) {
      const n = new RegExp(
        `warren_listener_errors_total\\{listener="metrics",addr="${addr}",reason="${reason}"\\} (\\d+)`,
      ).exec(text);
      assert(n && Number(n[1]) >= 1, `${reason} counted:\n${text}`);
    }
  } finally {
    await svc.stop();
  }
});

Deno.test("listeners: --admin survives a flood of partial requests at a low fd limit", async () => {
  const token = crypto.randomUUID();
  const svc = await startService("tunnel-server.ts", [
    ...["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
  ], { readyCount: 2, env: { TUNNEL_ADMIN_TOKEN: token } });
  try {
    const addr = svc.addrs.get("admin")!;
    const port = Number(addr.slice(addr.lastIndexOf(":") + 1));
    await survivesFlood(svc, port, async () => {
      const res = await fetch(`http://${addr}/status`, {
        headers: { authorization: `Bearer ${token}` },
      });
      assertEquals(res.status, 200);
      assertEquals(await res.json(), { hosts: [], clients: [] });
      const denied = await fetch(`http://${addr}/status`);
      assertEquals(denied.status, 401);
      await denied.body?.cancel();
    });
  } finally {
    await svc.stop();
  }
});
