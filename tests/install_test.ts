/**
 * Distribution: tools/install.ts puts every service on PATH under its own name with only the
 * permissions it needs. Installed into a temporary root (`deno install -g`, and the image's
 * `--shims` launchers), each answers `<name> --help` when called by its bare name, every
 * environment variable its help names is inside its --allow-env list, and no launcher has -A.
 */
import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { installedLibc, serviceEnv, serviceNames, servicePermissions } from "../tools/install.ts";
import { run } from "./_util.ts";

const installScript = new URL("../tools/install.ts", import.meta.url).pathname;

/** Whether env variable `name` is allowed by `patterns` (exact names or PREFIX_* wildcards). */
function envAllowed(name: string, patterns: string[]): boolean {
  return patterns.some((p) => p.endsWith("*") ? name.startsWith(p.slice(0, -1)) : name === p);
}

/** Each installed service, called by its bare name on PATH: --help, env names, no -A. */
async function checkInstalled(root: string): Promise<void> {
  const env = { PATH: `${root}/bin:${Deno.env.get("PATH")}` };
  for (const name of serviceNames) {
    const launcher = await Deno.readTextFile(`${root}/bin/${name}`);
    assert(!/\s(-A|--allow-all)\s/.test(launcher), `${name} launcher has -A:\n${launcher}`);
    for (const flag of servicePermissions(name)) {
      const kind = flag.split("=")[0];
      assert(launcher.includes(kind), `${name} launcher has ${kind}:\n${launcher}`);
    }
    assert(!/--allow-(write|run|sys)/.test(launcher), `${name}: ${launcher}`);
    // FFI for glibc alone (TCP resets, SO_ORIGINAL_DST), never for any library.
    const ffi = [...launcher.matchAll(/--allow-ffi\S*/g)].map((m) => m[0]);
    const libc = installedLibc();
    assertEquals(ffi, libc ? [`--allow-ffi=${libc}`] : [], `${name}: ${launcher}`);
    const r = await run(name, ["--help"], { env });
    assertEquals(r.code, 0, `${name} --help: ${r.stderr}`);
    assertMatch(r.stdout + r.stderr, new RegExp(`usage: ${name}\\b`));
    // Every variable the service documents is one its --allow-env lets it read.
    const names = [...(r.stdout + r.stderr).matchAll(/\benv ([A-Z][A-Z0-9_]+)/g)].map((m) => m[1]);
    assert(names.length > 0, `${name} --help names its environment variables`);
    for (const v of names) {
      assert(envAllowed(v, serviceEnv[name]), `${name} reads ${v}, not in ${serviceEnv[name]}`);
    }
  }
}

Deno.test("install: deno install -g puts each service on PATH under its own name", async () => {
  const root = await Deno.makeTempDir({ prefix: "warren-install-" });
  try {
    const r = await run(Deno.execPath(), ["run", "-A", installScript, "--root", root]);
    assertEquals(r.code, 0, r.stderr);
    assertMatch(r.stdout, new RegExp(`installed ${serviceNames.join(" ")} into ${root}/bin`));
    await checkInstalled(root);
    // What an installed service caches is what it imports: no test-only package.
    for (const name of serviceNames) {
      const lock = await Deno.readTextFile(`${root}/bin/.${name}/deno.lock`);
      for (const pkg of ["fast-check", "playwright-core", "socks@"]) {
        assert(!lock.includes(`"${pkg}`), `${name}'s install resolved ${pkg}`);
      }
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("install: --shims launchers (the image's) run the checkout with the same permissions", async () => {
  const root = await Deno.makeTempDir({ prefix: "warren-shims-" });
  try {
    const r = await run(Deno.execPath(), [
      "run",
      "-A",
      installScript,
      "--shims",
      "--root",
      root,
      "--read",
      "/etc/warren,/run/secrets",
    ]);
    assertEquals(r.code, 0, r.stderr);
    await checkInstalled(root);
    const launcher = await Deno.readTextFile(`${root}/bin/depot-server`);
    assert(launcher.includes("--allow-read=/etc/warren,/run/secrets"), launcher);
    assert(launcher.includes("--cached-only"), launcher);
    // A bad argument: exit 2 with the usage.
    const bad = await run(Deno.execPath(), ["run", "-A", installScript, "no-such-service"]);
    assertEquals(bad.code, 2);
    assertMatch(bad.stderr, /unknown argument no-such-service/);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
