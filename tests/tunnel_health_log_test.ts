/**
 * The health transition lines are bounded (lib/tunnel/health_log.ts), the server's per client
 * and the tunnel-client's of its own check: the first ones of a window in full, then one
 * summary line per window with the counts. Once with the window ends driven by hand, once
 * with a real client whose app flaps on every check.
 */

import { assert, assertEquals } from "./_assert.ts";
import { Logger } from "../lib/log.ts";
import { clientHealthLines, healthLinesPerWindow, HealthLog } from "../lib/tunnel/mod.ts";
import { startClient, startTunnel } from "./_tunnel.ts";
import { within } from "./_util.ts";

/** A logger whose lines land in `lines`. */
function capture(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  return { log: new Logger("info", { svc: "t" }, (l) => lines.push(l)), lines };
}

/** A schedule whose window ends the test runs by hand. */
function manual() {
  const pending: (() => void)[] = [];
  return {
    schedule: (fn: () => void) => {
      pending.push(fn);
      return () => pending.splice(pending.indexOf(fn), 1);
    },
    pending,
    /** End the current window. */
    fire: () => pending.shift()!(),
  };
}

/**
 * The health checks' own timeout in the tests with a real app: a hang's bound. The counts they
 * compare assume every check ends with the app's answer; at the default 3 s a loaded box could
 * time a check out, a failure the app never sent.
 */
const checkTimeoutMs = 60_000;

