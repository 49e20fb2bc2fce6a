/**
 * The Dockerfile and compose.yaml on a real engine: build the image offline (local base
 * image: debootstrap + the Deno binary running this test) and check what it holds (no test
 * package in its Deno cache, nothing writable by its user, every service on PATH, the
 * example's placeholder secrets refused at start with one line); bring the whole stack up,
 * wait for every container's HEALTHCHECK (dependents wait for their dependency's health), check
 * each container's processes (no -A) and environment (only its own secret), then send real
 * traffic from the host through each service to the demo app: SOCKS5 via depot and seaprox,
 * HTTP proxy (forward and CONNECT) via seaprox, a Host-header request via the tunnel, a
 * download via fusion's two paths compared byte-exact. The stack is always brought down and a
 * daemon started here is always stopped.
 *
 * Ignored (with the reason printed) only when not root on Linux: the engine, compose and
 * debootstrap come from the setup step (tools/setup.ts). DOCKER_HOST selects an engine; WARREN_DOCKER_BASE skips
 * the offline base (e.g. WARREN_DOCKER_BASE=denoland/deno:2.9.6 with a registry).
 */

import { createHash } from "node:crypto";
import { assert, assertEquals } from "./_assert.ts";
import { run, sha256 } from "./_util.ts";
import { cleanUpOnTimeout } from "./_watchdog.ts";
import {
  buildWarrenImage,
  composeBin,
  dockerBin,
  dockerCommandTimeoutMs,
  dockerSkipReason,
  dockerTestTimeoutMs,
  ensureBaseImage,
  ensureDocker,
  metricSum,
  must,
  slowTest,
} from "./_docker.ts";
import { demoBytes } from "../deploy/demo-app.ts";

const skip = dockerSkipReason();
if (skip) console.log(`docker_stack_test: skipped: ${skip}`);

const repoRoot = new URL("..", import.meta.url).pathname;
const composeFile = `${repoRoot}compose.yaml`;
/** The image the test builds and the stack runs (a stable tag: rebuilds reuse its layers). */
const image = "warren-test:stack";
/** Containers compose.yaml defines. */
const expectedContainers = 8;
/** How long the stack may take to become healthy (8 containers on vfs, busy 2-core box). */
const healthyTimeoutMs = 300_000;
/** Health probes this often during the test (the stack's default is 10s). */
const healthInterval = "2s";
const mib = 1 << 20;
/** Downloaded through fusion (two paths) and compared by SHA-256. */
const fusionDownloadBytes = 32 * mib;
/** Downloaded through depot (SOCKS5, exit at depot-local) and compared by SHA-256. */
const depotDownloadBytes = 8 * mib;
const hello = "hello from the warren demo app";
/**
 * How long the vhost may take to come back after tunnel-server restarts (client backoff): a
 * hang's bound; it took 45 s here at load 40-50.
 */
const tunnelBackTimeoutMs = 180_000;
/** The stack's secrets: each compose service may see only those listed for it here. */
const secretNames = ["DEPOT_TOKEN", "FUSION_TOKEN", "TUNNEL_IDENTIFIER"];
const ownSecrets: Record<string, string[]> = {
  "app": [],
  "seaprox": [],
  "depot-server": ["DEPOT_TOKEN"],
  "depot-local": ["DEPOT_TOKEN"],
  "tunnel-server": ["TUNNEL_IDENTIFIER"],
  "tunnel-client": ["TUNNEL_IDENTIFIER"],
  "fusion-server": ["FUSION_TOKEN"],
  "fusion-client": ["FUSION_TOKEN"],
};
/** Start order that matters: each service waits for these to be healthy. */
const waitsForHealthy: Record<string, string[]> = {
  "depot-local": ["depot-server"],
  "tunnel-client": ["app", "tunnel-server"],
  "fusion-server": ["app"],
  "fusion-client": ["fusion-server"],
};
/** A service command the example's placeholder secret must stop at start, per service. */
const placeholderRuns: string[][] = [
  ["depot-server", "--socks=0.0.0.0:1080"],
  ["depot-local", "--server=depot-server:7000"],
  ["tunnel-server", "--listen=0.0.0.0:8080", "--host=hello.warren.test=env:TUNNEL_IDENTIFIER"],
  ["tunnel-client", "--server=http://tunnel-server:8080", "--local=app:8000"],
  ["fusion-server", "--listen=0.0.0.0:5022", "--target=app:8000"],
  ["fusion-client", "--listen=0.0.0.0:5021", "--path=fusion-server:5022"],
];
/** Names of test-only npm packages, which the image must not hold. */
const testOnlyPackages =
  /playwright|fast-check|pure-rand|(^|[/@])socks(@|$)|smart-buffer|ip-address/i;

