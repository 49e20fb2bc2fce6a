/**
 * The service kit's config layer (lib/config), without processes: durations with units,
 * integers with bounds, one precedence (flag > env > file > default) for every key, old flag
 * names as aliases with one deprecation line, secrets from `env:`/`file:`/`--x-file` with a
 * warning when typed on the command line, and errors that name where a value was written.
 */

import { assert, assertEquals, assertMatch, assertThrows } from "./_assert.ts";
import {
  allFlags,
  type ConfigFile,
  configFileFlags,
  FlagError,
  formatDurationMs,
  loadConfigFile,
  parseArgv,
  parseDurationMs,
  resolveFlags,
  type ResolveInput,
  usage,
} from "../lib/config/mod.ts";

const cmd = {
  name: "svc",
  summary: "a test service",
  flags: {
    listen: { kind: "string", multiple: true, env: "SVC_LISTEN", help: "listeners" },
    hosts: { kind: "string", multiple: true, env: "SVC_HOSTS", envSeparator: "comma", help: "" },
    "max-conns": { kind: "int", min: 1, max: 100_000, default: "1024", help: "" },
    "idle-timeout": { kind: "duration", default: "5m", aliases: ["idle-timeout-ms"], help: "" },
    heartbeat: { kind: "duration", min: 100, default: "2000", aliases: ["heartbeat-ms"], help: "" },
    server: { kind: "url", schemes: ["http", "https"], help: "" },
    addr: { kind: "hostport", default: ":8080", help: "" },
    mode: { kind: "choice", choices: ["a", "b"], default: "a", help: "" },
    mux: { kind: "boolean", env: "SVC_MUX", help: "" },
    token: { kind: "secret", env: "SVC_TOKEN", help: "" },
  },
} as const;
const defs = allFlags(cmd);

/** Resolve `args` with `env` and an optional config file text. */
function resolve(args: string[], env: Record<string, string> = {}, toml?: string) {
  let file: ConfigFile | undefined;
  if (toml !== undefined) {
    const path = Deno.makeTempFileSync({ suffix: ".toml" });
    Deno.writeTextFileSync(path, toml);
    try {
      file = loadConfigFile(path, configFileFlags(defs));
    } finally {
      Deno.removeSync(path);
    }
  }
  const input: ResolveInput = { argv: parseArgv(defs, args), env: (n) => env[n], file };
  return resolveFlags(defs, input);
}

function refusal(fn: () => unknown): string {
  const err = assertThrows(fn);
  assert(err instanceof FlagError, `${err.name}: ${err.message}`);
  return err.message;
}

Deno.test("kit: durations take units, bare numbers stay milliseconds", () => {
  assertEquals(
    ["250ms", "30s", "5m", "1h", "1m30s", "1500", "0", "0.5s"].map(parseDurationMs),
    [250, 30_000, 300_000, 3_600_000, 90_000, 1500, 0, 500],
  );
  assertEquals(["", "5x", "s", "-1s", "1 s", "ten"].map(parseDurationMs), [
    undefined,
    undefined,
    undefined,
    undefined,
    undefined,
    undefined,
  ]);
  assertEquals([90_000, 300_000, 250, 0, 3_600_000].map(formatDurationMs), [
    "90s",
    "5m",
    "250ms",
    "0ms",
    "1h",
  ]);
});

Deno.test("kit: defaults are parsed like any value; typed results", () => {
  const { values } = resolve([]);
  assertEquals(values["max-conns"], 1024);
  assertEquals(values["idle-timeout"], 300_000);
  assertEquals(values.heartbeat, 2000);
  assertEquals(values.addr, { host: "127.0.0.1", port: 8080 });
  assertEquals(values.mode, "a");
  assertEquals(values.mux, false);
  assertEquals(values.listen, []);
  assertEquals(values.token, undefined);
  assertEquals(values["log-level"], "info");
});

Deno.test("kit: numbers are parsed and range-checked in one place", () => {
  assertEquals(resolve(["--max-conns", "64", "--heartbeat", "1s"]).values["max-conns"], 64);
  assertMatch(
    refusal(() => resolve(["--max-conns", "ten"])),
    /^--max-conns must be an integer, got "ten"$/,
  );
  assertMatch(
    refusal(() => resolve(["--max-conns", "0"])),
    /^--max-conns must be at least 1, got 0$/,
  );
  assertMatch(refusal(() => resolve(["--max-conns", "1e3"])), /must be an integer/);
  assertMatch(
    refusal(() => resolve(["--heartbeat", "50ms"])),
    /^--heartbeat must be at least 100ms, got 50ms$/,
  );
  assertMatch(refusal(() => resolve(["--idle-timeout", "5 minutes"])), /must be a duration/);
  assertMatch(refusal(() => resolve(["--addr", "nohost"])), /^--addr not host:port/);
  assertMatch(
    refusal(() => resolve(["--server", "ftp://x"])),
    /^--server must be a http:\/\/ or https:\/\/ URL/,
  );
  assertMatch(refusal(() => resolve(["--mode", "c"])), /^--mode must be one of a, b/);
  assertMatch(refusal(() => resolve(["--nope"])), /Unknown option '--nope'.*see --help/);
  assertMatch(
    refusal(() => resolve([], { SVC_MUX: "maybe" })),
    /^SVC_MUX \(--mux\) must be true or false/,
  );
});

