/**
 * Config files (lib/config, lib/cli --config): TOML keyed by flag names, validated with
 * errors naming key and line; flags and env override the file; log level reloads on SIGHUP.
 */

import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { ConfigError, parseConfig } from "../lib/config/mod.ts";
import { run, startService } from "./_util.ts";

const flags = {
  listen: { kind: "string", multiple: true },
  "max-conns": { kind: "string" },
  "prefer-ipv4": { kind: "boolean" },
  "log-level": { kind: "string" },
} as const;

function refusal(text: string): ConfigError {
  try {
    parseConfig(text, flags, "x.toml");
  } catch (err) {
    assert(err instanceof ConfigError, String(err));
    return err;
  }
  throw new Error("config accepted");
}

Deno.test("config: keys are flag names; numbers accepted for string flags; one string for a list", () => {
  assertEquals(
    parseConfig(
      `# comment\nlisten = ["socks5://127.0.0.1:1080", "http://127.0.0.1:8080"]\n` +
        `max-conns = 64\n"prefer-ipv4" = true\nlog-level = "debug"\n`,
      flags,
    ),
    {
      listen: ["socks5://127.0.0.1:1080", "http://127.0.0.1:8080"],
      "max-conns": "64",
      "prefer-ipv4": true,
      "log-level": "debug",
    },
  );
  assertEquals(parseConfig(`listen = "socks5://127.0.0.1:1"`, flags), {
    listen: ["socks5://127.0.0.1:1"],
  });
  assertEquals(parseConfig("", flags), {});
});

Deno.test("config: an unknown key is refused with its name and line", () => {
  const err = refusal(`listen = []\n\n# x\nmax-conn = 5\n`);
  assertEquals(err.reason, "unknown-key");
  assertEquals(err.key, "max-conn");
  assertEquals(err.line, 4);
  assertMatch(err.message, /^x\.toml:4: unknown key "max-conn"/);
});

Deno.test("config: a wrong type names the key, the expected type and the line", () => {
  let err = refusal(`listen = []\nprefer-ipv4 = "yes"\n`);
  assertEquals([err.reason, err.key, err.line], ["type", "prefer-ipv4", 2]);
  assertMatch(err.message, /x\.toml:2: key "prefer-ipv4" must be a boolean/);
  err = refusal(`\nmax-conns = true`);
  assertEquals([err.key, err.line], ["max-conns", 2]);
  assertMatch(err.message, /must be a string \(or a number\), got boolean/);
  err = refusal(`listen = [1, {a = 1}]`);
  assertEquals([err.key, err.line], ["listen", 1]);
  err = refusal(`\n\n[listen]\na = 1`);
  assertEquals([err.key, err.line], ["listen", 3]);
  assertMatch(err.message, /got table/);
});

Deno.test("config: edge values: empty and mixed lists, non-finite numbers, prototype names", () => {
  assertEquals(parseConfig(`listen = []\nmax-conns = 1e3`, flags), {
    listen: [],
    "max-conns": "1000",
  });
  assertEquals(parseConfig(`listen = [1, "a"]`, flags), { listen: ["1", "a"] });
  for (const bad of ["inf", "-inf", "nan"]) {
    const err = refusal(`max-conns = ${bad}`);
    assertEquals([err.reason, err.key], ["type", "max-conns"], bad);
  }
  assertEquals(refusal(`listen = [inf]`).key, "listen");
  assertEquals(
    refusal(`listen = 1979-05-27`).message,
    'x.toml:1: key "listen" must be a string or an array of strings, got date',
  );
  // Names an object has from its prototype are no flags.
  for (const key of ["toString", "__proto__", "constructor"]) {
    const err = refusal(`"${key}" = "x"`);
    assertEquals([err.reason, err.key], ["unknown-key", key]);
  }
});

Deno.test("config: TOML syntax errors carry the line", () => {
  const err = refusal(`listen = []\nmax-conns = \n`);
  assertEquals(err.reason, "syntax");
  assertEquals(err.line, 2);
  assertMatch(err.message, /^x\.toml:2: /);
});

const seaproxScript = new URL("../services/seaprox.ts", import.meta.url).pathname;

Deno.test("config: a service exits 2 with the file, line and key of a bad config", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/seaprox.toml`;
    await Deno.writeTextFile(path, `listen = ["socks5://127.0.0.1:0"]\nlisten-on = "x"\n`);
    const r = await run(Deno.execPath(), ["run", "-A", seaproxScript, "--config", path]);
    assertEquals(r.code, 2);
    assertEquals(r.stderr.trim().split("\n").length, 1);
    assertMatch(r.stderr, /seaprox\.toml:2: unknown key "listen-on"/);
    await Deno.writeTextFile(path, `listen = ["socks5://127.0.0.1:0"]\n\nmax-conns = false\n`);
    const r2 = await run(Deno.execPath(), ["run", "-A", seaproxScript, "--config", path]);
    assertEquals(r2.code, 2);
    assertMatch(r2.stderr, /seaprox\.toml:3: key "max-conns" must be a string/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("config: flags override the file, the file fills what flags leave out", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/seaprox.toml`;
  await Deno.writeTextFile(
    path,
    `listen = ["socks5://127.0.0.1:0", "http://127.0.0.1:0"]\nlog-level = "debug"\n`,
  );
  // The file alone: two listeners, debug logging (a reload reports the level in force).
  const a = await startService("seaprox.ts", ["--config", path], { readyCount: 2 });
  try {
    assertEquals(a.addrs.size, 2);
    a.child.kill("SIGHUP");
    await a.waitFor(/msg="config reloaded".*level=debug/);
  } finally {
    await a.stop();
  }
  // A flag replaces the file's list and level.
  const b = await startService("seaprox.ts", [
    "--config",
    path,
    "--listen",
    "static://127.0.0.1:0?to=127.0.0.1:9",
    "--log-level",
    "info",
  ]);
  try {
    b.child.kill("SIGHUP");
    await b.waitFor(/msg="config reloaded".*level=info/);
    assertEquals([...b.addrs.keys()], ["static"]);
  } finally {
    await b.stop();
  }
  // WARREN_CONFIG names the file when --config is absent.
  const c = await startService("seaprox.ts", [], {
    readyCount: 2,
    env: { WARREN_CONFIG: path },
  });
  try {
    assertEquals(c.addrs.size, 2);
  } finally {
    await c.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("config: SIGHUP reloads the log level; a broken file keeps the old one", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/seaprox.toml`;
  await Deno.writeTextFile(path, `listen = ["socks5://127.0.0.1:0"]\nlog-level = "debug"\n`);
  const svc = await startService("seaprox.ts", ["--config", path]);
  try {
    await Deno.writeTextFile(path, `listen = ["socks5://127.0.0.1:0"]\nlog-level = "info"\n`);
    svc.child.kill("SIGHUP");
    await svc.waitFor(/msg="config reloaded".*level=info/);
    await Deno.writeTextFile(path, `listen = ["socks5://127.0.0.1:0"]\nlog-level = 3\nx = 1\n`);
    svc.child.kill("SIGHUP");
    const line = await svc.waitFor(/config reload failed/);
    assertMatch(line, /seaprox\.toml:3: unknown key/);
    // Still info: a later valid reload logs at info.
    await Deno.writeTextFile(path, `listen = ["socks5://127.0.0.1:0"]\n`);
    svc.child.kill("SIGHUP");
    await svc.waitFor(/msg="config reloaded"/);
  } finally {
    await svc.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