const full = (lines: string[]) => lines.filter((l) => /msg="client (un)?healthy/.test(l));
const summaries = (lines: string[]) => lines.filter((l) => /msg="client health flapping/.test(l));

Deno.test("health log: the first transitions of a window in full, then one summary per window until a quiet one", () => {
  const { log, lines } = capture();
  const clock = manual();
  const h = new HealthLog(log, { schedule: clock.schedule });
  // 10 transitions: out, in, out, in, ... (the last one: in).
  for (let i = 0; i < 10; i++) h.transition(i % 2 === 1, { members: 2, error: "503" });
  assertEquals(full(lines).length, healthLinesPerWindow);
  assert(
    /level=warn .*msg="client unhealthy: out of rotation".* error=503/.test(lines[0]),
    lines[0],
  );
  assert(/level=info .*msg="client healthy: in rotation"/.test(lines[1]), lines[1]);
  assertEquals(summaries(lines), []);
  assertEquals(clock.pending.length, 1);
  clock.fire();
  assertEquals(lines.length, healthLinesPerWindow + 1);
  assert(
    /level=info .*msg="client health flapping: transitions not logged" out=3 in=3 healthy=true/
      .test(lines.at(-1)!),
    lines.at(-1),
  );
  // Still flapping: the next window has its summary only.
  h.transition(false, { error: "refused" });
  h.transition(true, {});
  h.transition(false, { error: "timeout" });
  assertEquals(lines.length, healthLinesPerWindow + 1);
  clock.fire();
  assert(/level=warn .*out=2 in=1 healthy=false.* error=timeout/.test(lines.at(-1)!), lines.at(-1));
  // A quiet window ends the summaries: the next transitions are logged in full again.
  clock.fire();
  assertEquals(lines.length, healthLinesPerWindow + 2);
  assertEquals(clock.pending.length, 0);
  h.transition(true, {});
  assertEquals(full(lines).length, healthLinesPerWindow + 1);
  // The client leaves with transitions held back: they are summed up, the window cancelled.
  for (let i = 0; i < 6; i++) h.transition(i % 2 === 0, {}); // in, out, in full; out, in, out held
  assertEquals(full(lines).length, 2 * healthLinesPerWindow);
  h.close();
  assertEquals(clock.pending.length, 0);
  assert(/out=2 in=1 healthy=false$/.test(lines.at(-1)!), lines.at(-1));
  assertEquals(summaries(lines).length, 3);
});

Deno.test("health log: the tunnel-client's lines about its own check, held while flapping", () => {
  const { log, lines } = capture();
  const clock = manual();
  const h = new HealthLog(log, { schedule: clock.schedule, lines: clientHealthLines });
  for (let i = 0; i < healthLinesPerWindow; i++) {
    assert(!h.holding);
    h.transition(i % 2 === 0, { path: "/healthz" });
  }
  assert(h.holding);
  h.transition(false, { path: "/healthz", error: "503" });
  assertEquals(lines.length, healthLinesPerWindow);
  assert(/level=info .*msg="health check passes: in rotation" path=\/healthz/.test(lines[0]));
  assert(/level=warn .*msg="health check failing: out of rotation"/.test(lines[1]), lines[1]);
  clock.fire();
  assert(
    /level=warn .*msg="health check flapping: transitions not logged" out=1 in=0 healthy=false path=\/healthz error=503$/
      .test(lines.at(-1)!),
    lines.at(-1),
  );
  assert(h.holding); // still flapping: the next window has its summary only
  clock.fire(); // a quiet window
  assert(!h.holding);
  assertEquals(clock.pending.length, 0);
  h.close();
  assertEquals(lines.length, healthLinesPerWindow + 1);
});

Deno.test("health log: a client whose app flaps on every check writes a bounded number of lines at the server and the client", async () => {
  let checks = 0;
  const app = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => new Response(null, { status: checks++ % 2 === 0 ? 200 : 503 }),
  );
  const server = capture();
  const t = startTunnel({ log: server.log });
  const id = "identifier-flapping-health-01";
  await within(t.server.addHost("flap.test", id), "addHost flap.test");
  const client = capture();
  const c = startClient({
    server: t.url,
    identifier: id,
    local: { host: "127.0.0.1", port: app.addr.port },
    healthCheck: { path: "/healthz", intervalMs: 5, failures: 1, timeoutMs: checkTimeoutMs },
    log: client.log,
  });
  try {
    await c.connected();
    const deadline = Date.now() + 60_000;
    while (checks < 40) {
      if (Date.now() > deadline) throw new Error(`only ${checks} health checks`);
      await new Promise((r) => setTimeout(r, 20));
    }
  } finally {
    await c.stop();
    await t.close();
    await app.shutdown();
  }
  // Each side logged the first transitions in full and summed up the rest (here at the
  // client's end, or at a window's end too when the test ran past a minute).
  const held = (lines: string[], re: RegExp) =>
    lines.filter((l) => re.test(l)).map((l) => {
      const m = / out=(\d+) in=(\d+) /.exec(l)!;
      return Number(m[1]) + Number(m[2]);
    });
  const clientFull = client.lines.filter((l) => /msg="health check (passes|failing)/.test(l));
  assertEquals(clientFull.length, healthLinesPerWindow, client.lines.join("\n"));
  const clientHeld = held(client.lines, /msg="health check flapping/);
  assert(clientHeld.length >= 1 && clientHeld.every((k) => k > 0), client.lines.join("\n"));
  const clientTotal = healthLinesPerWindow + clientHeld.reduce((a, b) => a + b, 0);
  // Every check was a transition (failures: 1), but the last one may have been cut by stop.
  assert(
    clientTotal <= checks && clientTotal >= checks - 1,
    JSON.stringify({ clientTotal, checks }),
  );
  // The failed checks that came with the transitions are quiet while those are held.
  const failedWarns = client.lines.filter((l) => /level=warn .*msg="health check failed"/.test(l));
  assert(failedWarns.length <= healthLinesPerWindow, failedWarns.join("\n"));

  assertEquals(full(server.lines).length, healthLinesPerWindow);
  const serverHeld = held(server.lines, /msg="client health flapping/);
  assert(serverHeld.length >= 1 && serverHeld.every((k) => k > 0), server.lines.join("\n"));
  const serverTotal = healthLinesPerWindow + serverHeld.reduce((a, b) => a + b, 0);
  // Every change the client sent and the server took was counted (the last few may have
  // been cut by the client's stop).
  assert(serverTotal <= clientTotal, JSON.stringify({ serverTotal, clientTotal }));
});

Deno.test("health log: a check that fails now and then, never enough in a row to leave the rotation, writes a bounded number of warnings", async () => {
  let checks = 0;
  let failed = 0;
  const app = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => {
    const fail = checks++ % 2 === 1;
    if (fail) failed++;
    return new Response(null, { status: fail ? 503 : 200 });
  });
  const t = startTunnel();
  const id = "identifier-sometimes-failing-01";
  await within(t.server.addHost("sometimes.test", id), "addHost sometimes.test");
  const client = capture();
  const c = startClient({
    server: t.url,
    identifier: id,
    local: { host: "127.0.0.1", port: app.addr.port },
    healthCheck: { path: "/healthz", intervalMs: 5, failures: 3, timeoutMs: checkTimeoutMs },
    log: client.log,
  });
  try {
    await c.connected();
    const deadline = Date.now() + 60_000;
    while (failed < 20) {
      if (Date.now() > deadline) throw new Error(`only ${failed} failed health checks`);
      await new Promise((r) => setTimeout(r, 20));
    }
  } finally {
    await c.stop();
    await t.close();
    await app.shutdown();
  }
  // Never out of rotation; the first failures of the window in full, the rest counted in
  // one line when the window (here the session) ends.
  const lines = client.lines.join("\n");
  assertEquals(client.lines.filter((l) => /msg="health check failing/.test(l)), []);
  const warned = client.lines.filter((l) => /level=warn .*msg="health check failed"/.test(l));
  const counted = client.lines.filter((l) => /msg="health check failures not logged"/.test(l))
    .map((l) => Number(/ count=(\d+)/.exec(l)![1]));
  assert(counted.length >= 1 && counted.every((n) => n > 0), lines);
  // One window unless the test ran past a minute: at most 4 warnings per window counted.
  assert(
    warned.length >= healthLinesPerWindow &&
      warned.length <= healthLinesPerWindow * counted.length,
    lines,
  );
  // Every failed check the client saw is in a line or a count (the last may have been cut
  // by the stop before the client saw it).
  const total = warned.length + counted.reduce((a, b) => a + b, 0);
  assert(total <= failed && total >= failed - 1, JSON.stringify({ total, failed }));
});