Deno.test("kit: precedence is flag > env > file > default for every key", () => {
  const toml = `listen = ["file://1"]\nhosts = ["f.example"]\nmux = false\nmax-conns = 7\n`;
  const env = { SVC_LISTEN: "env://1 env://2", SVC_HOSTS: "a.example, b.example", SVC_MUX: "1" };
  const fileOnly = resolve([], {}, toml);
  assertEquals(fileOnly.values.listen, ["file://1"]);
  assertEquals(fileOnly.values["max-conns"], 7);
  assertEquals(fileOnly.sources.listen.kind, "file");
  const envOverFile = resolve([], env, toml);
  assertEquals(envOverFile.values.listen, ["env://1", "env://2"]);
  assertEquals(envOverFile.values.hosts, ["a.example", "b.example"]);
  assertEquals(envOverFile.values.mux, true);
  assertEquals(envOverFile.values["max-conns"], 7);
  const flagOverEnv = resolve(["--listen", "flag://1", "--mux"], env, toml);
  assertEquals(flagOverEnv.values.listen, ["flag://1"]);
  assertEquals(flagOverEnv.values.hosts, ["a.example", "b.example"]);
  assertEquals(flagOverEnv.sources.listen, { kind: "flag", name: "listen" });
});

Deno.test("kit: a bad value from a config file names the file, the line and the key", () => {
  const msg = refusal(() => resolve([], {}, `# c\nlisten = []\n\nmax-conns = "ten"\n`));
  assertMatch(msg, /\.toml:4: max-conns must be an integer, got "ten"$/);
  const d = refusal(() => resolve([], {}, `heartbeat = "20ms"\n`));
  assertMatch(d, /\.toml:1: heartbeat must be at least 100ms, got 20ms$/);
});

Deno.test("kit: old names are aliases that log one deprecation line", () => {
  const r = resolve(["--idle-timeout-ms", "1000"]);
  assertEquals(r.values["idle-timeout"], 1000);
  assertEquals(r.warnings, ["--idle-timeout-ms is deprecated: use --idle-timeout"]);
  const f = resolve([], {}, `heartbeat-ms = 500\n`);
  assertEquals(f.values.heartbeat, 500);
  assertEquals(f.warnings.length, 1);
  assertMatch(f.warnings[0], /\.toml:1: key "heartbeat-ms" is deprecated: use "heartbeat"/);
  assertMatch(
    refusal(() => resolve(["--heartbeat", "1s", "--heartbeat-ms", "500"])),
    /--heartbeat-ms is an old name of --heartbeat: give only one/,
  );
  assertMatch(usage(cmd), /--heartbeat <duration> +\(default 2s, was --heartbeat-ms\)/);
});

Deno.test("kit: secrets resolve env:, file: and --x-file; typed on argv they warn", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const file = `${dir}/token`;
    Deno.writeTextFileSync(file, "from-the-file\nsecond line ignored\n");
    assertEquals(resolve([], { SVC_TOKEN: "from-env" }).values.token, "from-env");
    assertEquals(
      resolve([], { SVC_TOKEN: "env:OTHER", OTHER: "indirect" }).values.token,
      "indirect",
    );
    assertEquals(resolve(["--token-file", file]).values.token, "from-the-file");
    assertEquals(resolve(["--token", `file:${file}`]).values.token, "from-the-file");
    assertEquals(resolve([], {}, `token-file = "${file}"\n`).values.token, "from-the-file");
    // The flag beats the file's token-file (flag > file), the env beats the file too.
    assertEquals(
      resolve(["--token", "env:T"], { T: "x" }, `token-file = "${file}"\n`).values.token,
      "x",
    );
    const typed = resolve(["--token", "s3cret"]);
    assertEquals(typed.values.token, "s3cret");
    assertEquals(typed.warnings.length, 1);
    assertMatch(typed.warnings[0], /--token on the command line is visible/);
    assert(!typed.warnings[0].includes("s3cret"), "the warning never prints the secret");
    assertEquals(resolve([], { SVC_TOKEN: "s3cret" }).warnings, []);
    assertMatch(
      refusal(() => resolve(["--token", "env:UNSET_VAR_FOR_TEST"])),
      /^--token: environment variable UNSET_VAR_FOR_TEST is not set$/,
    );
    assertMatch(
      refusal(() => resolve([], {}, `\ntoken = "env:UNSET_VAR_FOR_TEST"\n`)),
      /\.toml:2: token: environment variable UNSET_VAR_FOR_TEST is not set$/,
    );
    assertMatch(
      refusal(() => resolve(["--token-file", `${dir}/missing`])),
      /^--token-file: .*missing: No such file/,
    );
    assertMatch(
      refusal(() => resolve(["--token", "a", "--token-file", file])),
      /--token and --token-file: give one, not both/,
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
