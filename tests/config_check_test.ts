/**
 * `--check-config` runs exactly the validation a start runs, without binding (like
 * `nginx -t`): each config here used to get `config ok` and then fail at start. Also: flag >
 * env > file for every key, a reload names the keys that need a restart, a bad hosts-file line
 * names the file and line, old flag names still work with one deprecation line, `--version`.
 */

import { assertEquals, assertMatch } from "./_assert.ts";
import { run, startService } from "./_util.ts";

const script = (name: string) => new URL(`../services/${name}.ts`, import.meta.url).pathname;

/** Run `service --check-config` with `args`; returns exit code and output. */
async function check(service: string, args: string[], env: Record<string, string> = {}) {
  // -q: only the service's own lines (a fresh checkout's first run adds "Initialize <npm package>")
  const r = await run(Deno.execPath(), [
    "run",
    "-q",
    "-A",
    script(service),
    ...args,
    "--check-config",
  ], {
    env,
  });
  return { code: r.code, out: r.stdout.trim(), err: r.stderr.trim() };
}

/** A refused config: exit 2 and one `error:` line matching `re`, nothing on stdout. */
async function refused(service: string, args: string[], re: RegExp, env = {}) {
  const r = await check(service, args, env);
  assertEquals([r.code, r.out], [2, ""], `${service} ${args.join(" ")}: ${r.err}`);
  assertEquals(r.err.split("\n").length, 1, r.err);
  assertMatch(r.err, /^error: /);
  assertMatch(r.err, re);
}

Deno.test("check-config: a missing token is refused as a start refuses it", async () => {
  await refused("fusion-server", ["--listen", "127.0.0.1:0"], /a token is required/);
  await refused("seaprox", ["--listen", "link://127.0.0.1:0"], /--link-token .*is required/);
  await refused("tunnel-server", ["--admin", "127.0.0.1:0"], /--admin needs --admin-token/);
});

Deno.test("check-config: an unset env: identifier is refused", async () => {
  await refused(
    "tunnel-server",
    ["--host", "a.test=env:WARREN_TEST_UNSET_IDENTIFIER"],
    /--host a\.test: environment variable WARREN_TEST_UNSET_IDENTIFIER is not set/,
  );
  await refused(
    "depot-server",
    ["--token", "env:WARREN_TEST_UNSET_TOKEN"],
    /--token: environment variable WARREN_TEST_UNSET_TOKEN is not set/,
  );
});

Deno.test("check-config: an unreadable secret file or a bad certificate is refused", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await refused("depot-server", ["--token-file", `${dir}/missing`], /--token-file: .*missing/);
    await refused("tunnel-client", [
      "--server",
      "http://127.0.0.1:1",
      "--identifier-file",
      `${dir}/missing`,
    ], /--identifier-file: .*missing/);
    await Deno.writeTextFile(`${dir}/cert.pem`, "not a certificate\n");
    await refused(
      "fusion-server",
      [
        "--tls-cert",
        `${dir}/cert.pem`,
        "--tls-key",
        `${dir}/cert.pem`,
      ],
      /TLS: /,
      { FUSION_TOKEN: "a-real-token-0123456789" },
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("check-config: an open SOCKS5 listener on 0.0.0.0 is refused", async () => {
  await refused("seaprox", ["--listen", "socks5://0.0.0.0:1080"], /refusing an open socks5/);
  const ok = await check("seaprox", ["--listen", "socks5://0.0.0.0:1080", "--allow-open"]);
  assertEquals([ok.code, ok.out], [0, "config ok"]);
});

Deno.test('check-config: max-conns = "ten" names the file, the line and the key', async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/seaprox.toml`;
    await Deno.writeTextFile(path, `listen = ["socks5://127.0.0.1:0"]\n\nmax-conns = "ten"\n`);
    await refused("seaprox", ["--config", path], /seaprox\.toml:3: max-conns must be an integer/);
    await Deno.writeTextFile(path, `listen = ["socks5://127.0.0.1:0"]\nidle-timeout = "5 min"\n`);
    await refused(
      "seaprox",
      ["--config", path],
      /seaprox\.toml:2: idle-timeout must be a duration/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("check-config: nothing is bound (a busy port still checks ok)", async () => {
  const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const r = await check("seaprox", ["--listen", `socks5://127.0.0.1:${busy.addr.port}`]);
    assertEquals([r.code, r.out], [0, "config ok"]);
  } finally {
    busy.close();
  }
});