/**
 * `depends_on` conditions per service in `docker-compose config` output (the normalized YAML:
 * two-space indents, `condition:` under each dependency).
 */
function dependsOn(config: string): Map<string, Map<string, string>> {
  const out = new Map<string, Map<string, string>>();
  let inServices = false;
  let svc = "";
  let inDeps = false;
  let dep = "";
  for (const line of config.split("\n")) {
    if (/^\S/.test(line)) inServices = line === "services:";
    if (!inServices) continue;
    let m;
    if ((m = /^ {2}(\S+):$/.exec(line))) [svc, inDeps] = [m[1], false];
    else if (/^ {4}depends_on:$/.test(line)) inDeps = true;
    else if (/^ {4}\S/.test(line)) inDeps = false;
    else if (inDeps && (m = /^ {6}(\S+):$/.exec(line))) {
      dep = m[1];
      if (!out.has(svc)) out.set(svc, new Map());
      out.get(svc)!.set(dep, "");
    } else if (inDeps && (m = /^ {8}condition: (\S+)$/.exec(line))) {
      out.get(svc)!.set(dep, m[1]);
    }
  }
  return out;
}

function hex(bytes: number): string {
  return [...crypto.getRandomValues(new Uint8Array(bytes))]
    .map((b) => b.toString(16).padStart(2, "0")).join("");
}

function demoSha256(total: number): string {
  const h = createHash("sha256");
  for (const chunk of demoBytes(total)) h.update(chunk);
  return h.digest("hex");
}

function progress(msg: string): void {
  console.log(`  docker: ${msg}`);
}

/** curl from the host, retried a few times (a container may still be settling). */
async function curl(args: string[], attempts = 5): Promise<Uint8Array> {
  let last = "";
  for (let i = 0; i < attempts; i++) {
    const r = await run("curl", ["-sS", "--fail", "--max-time", "60", ...args]);
    if (r.code === 0) return r.raw;
    last = `curl ${args.join(" ")} exited ${r.code}: ${r.stderr.trim()}`;
    progress(`retrying: ${last}`);
    await new Promise((res) => setTimeout(res, 1_000));
  }
  throw new Error(last);
}

async function curlText(args: string[]): Promise<string> {
  return new TextDecoder().decode(await curl(args));
}

