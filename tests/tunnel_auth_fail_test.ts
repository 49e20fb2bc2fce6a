/**
 * A tunnel-client whose identifier the server refuses gives up after 3 refusals in a row
 * with one clear line and exit status 4 (frpc's `loginFailExit`), unless `--keep-trying`;
 * tunnel-server names the refusal (`failure=unknown-identifier`) in its log.
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { portOf, startService, within } from "./_util.ts";

const known = "auth-fail-known-identifier-01";
const wrong = "auth-fail-wrong-identifier-02";

Deno.test("tunnel auth failure: a wrong identifier exits 4 with one line; --keep-trying keeps trying; the server names the reason", async () => {
  const server = await startService("tunnel-server.ts", [
    "--listen",
    "127.0.0.1:0",
    "--host",
    `app.test=${known}`,
  ]);
  const url = `http://127.0.0.1:${portOf(server.addrs.get("http")!)}`;
  const args = ["--server", url, "--local", "127.0.0.1:9", "--backoff-max", "300"];
  try {
    const client = await startService("tunnel-client.ts", args, {
      readyCount: 0,
      env: { TUNNEL_IDENTIFIER: wrong },
    });
    const gaveUp = within(client.child.status, "tunnel-client to give up after 3 refusals");
    const code = (await gaveUp.finally(() => client.stop())).code;
    assertEquals(code, 4, client.lines.join("\n"));
    const errors = client.lines.filter((l) => l.startsWith("error: "));
    assertEquals(errors.length, 1, client.lines.join("\n"));
    assertMatch(errors[0], /^error: the server refused this identifier 3 times in a row/);
    assertEquals(client.lines.filter((l) => /failure=unauthorized/.test(l)).length, 2);
    await server.waitFor(/msg="client refused".*failure=unknown-identifier/);
    assert(!server.lines.some((l) => /(reason|failure)=unknown( |$)/.test(l)), "unnamed reason");

    // --keep-trying: past 3 refusals it still runs, until stopped.
    const patient = await startService("tunnel-client.ts", [...args, "--keep-trying"], {
      readyCount: 0,
      env: { TUNNEL_IDENTIFIER: wrong },
    });
    try {
      for (let i = 0; i < 5; i++) {
        await patient.waitFor(new RegExp(`failure=unauthorized.* attempt=${i + 1}\\b`));
      }
      assert(!patient.lines.some((l) => l.startsWith("error: ")), patient.lines.join("\n"));
    } finally {
      assertEquals(await patient.stop("SIGTERM"), 0);
    }
    assert(![...server.lines, ...client.lines].some((l) => l.includes(wrong)), "identifier logged");
  } finally {
    await server.stop();
  }
});