Deno.test("check-config: a bad hosts-file line names the file and the line", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/hosts`;
    await Deno.writeTextFile(
      path,
      "# vhost identifier\na.test long-enough-identifier\nb.test short\n",
    );
    await refused(
      "tunnel-server",
      ["--hosts-file", path],
      new RegExp(`${path}:3: identifier of b\\.test`),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("precedence: SEAPROX_LISTEN beats the config file, a flag beats both", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/seaprox.toml`;
  await Deno.writeTextFile(path, `listen = ["http://127.0.0.1:0"]\n`);
  const env = { SEAPROX_LISTEN: "socks5://127.0.0.1:0" };
  const a = await startService("seaprox.ts", ["--config", path], { env });
  try {
    assertEquals([...a.addrs.keys()], ["socks5"]);
  } finally {
    await a.stop();
  }
  const b = await startService("seaprox.ts", [
    "--config",
    path,
    "--listen",
    "static://127.0.0.1:0?to=127.0.0.1:9",
  ], { env });
  try {
    assertEquals([...b.addrs.keys()], ["static"]);
  } finally {
    await b.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("reload: a changed key that needs a restart is named in one warning", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/seaprox.toml`;
  const listen = `listen = ["socks5://127.0.0.1:0"]\n`;
  await Deno.writeTextFile(path, `${listen}max-conns = 10\n`);
  const svc = await startService("seaprox.ts", ["--config", path]);
  try {
    await Deno.writeTextFile(path, `${listen}max-conns = 20\nidle-timeout = "1m"\n`);
    svc.child.kill("SIGHUP");
    const line = await svc.waitFor(/need a restart/);
    assertMatch(line, /level=warn/);
    assertMatch(line, /keys="max-conns,idle-timeout"/);
    await svc.waitFor(/msg="config reloaded"/);
    assertEquals(svc.lines.filter((l) => /need a restart/.test(l)).length, 1);
  } finally {
    await svc.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("old flag names: an alias works and logs one deprecation line", async () => {
  const svc = await startService("depot-server.ts", [
    "--control=127.0.0.1:0",
    "--socks=127.0.0.1:0",
    "--tunnel=127.0.0.1:0",
    "--heartbeat-ms",
    "500",
  ], { readyCount: 3, env: { DEPOT_TOKEN: "a-real-token-0123456789" } });
  try {
    const deprecated = svc.lines.filter((l) => /deprecated/.test(l));
    assertEquals(deprecated.length, 1, svc.lines.join("\n"));
    assertMatch(deprecated[0], /--heartbeat-ms is deprecated: use --heartbeat/);
  } finally {
    await svc.stop();
  }
  const r = await check("depot-server", ["--heartbeat", "5ms"]);
  assertEquals(r.code, 2);
  assertMatch(r.err, /--heartbeat must be at least 10ms, got 5ms/);
});

Deno.test("--version: every service prints warren's and Deno's versions", async () => {
  const { version } = JSON.parse(
    await Deno.readTextFile(new URL("../deno.json", import.meta.url)),
  ) as { version: string };
  const services = [
    "seaprox",
    "depot-server",
    "depot-local",
    "tunnel-server",
    "tunnel-client",
    "fusion-server",
    "fusion-client",
  ];
  await Promise.all(services.map(async (s) => {
    const r = await run(Deno.execPath(), ["run", "-A", script(s), "--version"]);
    assertEquals(r.code, 0, r.stderr);
    assertEquals(r.stdout.trim(), `${s} (warren ${version}, deno ${Deno.version.deno})`);
  }));
});

Deno.test("check-config: a shared secret shorter than 8 characters is refused with one line", async () => {
  await refused("depot-server", ["--token", "a"], /--token is 1 characters: too weak/);
  await refused("fusion-server", ["--token", "short"], /--token is 5 characters: too weak/);
  await refused(
    "tunnel-server",
    ["--admin", "127.0.0.1:0", "--admin-token", "admin"],
    /--admin-token is 5 characters/,
  );
  await refused(
    "seaprox",
    ["--listen", "link://127.0.0.1:0", "--link-token", "s3cret"],
    /--link-token is 6 characters/,
  );
  await refused(
    "depot-local",
    ["--token", "depot-token-ok", "--socks-password", "pw"],
    /--socks-password is 2 characters/,
  );
});
