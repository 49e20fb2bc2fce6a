import { assert, assertEquals, assertMatch, assertRejects } from "./_assert.ts";
import { deadlines, dial, NetError, resolveHost, serve } from "../lib/net/mod.ts";
import { listenLocal, run, until, within } from "./_util.ts";

Deno.test("dial: connects and tries every address (localhost may resolve to ::1 first)", async () => {
  const l = listenLocal(); // 127.0.0.1 only: a ::1 attempt must be refused and skipped
  const [c, s] = await Promise.all([
    dial("localhost", l.addr.port, { prefer: "ipv6" }),
    l.accept(),
  ]);
  c.close();
  s.close();
  l.close();
});

Deno.test("dial: refused port fails with reason refused", async () => {
  const l = listenLocal();
  const port = l.addr.port;
  l.close();
  const e = await assertRejects(dial("127.0.0.1", port));
  assert(e instanceof NetError);
  assertEquals(e.reason, "refused");
});

Deno.test("dial: unresolvable name fails with reason resolve", async () => {
  const e = await assertRejects(dial("no-such-host.invalid", 80, { timeoutMs: 5000 }));
  assert(e instanceof NetError);
  assertEquals(e.reason, "resolve");
});

Deno.test("dial: abort signal fails with reason aborted", async () => {
  const ac = new AbortController();
  ac.abort();
  const e = await assertRejects(dial("127.0.0.1", 9, { signal: ac.signal }));
  assert(e instanceof NetError);
  assertEquals(e.reason, "aborted");
});

Deno.test("resolveHost: literals pass through, preference orders families", async () => {
  assertEquals(await resolveHost("[::1]"), ["::1"]);
  assertEquals(await resolveHost("10.1.2.3"), ["10.1.2.3"]);
  const v4 = await resolveHost("localhost", "ipv4");
  assert(v4[0].includes("."), `ipv4 first: ${v4}`);
});

/**
 * The accept queue of the TCP listener on 127.0.0.1:`port` as the kernel counts it (`ss`):
 * connections queued, and the backlog. Linux drops every SYN while queued > backlog.
 */
async function acceptQueue(port: number): Promise<{ queued: number; backlog: number }> {
  const r = await run("ss", ["-ltnH", `src 127.0.0.1:${port}`]);
  // LISTEN <Recv-Q: queued> <Send-Q: backlog> <local> <peer>
  const f = r.stdout.trim().split(/\s+/);
  if (r.code !== 0 || f[0] !== "LISTEN") {
    throw new Error(`ss: no listener on ${port}: ${r.stdout}${r.stderr}`);
  }
  return { queued: Number(f[1]), backlog: Number(f[2]) };
}

Deno.test("dial: a destination that never answers times out; an abort mid-connect is aborted", async () => {
  // A listener that never accepts: once its queue is full the kernel drops further SYNs, so
  // the next connect hangs (no route or firewall rule needed). The queue is filled and seen
  // full in the kernel before any dial is expected to hang: a dial that timed out is no proof
  // (on a loaded box a loopback connect may take longer than its 200 ms).
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = l.addr.port;
  const held: Deno.TcpConn[] = [];
  try {
    // backlog + 1 connects complete (the queue takes one past its backlog), then none.
    const { backlog } = await acceptQueue(port);
    while (held.length <= backlog) {
      held.push(await within(dial("127.0.0.1", port, { timeoutMs: 60_000 }), "a queued connect"));
    }
    await until(
      `the accept queue of ${port} full (${backlog} + 1 queued)`,
      async () => (await acceptQueue(port)).queued > backlog,
    );
    const timedOut = await assertRejects(
      within(dial("127.0.0.1", port, { timeoutMs: 200 }), "the 200 ms dial's timeout"),
    );
    assert(timedOut instanceof NetError, String(timedOut));
    assertEquals(timedOut.reason, "timeout");
    assertMatch(timedOut.message, /timed out after 200 ms/);
    const ac = new AbortController();
    const abortSoon = setTimeout(() => ac.abort(), 50);
    const e = await assertRejects(
      within(
        dial("127.0.0.1", port, { timeoutMs: 60_000, signal: ac.signal }),
        "the dial aborted after 50 ms",
      ),
    );
    clearTimeout(abortSoon);
    assert(e instanceof NetError);
    assertEquals(e.reason, "aborted");

    // A settled dial's controller serves the next dial: nothing of the earlier dial may reach
    // it (its caller's signal aborting later must not cut the next one).
    const other = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const first = new AbortController();
    const done = await dial("127.0.0.1", other.addr.port, { signal: first.signal });
    done.close();
    other.close();
    const second = new AbortController();
    const settled = dial("127.0.0.1", l.addr.port, { timeoutMs: 60_000, signal: second.signal })
      .then((c) => {
        c.close();
        return "connected";
      }, (err: NetError) => `rejected: ${err.reason}`);
    first.abort();
    let wait: ReturnType<typeof setTimeout> | undefined;
    const pause = new Promise<string>((r) => wait = setTimeout(() => r("pending"), 200));
    assertEquals(await Promise.race([settled, pause]), "pending", "the earlier dial's abort");
    clearTimeout(wait);
    second.abort();
    assertEquals(await within(settled, "the aborted dial"), "rejected: aborted");

    // serve()'s connection context as the abort (seaprox's way, no AbortSignal made): the
    // handshake timer firing mid-connect aborts the dial through the context's own listeners.
    const outcome = Promise.withResolvers<string>();
    const server = serve(listenLocal(), async (_conn, ctx) => {
      const r = await dial("127.0.0.1", port, { timeoutMs: 60_000, signal: ctx })
        .then((c) => (c.close(), "connected"), (err: NetError) => `rejected: ${err.reason}`);
      outcome.resolve(r);
    }, { handshakeTimeoutMs: 100 });
    const client = await dial("127.0.0.1", server.addr.port);
    assertEquals(
      await within(outcome.promise, "the dial cut by the handshake timeout"),
      "rejected: aborted",
    );
    client.close();
    await server.stop();
    assertEquals(deadlines.size, 0, "the dials left nothing on the wheel");
  } finally {
    for (const c of held) c.close();
    l.close();
  }
});
