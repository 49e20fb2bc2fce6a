/**
 * Distribution: tools/install.ts puts every service on PATH under its own name with only the
 * permissions it needs. Installed into a temporary root (`deno install -g`, and the image's
 * `--shims` launchers), each answers `<name> --help` when called by its bare name, every
 * environment variable its help names is inside its --allow-env list, and no launcher has -A.
 */
import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { installedLibc, serviceEnv, serviceNames, servicePermissions } from "../tools/install.ts";
import { startRedis } from "./_redis.ts";
import { freePort, run, type ServiceProcess, startOrigin, startService, within } from "./_util.ts";

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

/** Each worker's /metrics address, from its `metrics listening` line. */
async function workerMetrics(sp: ServiceProcess): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const w of ["1", "2"]) {
    const line = await sp.waitFor(new RegExp(`worker=${w} msg="metrics listening"`));
    out.set(w, /addr=(\S+)/.exec(line)![1]);
  }
  return out;
}

/** The connections worker `addr`'s listeners accepted so far (its own /metrics). */
async function accepted(addr: string): Promise<number> {
  const text = await (await fetch(`http://${addr}/metrics`)).text();
  const m = /^warren_listener_connections_total\{[^}]*\} (\d+)$/m.exec(text);
  return Number(m?.[1] ?? 0);
}

Deno.test("install --workers: seaprox run with exactly the flags install.ts emits serves from two workers; without --workers it is refused in one line", async () => {
  const origin = startOrigin();
  const port = freePort();
  const args = [
    "--listen",
    `static://127.0.0.1:${port}?to=127.0.0.1:${origin.port}`,
    "--metrics",
    "127.0.0.1:0",
    "--workers",
    "2",
  ];
  // The image's narrowed reads: the supervisor reads its command line through libc, not /proc.
  const permissions = servicePermissions("seaprox", { workers: true, read: ["/etc/warren"] });
  assert(permissions.includes(`--allow-run=${Deno.execPath()}`), permissions.join(" "));
  assert(!permissions.some((p) => /^--allow-(run|write|sys)$|^-A$/.test(p)), permissions.join(" "));
  // Only the services that take --workers get it.
  assertEquals(
    servicePermissions("depot-local", { workers: true }),
    servicePermissions("depot-local"),
  );
  const sp = await startService("seaprox.ts", args, {
    permissions,
    ready: /msg="workers ready"/,
    readyCount: 0,
  });
  try {
    const metrics = await workerMetrics(sp);
    // Connections until each worker accepted some (the kernel spreads them; at most 200).
    for (let i = 0; i < 200; i++) {
      const counts = await Promise.all([...metrics.values()].map(accepted));
      if (counts.every((n) => n > 0)) break;
      const r = await run("curl", ["-sS", "--fail", `http://127.0.0.1:${port}/hello?id=${i}`]);
      assertEquals(r.stdout, `hello ${i}`, r.stderr);
    }
    const counts = await Promise.all([...metrics.values()].map(accepted));
    assert(counts.every((n) => n > 0), `connections per worker: ${counts.join(", ")}`);
    assertEquals(await sp.stop("SIGTERM"), 0);
  } finally {
    await sp.stop("SIGKILL");
  }
  // Installed without --workers: the grant is missing, and the service says which.
  const plain = await run(Deno.execPath(), [
    "run",
    ...servicePermissions("seaprox"),
    new URL("../services/seaprox.ts", import.meta.url).pathname,
    ...args,
  ]);
  await origin.close();
  assertEquals(plain.code, 2, plain.stderr);
  assertMatch(plain.stderr, /--workers: starting workers needs --allow-run=/);
});

Deno.test("install --workers: depot-server with exactly the flags install.ts emits: two workers on a real redis-server both serve SOCKS; Redis away at start is one line", async () => {
  const redis = await startRedis();
  const origin = startOrigin();
  const socks = freePort();
  const control = freePort();
  const env = { DEPOT_TOKEN: "install-depot-token" };
  const args = (registry: string) => [
    "--socks",
    `127.0.0.1:${socks}`,
    "--control",
    `127.0.0.1:${control}`,
    "--tunnel",
    "127.0.0.1:0",
    "--registry",
    registry,
    "--heartbeat",
    "300ms",
    "--workers",
    "2",
  ];
  const permissions = servicePermissions("depot-server", { workers: true, read: ["/etc/warren"] });
  const procs: ServiceProcess[] = [];
  try {
    const server = await startService("depot-server.ts", args(redis.url), {
      permissions,
      ready: /msg="workers ready"/,
      readyCount: 0,
      env,
    });
    procs.push(server);
    procs.push(
      await startService("depot-local.ts", ["--server", `127.0.0.1:${control}`], {
        permissions: servicePermissions("depot-local"),
        ready: /msg="connected"/,
        readyCount: 0,
        env,
      }),
    );
    // The worker without the exit learns of it within a heartbeat (until then: 0x03).
    await server.waitFor(/worker=\d .*msg="exits held elsewhere" exits=default@/);
    const relayedBy = (w: string) =>
      server.lines.filter((l) => new RegExp(`worker=${w} .*msg="connection closed"`).test(l))
        .length;
    for (let i = 0; i < 200 && (relayedBy("1") === 0 || relayedBy("2") === 0); i++) {
      const r = await run("curl", [
        "-sS",
        "--fail",
        "--socks5-hostname",
        `127.0.0.1:${socks}`,
        `http://127.0.0.1:${origin.port}/hello?id=${i}`,
      ]);
      assertEquals(r.stdout, `hello ${i}`, r.stderr);
      await new Promise((r) => setTimeout(r, 5)); // the closing line is on its way
    }
    await new Promise((r) => setTimeout(r, 100));
    assert(relayedBy("1") > 0 && relayedBy("2") > 0, "both workers relayed");
    assertEquals(await server.stop("SIGTERM"), 0);
  } finally {
    for (const p of procs.reverse()) await p.stop("SIGKILL");
    await redis.stop();
    await origin.close();
  }
  // No Redis at the address: it gives up after a few attempts and says why, in a line (it
  // retried forever before, silent). A hang is cut by a generous bound, not timed. One
  // process: a worker that never got ready would outlive its killed supervisor.
  const alone = [...args(`redis://127.0.0.1:${freePort()}`).slice(0, -2), "--cluster-listen"];
  const away = await startService("depot-server.ts", [...alone, "127.0.0.1:0"], {
    permissions,
    readyCount: 0,
    env: { ...env, DEPOT_CLUSTER_TOKEN: "install-cluster-token" },
  });
  try {
    await away.waitFor(/^error: .*registry unreachable: .*ECONNREFUSED/, 60_000);
    assert((await within(away.child.status, "the refused service to exit")).code !== 0);
  } finally {
    await away.stop("SIGKILL");
  }
});
