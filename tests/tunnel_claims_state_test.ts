/**
 * Subdomain claims kept in `--state-file`, with curl against tunnel-server and tunnel-client
 * processes: a name claimed by one account token survives a restart of the server within its
 * grace period (another token is refused 409 until then, and the owner gets it back), the
 * file names the account only by a digest (no token in it, mode 0600), and a claim whose grace
 * ran out while the server was down is given away.
 */

import { assert, assertEquals } from "./_assert.ts";
import { freePort, type ServiceProcess, startService, within } from "./_util.ts";
import { curl, startApp } from "./_tunnel.ts";
import { accountDigest } from "../lib/tunnel/mod.ts";

const tokenA = "claims-account-token-aaaa";
const tokenB = "claims-account-token-bbbb";

async function eventually(what: string, fn: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

Deno.test("tunnel claims: a subdomain survives a server restart within its grace, is given away after it", async () => {
  const dir = await Deno.makeTempDir();
  const stateFile = `${dir}/state.json`;
  const appA = startApp("a");
  const appB = startApp("b");
  const port = freePort();
  const procs: ServiceProcess[] = [];
  const server = async (grace: string) => {
    const p = await startService("tunnel-server.ts", [
      ...["--listen", `127.0.0.1:${port}`, "--domain", "t.localhost"],
      ...["--account-token", "env:ACCOUNT_A", "--account-token", "env:ACCOUNT_B"],
      ...["--subdomain-grace", grace, "--state-file", stateFile],
    ], { env: { ACCOUNT_A: tokenA, ACCOUNT_B: tokenB } });
    procs.push(p);
    return p;
  };
  const client = async (token: string, appPort: number, extra: string[] = []) => {
    const p = await startService("tunnel-client.ts", [
      ...["--server", `http://127.0.0.1:${port}`, "--local", `127.0.0.1:${appPort}`],
      ...["--subdomain", "app", "--backoff-max", "300", ...extra],
    ], { readyCount: 0, ready: /./, env: { TUNNEL_IDENTIFIER: token } });
    procs.push(p);
    return p;
  };
  try {
    let s = await server("60s");
    const a = await client(tokenA, appA.port);
    await a.waitFor(/msg="forwarding" url=http:\/\/app\.t\.localhost:/);
    assertEquals((await curl(port, "app.t.localhost", "/name?id=1")).body, "a 1");
    await s.waitFor(/msg="subdomain claimed" host=app\.t\.localhost/);

    // Restart the server while A's client is away: the name is still A's.
    await a.stop();
    await s.stop();
    const text = await Deno.readTextFile(stateFile);
    const state = JSON.parse(text) as { claims: { host: string; account: string }[] };
    assertEquals(state.claims.map((c) => [c.host, c.account]), [
      ["app.t.localhost", accountDigest(tokenA)],
    ]);
    assert(!text.includes(tokenA) && !text.includes(tokenB), "a token in the state file");
    assertEquals((await Deno.stat(stateFile)).mode! & 0o777, 0o600);
    s = await server("60s");
    await s.waitFor(/msg="state loaded".* claims=1/);
    const b = await client(tokenB, appB.port);
    const refused = await within(b.child.status, "client B to give up (refused 409 three times)");
    assertEquals(refused.code, 4);
    await s.waitFor(/msg="client refused".*failure=host-taken/);
    const a2 = await client(tokenA, appA.port);
    await a2.waitFor(/msg="forwarding" url=http:\/\/app\.t\.localhost:/);
    assertEquals((await curl(port, "app.t.localhost", "/name?id=2")).body, "a 2");

    // A leaves, the server stops; it comes back with a grace that is over by then.
    await a2.stop();
    await s.waitFor(/msg="client disconnected"/);
    await s.stop();
    s = await server("1ms");
    await s.waitFor(/msg="state loaded"/);
    const b2 = await client(tokenB, appB.port, ["--keep-trying"]);
    await b2.waitFor(/msg="forwarding" url=http:\/\/app\.t\.localhost:/);
    await eventually(
      "app served by B",
      async () => (await curl(port, "app.t.localhost", "/name?id=3")).body === "b 3",
    );
    for (const p of procs) {
      for (const secret of [tokenA, tokenB]) {
        assert(!p.lines.some((l) => l.includes(secret)), "secret logged");
      }
    }
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await appA.close();
    await appB.close();
    await Deno.remove(dir, { recursive: true });
  }
});
