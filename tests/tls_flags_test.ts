/**
 * Security flags as a service sees them: TLS flag mistakes exit 2 with one line naming the
 * problem, a token file is read (first line), and a token typed on the command line is
 * accepted with a warning that never prints it.
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { makePki } from "./_tls.ts";
import { run, startService } from "./_util.ts";

const script = new URL("../services/fusion-server.ts", import.meta.url).pathname;

Deno.test("security flags: TLS mistakes exit 2 with one line", async () => {
  const pki = await makePki();
  try {
    const cases: [string[], RegExp][] = [
      [[`--tls-cert=${pki.serverCert}`], /--tls-cert and --tls-key go together/],
      [[`--tls-client-ca=${pki.ca}`], /--tls-client-ca needs --tls-cert/],
      [
        [`--tls-cert=${pki.dir}/missing.pem`, `--tls-key=${pki.serverKey}`],
        /missing\.pem/,
      ],
      [[`--tls-cert=${pki.serverKey}`, `--tls-key=${pki.serverKey}`], /no PEM CERTIFICATE/],
    ];
    for (const [args, re] of cases) {
      const r = await run(Deno.execPath(), ["run", "-A", script, "--listen=127.0.0.1:0", ...args], {
        env: { FUSION_TOKEN: "tls-flags-token" },
      });
      assertEquals(r.code, 2, r.stderr);
      const lines = r.stderr.trim().split("\n");
      assertEquals(lines.length, 1, r.stderr);
      assertMatch(lines[0], re);
    }
  } finally {
    await pki.remove();
  }
});

Deno.test("security flags: token from a file; on argv it works but warns, never logged", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/token`, "from-a-file-s3cret\nignored second line\n");
    const fromFile = await startService("fusion-server.ts", [
      "--listen=127.0.0.1:0",
      `--token-file=${dir}/token`,
    ]);
    await fromFile.stop();
    assert(!fromFile.lines.some((l) => l.includes("from-a-file-s3cret")));
    assert(!fromFile.lines.some((l) => /visible to every local user/.test(l)));

    const onArgv = await startService("fusion-server.ts", [
      "--listen=127.0.0.1:0",
      "--token=argv-s3cret-value",
    ]);
    await onArgv.waitFor(/visible to every local user/);
    await onArgv.stop();
    assert(!onArgv.lines.some((l) => l.includes("argv-s3cret-value")), "token never logged");

    await Deno.writeTextFile(`${dir}/empty`, "\n");
    const empty = await run(Deno.execPath(), [
      "run",
      "-A",
      script,
      `--token-file=${dir}/empty`,
    ]);
    assertEquals(empty.code, 2);
    assertMatch(empty.stderr, /empty/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