async function stackTest(): Promise<void> {
  const times: [string, number][] = [];
  let mark = Date.now();
  const lap = (what: string) => {
    const now = Date.now();
    times.push([what, now - mark]);
    mark = now;
  };
  const tmp = await Deno.makeTempDir({ prefix: "warren-docker-" });
  const engine = await ensureDocker();
  lap(engine.started ? `start dockerd (${engine.driver})` : `use running engine ${engine.host}`);
  const env = { DOCKER_HOST: engine.host, DOCKER_BUILDKIT: "0" };
  const project = `warren-test-${hex(4)}`;
  const compose = [
    "--ansi",
    "never",
    "--project-name",
    project,
    "--file",
    composeFile,
    "--project-directory",
    repoRoot,
  ];
  let composeEnv: Record<string, string> | undefined;
  let ok = false;
  // The stack down and the daemon stopped: by the finally below, or by the watchdog should the
  // test hang (its finally would never run).
  let cleaned: Promise<void> | undefined;
  const cleanUp = () =>
    cleaned ??= (async () => {
      if (composeEnv) {
        if (!ok) {
          const logs = await run(composeBin, [...compose, "logs", "--no-color", "--tail=40"], {
            env: composeEnv,
            timeoutMs: dockerCommandTimeoutMs,
          });
          console.error(`compose logs of ${project}:\n${logs.stdout}${logs.stderr}`);
        }
        const down = await run(
          composeBin,
          [...compose, "down", "--volumes", "--remove-orphans", "--timeout", "5"],
          { env: composeEnv, timeoutMs: dockerCommandTimeoutMs },
        );
        if (down.code !== 0) console.error(`compose down failed: ${down.stderr}`);
        lap("compose down");
      }
      if (!ok && engine.started) console.error(`dockerd log (tail):\n${engine.log().slice(-4000)}`);
      await engine.stop();
      if (engine.started) lap("stop dockerd");
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    })();
  const unregister = cleanUpOnTimeout(cleanUp);
  try {
    // ---- images ----
    const base = await ensureBaseImage(env, tmp, progress);
    lap(`base image ${base.ref} (${base.how})`);
    await buildWarrenImage(env, base.ref, image);
    // Old builds of the tag are dangling now; on our own engine, drop them (vfs is big).
    if (engine.started) {
      await run(dockerBin, ["image", "prune", "--force"], {
        env,
        timeoutMs: dockerCommandTimeoutMs,
      });
    }
    lap("build image");

    const config = JSON.parse(
      await must(dockerBin, ["image", "inspect", "--format", "{{json .Config}}", image], env),
    ) as {
      User: string;
      Entrypoint: string[] | null;
      Cmd: string[];
      Healthcheck?: { Test: string[] };
    };
    assertEquals(config.User, "warren", "the image runs as a non-root user");
    assertEquals(config.Entrypoint ?? [], [], "the command names what runs");
    assert(!config.Cmd.includes("-A") && config.Cmd.includes("--allow-net"), `${config.Cmd}`);
    assert(config.Healthcheck?.Test?.[0] === "CMD", "the image has a HEALTHCHECK");
    // The default command: seaprox's in-process demo, offline (--network none, cached deps).
    const demo = await must(dockerBin, ["run", "--rm", "--network=none", image], env);
    assert(demo.includes("all checks passed"), demo);
    // The documented usage: the command names the service, on PATH with its permissions.
    const help = await must(dockerBin, [
      "run",
      "--rm",
      "--network=none",
      image,
      "depot-server",
      "--help",
    ], env);
    assert(help.includes("usage: depot-server"), help);
    lap("docker run (default command; a service's --help), no network");

    // What the image holds: only what services import, nothing its user can change.
    const inImage = (script: string) =>
      must(dockerBin, ["run", "--rm", "--network=none", image, "sh", "-c", script], env);
    const cached = await inImage(
      'find /app /usr/local/bin "$DENO_DIR" -maxdepth 6 -not -path "*/lib/*" -not -path "*/services/*"',
    );
    assert(cached.includes("/app/node_modules/.deno/hono@"), `cache listing:\n${cached}`);
    const testPkgs = cached.split("\n").filter((p) => testOnlyPackages.test(p));
    assertEquals(testPkgs, [], "test-only npm packages in the image");
    const writable = await inImage(
      'id -un; find /app /usr/local/bin "$DENO_DIR" -writable -print | head -20',
    );
    assertEquals(writable.trim(), "warren", `writable by the runtime user:\n${writable}`);
    for (const name of ["seaprox", "depot-server", "tunnel-client", "fusion-client"]) {
      const launcher = await inImage(`cat "$(command -v ${name})"`);
      assert(/--allow-net/.test(launcher) && !/\s(-A|--allow-all)\s/.test(launcher), launcher);
    }
    // The example env file, copied unchanged: every service with a secret refuses to start.
    const example = `${repoRoot}deploy/warren.env.example`;
    for (const cmd of placeholderRuns) {
      const r = await run(dockerBin, [
        "run",
        "--rm",
        "--network=none",
        `--env-file=${example}`,
        image,
        ...cmd,
      ], { env, timeoutMs: dockerCommandTimeoutMs });
      const lines = r.stderr.trim().split("\n");
      assertEquals(r.code, 2, `${cmd[0]} with the example's secrets: ${r.stdout}${r.stderr}`);
      assertEquals(lines.length, 1, `${cmd[0]} says one line: ${r.stderr}`);
      assert(lines[0].includes("placeholder"), `${cmd[0]}: ${lines[0]}`);
    }
    lap("image contents, permissions, placeholder secrets refused");

    // ---- stack ----
    const secrets = Object.fromEntries(secretNames.map((n) => [n, hex(32)]));
    composeEnv = {
      ...env,
      ...secrets,
      WARREN_IMAGE: image,
      WARREN_HEALTH_INTERVAL: healthInterval,
      // empty: ephemeral host ports (read back with `port`), so parallel runs never collide
      WARREN_DEPOT_SOCKS_PORT: "",
      WARREN_TUNNEL_PORT: "",
      WARREN_SEAPROX_SOCKS_PORT: "",
      WARREN_SEAPROX_HTTP_PORT: "",
      WARREN_FUSION_PORT: "",
    };
    const cenv = composeEnv;
    // Where order matters, a service waits for its dependency's health, not its start.
    const deps = dependsOn(await must(composeBin, [...compose, "config"], cenv));
    for (const [svc, needs] of Object.entries(waitsForHealthy)) {
      for (const dep of needs) {
        assertEquals(deps.get(svc)?.get(dep), "service_healthy", `${svc} depends_on ${dep}`);
      }
    }
    await must(composeBin, [...compose, "up", "--detach", "--no-build"], cenv);
    lap("compose up");

    const ids = (await must(composeBin, [...compose, "ps", "-q"], cenv)).trim().split(/\s+/);
    assertEquals(ids.length, expectedContainers, `containers: ${ids.join(" ")}`);
    const states = async () =>
      (await must(dockerBin, [
        "inspect",
        "--format",
        "{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}} " +
        "{{.RestartCount}}",
        ...ids,
      ], env)).trim().split("\n").map((l) => l.split(" "));
    const allHealthy = async () => {
      const deadline = Date.now() + healthyTimeoutMs;
      for (;;) {
        const s = await states();
        const broken = s.filter(([, status, , restarts]) =>
          status !== "running" || restarts !== "0"
        );
        if (broken.length > 0) throw new Error(`containers failed: ${JSON.stringify(broken)}`);
        if (s.every(([, , health]) => health === "healthy")) return;
        if (Date.now() > deadline) throw new Error(`not healthy in time: ${JSON.stringify(s)}`);
        await new Promise((r) => setTimeout(r, 1_000));
      }
    };
    await allHealthy();
    lap("all containers healthy");

    // Every container: only its own secret in its environment, no -A on any command line.
    for (const [svc, own] of Object.entries(ownSecrets)) {
      const id = (await must(composeBin, [...compose, "ps", "-q", svc], cenv)).trim();
      const envList = JSON.parse(
        await must(dockerBin, ["inspect", "--format", "{{json .Config.Env}}", id], env),
      ) as string[];
      const seen = secretNames.filter((n) => envList.some((e) => e.startsWith(`${n}=`)));
      assertEquals(seen, own, `${svc} sees secrets ${seen.join(" ")}`);
      const top = await must(dockerBin, ["top", id, "-o", "pid,args"], env);
      assert(/deno run .*--allow-net/.test(top), `${svc} processes:\n${top}`);
      assert(!/\s(-A|--allow-all)(\s|$)/m.test(top), `${svc} runs with -A:\n${top}`);
      if (svc === "app") continue;
      // A warren service (not the demo app): FFI for libc only, so a relay cut short can
      // reset its client (lib/net/reset.ts), and it says so once it is up.
      assert(/--allow-ffi=\/\S*libc\.so\.6(\s|$)/m.test(top), `${svc} processes:\n${top}`);
      const logs = await must(composeBin, [...compose, "logs", "--no-color", svc], cenv);
      assert(/msg="connection resets available" libc=\//.test(logs), `${svc} logs:\n${logs}`);
    }
    lap("container environments and command lines");

    const port = async (service: string, containerPort: number): Promise<string> => {
      const addr =
        (await must(composeBin, [...compose, "port", service, String(containerPort)], cenv))
          .trim();
      assert(addr.startsWith("127.0.0.1:"), `${service}:${containerPort} published on ${addr}`);
      return addr;
    };
    const depot = await port("depot-server", 1080);
    const seaSocks = await port("seaprox", 1080);
    const seaHttp = await port("seaprox", 3128);
    const tunnel = await port("tunnel-server", 8080);
    const fusion = await port("fusion-client", 5021);

    // ---- traffic from the host ----
    // depot: SOCKS5 on the host, the connection exits at depot-local, which resolves "app".
    assert((await curlText(["--socks5-hostname", depot, "http://app:8000/hello"])).includes(hello));
    const viaDepot = await curl([
      "--socks5-hostname",
      depot,
      `http://app:8000/bytes/${depotDownloadBytes}`,
    ]);
    assertEquals(viaDepot.length, depotDownloadBytes);
    assertEquals(sha256(viaDepot), demoSha256(depotDownloadBytes), "depot download byte-exact");

    lap("depot traffic");

    // seaprox: SOCKS5, HTTP forward proxy and HTTP CONNECT.
    assert(
      (await curlText(["--socks5-hostname", seaSocks, "http://app:8000/hello"])).includes(hello),
    );
    assert(
      (await curlText(["--proxy", `http://${seaHttp}`, "http://app:8000/hello"])).includes(hello),
    );
    assert(
      (await curlText(["--proxytunnel", "--proxy", `http://${seaHttp}`, "http://app:8000/hello"]))
        .includes(hello),
    );

    lap("seaprox traffic");

    // tunnel: the vhost is served by the app behind tunnel-client; an unknown vhost is not.
    const viaTunnel = await curlText(["-H", "Host: hello.warren.test", `http://${tunnel}/hello`]);
    assert(viaTunnel.includes(`${hello} (host hello.warren.test)`), viaTunnel);
    const unknown = await run("curl", [
      "-sS",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      "--max-time",
      "30",
      "-H",
      "Host: nobody.warren.test",
      `http://${tunnel}/hello`,
    ]);
    assert(
      unknown.stdout !== "200" && unknown.stdout !== "000",
      `unknown vhost: ${unknown.stdout}`,
    );

    lap("tunnel traffic");

    // fusion: a download over two paths (two bridge networks), byte-exact.
    const viaFusion = await curl([`http://${fusion}/bytes/${fusionDownloadBytes}`]);
    assertEquals(viaFusion.length, fusionDownloadBytes);
    assertEquals(sha256(viaFusion), demoSha256(fusionDownloadBytes), "fusion download byte-exact");
    const fusionServer = (await must(composeBin, [...compose, "ps", "-q", "fusion-server"], cenv))
      .trim();
    const metrics = await must(dockerBin, [
      "exec",
      fusionServer,
      "deno",
      "eval",
      "console.log(await (await fetch('http://127.0.0.1:9100/metrics')).text())",
    ], env);
    assert(
      metricSum(metrics, "warren_fusion_paths_total") +
          metricSum(metrics, "warren_fusion_paths_active") >= 2,
      `fusion used both paths:\n${metrics}`,
    );
    lap("fusion traffic");

    // A restarted tunnel-server (in-memory registry) gets its client back: the vhost returns.
    await must(composeBin, [...compose, "restart", "--timeout", "5", "tunnel-server"], cenv);
    const tunnelAgain = await port("tunnel-server", 8080); // an ephemeral port may change
    let back = "";
    const backDeadline = Date.now() + tunnelBackTimeoutMs;
    while (!back.includes("host hello.warren.test") && Date.now() < backDeadline) {
      const r = await run("curl", [
        "-sS",
        "--max-time",
        "10",
        "-H",
        "Host: hello.warren.test",
        `http://${tunnelAgain}/hello`,
      ]);
      back = r.stdout;
      if (!back.includes("host hello.warren.test")) {
        await new Promise((res) => setTimeout(res, 500));
      }
    }
    assert(back.includes(`${hello} (host hello.warren.test)`), `after restart: ${back}`);
    lap("tunnel-server restart, vhost back");

    // Everything healthy again, nothing restarted by itself (restart policy).
    await allHealthy();
    lap("healthy again");
    ok = true;
  } finally {
    await cleanUp();
    unregister();
    const total = times.reduce((s, [, ms]) => s + ms, 0);
    console.log(
      `  docker stack timings: ${
        times.map(([w, ms]) => `${w} ${(ms / 1000).toFixed(1)}s`).join(", ")
      }` +
        `; total ${(total / 1000).toFixed(1)}s`,
    );
  }
}

Deno.test({
  name: "docker stack: offline image, compose up healthy, traffic from the host through " +
    "depot, seaprox (SOCKS5, HTTP), tunnel vhost and fusion (byte-exact), always down",
  ignore: skip !== undefined,
}, slowTest(dockerTestTimeoutMs, stackTest));
