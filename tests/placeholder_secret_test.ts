/**
 * The placeholder secrets of deploy/warren.env.example are refused at start: every service
 * that takes a secret exits 2 with one line naming where it came from (environment variable,
 * flag or file) when it is still the example's value, and never prints the value itself.
 */
import { assert, assertEquals, assertThrows } from "./_assert.ts";
import { PlaceholderSecretError, readSecretFile, refusePlaceholder } from "../lib/cli_security.ts";
import { run } from "./_util.ts";

const exampleFile = new URL("../deploy/warren.env.example", import.meta.url);

/** The variables deploy/warren.env.example sets, as a user who copied it unchanged has them. */
function exampleEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of Deno.readTextFileSync(exampleFile).split("\n")) {
    const m = /^([A-Z_]+)=(.*)$/.exec(line.trim());
    if (m) env[m[1]] = m[2];
  }
  return env;
}

const service = (name: string) => new URL(`../services/${name}.ts`, import.meta.url).pathname;

Deno.test("placeholder secrets: the example's secrets are all placeholders", () => {
  const env = exampleEnv();
  for (
    const name of [
      "DEPOT_TOKEN",
      "FUSION_TOKEN",
      "TUNNEL_IDENTIFIER",
      "TUNNEL_CLUSTER_TOKEN",
      "TUNNEL_REDIS_PASSWORD",
    ]
  ) {
    assert(env[name], `${name} in the example`);
    const e = assertThrows(() => refusePlaceholder(env[name], name));
    assert(e instanceof PlaceholderSecretError, String(e));
  }
  assertEquals(refusePlaceholder("a-real-secret-0123456789", "x"), "a-real-secret-0123456789");
  // A file holding a placeholder is refused too (and a reload keeps the old secret).
  const dir = Deno.makeTempDirSync({ prefix: "warren-placeholder-" });
  try {
    Deno.writeTextFileSync(`${dir}/token`, `${env.DEPOT_TOKEN}\n`);
    const e = assertThrows(() => readSecretFile(`${dir}/token`));
    assert(e instanceof PlaceholderSecretError, String(e));
    assert(e.message.includes(`${dir}/token`), e.message);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("placeholder secrets: every service refuses them at start with one line", async () => {
  const env = exampleEnv();
  const cases: [string, string[], RegExp][] = [
    [
      "depot-server",
      ["--socks=127.0.0.1:0", "--control=127.0.0.1:0", "--tunnel=127.0.0.1:0"],
      /--token/,
    ],
    ["depot-local", ["--server=127.0.0.1:1"], /--token/],
    ["fusion-server", ["--listen=127.0.0.1:0", "--target=127.0.0.1:1"], /--token/],
    ["fusion-client", ["--listen=127.0.0.1:0", "--path=127.0.0.1:1"], /--token/],
    [
      "tunnel-server",
      ["--listen=127.0.0.1:0", "--host=hello.warren.test=env:TUNNEL_IDENTIFIER"],
      // The example also sets the cluster's link token (deploy/cluster/compose.yaml).
      /TUNNEL_IDENTIFIER|TUNNEL_CLUSTER_TOKEN/,
    ],
    ["tunnel-client", ["--server=http://127.0.0.1:1", "--local=127.0.0.1:1"], /--identifier/],
  ];
  for (const [name, args, names] of cases) {
    const r = await run(Deno.execPath(), ["run", "-A", service(name), ...args], { env });
    const lines = r.stderr.trim().split("\n");
    assertEquals(r.code, 2, `${name}: ${r.stderr}`);
    assertEquals(lines.length, 1, `${name} says one line: ${r.stderr}`);
    assert(/placeholder/.test(lines[0]) && names.test(lines[0]), `${name}: ${lines[0]}`);
    for (const v of Object.values(env)) {
      if (v.startsWith("change-me")) assert(!lines[0].includes(v), `${name} printed ${v}`);
    }
  }
});
