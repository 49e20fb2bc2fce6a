/**
 * Helpers of the Docker stack test: a Docker engine (the one running, or one started here
 * with `--iptables=false --ip-masq=false --storage-driver=vfs`), an offline base image
 * (debootstrap + `docker import` + the Deno binary running this test), the warren image, and
 * a compose project. Every command goes to /usr/bin/docker explicitly (another client may be
 * earlier on PATH).
 */

import { createHash } from "node:crypto";
import { run, until, within } from "./_util.ts";
export { slowTest } from "./_watchdog.ts";

/** The Docker CLI of Debian's docker.io package. */
export const dockerBin = "/usr/bin/docker";
/** The daemon of Debian's docker.io package. */
export const dockerdBin = "/usr/sbin/dockerd";
/** Compose v1 of Debian's docker-compose package. */
export const composeBin = "/usr/bin/docker-compose";
/** Builds the offline base image's root file system. */
export const debootstrapBin = "/usr/sbin/debootstrap";

/** A daemon started here keeps its images (the cached base) across runs in this directory. */
export const dataRoot = Deno.env.get("WARREN_DOCKER_DATA_ROOT") ?? "/var/lib/warren-docker";

/**
 * Socket, exec root and pid file of the daemon started on `root` (tmpfs, short socket paths):
 * one per data root, since one daemon at a time may use a data root.
 */
export function runDirOf(root: string): string {
  return root === "/var/lib/warren-docker"
    ? "/run/warren-docker"
    : `/run/warren-docker-${createHash("sha256").update(root).digest("hex").slice(0, 8)}`;
}

/** The run dir of the daemon started here ({@linkcode runDirOf} `dataRoot`). */
export const runDir: string = runDirOf(dataRoot);

/**
 * The lock a run holds on `dataRoot` from starting its daemon until that daemon stopped: two
 * runs on one machine (two suites) never share a daemon, so neither stops the other's; the
 * second waits. An flock, so a run that dies releases it.
 */
export const dataRootLockPath = `${dataRoot}.lock`;

/** How long a run waits for another run's daemon on `dataRoot` to stop (its Docker test). */
export const dataRootLockTimeoutMs = 1_200_000;

/** How long a daemon may take to answer after starting (vfs on a busy box is slow). */
export const daemonStartTimeoutMs = 90_000;
/** How long a daemon may take to stop on SIGTERM before SIGKILL. */
export const daemonStopTimeoutMs = 30_000;

/**
 * How long one docker, compose or debootstrap command may run before it is killed and the
 * test fails naming it: debootstrap and image builds take minutes on a fresh, busy box (and
 * run()'s default 300 s is too short for them); the bound is for a hang, not a slow box.
 */
export const dockerCommandTimeoutMs = 1_200_000;

/**
 * The watchdog's limit for a Docker test (tests/_watchdog.ts `slowTest`): on a fresh, busy
 * 2-core box debootstrap, the image builds and a stack of 8 containers take well over the
 * default 600 s (the stack test took over 600 s here at load 40-50 with every image cached).
 * Each step has its own bound; this is the last resort, and the test's cleanup then still runs.
 */
export const dockerTestTimeoutMs = 3_600_000;

/** Keep at most this much of a daemon's log to print when something fails. */
const daemonLogKeepBytes = 64 * 1024;

/**
 * Why the Docker test cannot run here (not Linux, not root), or undefined when it can. The
 * engine, compose and debootstrap are installed by the setup step (tools/setup.ts): a
 * missing one fails the test instead of skipping it.
 */
export function dockerSkipReason(): string | undefined {
  if (Deno.build.os !== "linux") return "not Linux";
  if (Deno.uid() !== 0) return "not root (starting dockerd and debootstrap need root)";
  return undefined;
}

/**
 * Output of a command that must succeed; throws with its output otherwise (and when it runs
 * longer than {@linkcode dockerCommandTimeoutMs}).
 */
export async function must(
  cmd: string,
  args: string[],
  env: Record<string, string> = {},
  stdin?: Uint8Array,
): Promise<string> {
  const r = await run(cmd, args, { env, stdin, timeoutMs: dockerCommandTimeoutMs });
  if (r.code !== 0) {
    throw new Error(`${cmd} ${args.join(" ")} exited ${r.code}:\n${r.stdout}\n${r.stderr}`);
  }
  return r.stdout;
}

/** A Docker engine the test talks to. */
export interface DockerEngine {
  /** DOCKER_HOST value for the CLI and compose. */
  host: string;
  /** Whether this test started the daemon (and so stops it, and may prune its images). */
  started: boolean;
  /** Storage driver of a daemon started here. */
  driver?: string;
  /** Process id of a daemon started here. */
  pid?: number;
  /** Last lines the started daemon logged (empty for a daemon found running). */
  log(): string;
  /** Stop the daemon if this test started it (and release `dataRoot`); no-op otherwise. */
  stop(): Promise<void>;
}

async function answers(host: string): Promise<boolean> {
  const child = new Deno.Command(dockerBin, {
    args: ["version", "--format", "{{.Server.Version}}"],
    env: { DOCKER_HOST: host },
    stdout: "null",
    stderr: "null",
    signal: AbortSignal.timeout(15_000),
  }).spawn();
  return (await child.status).success;
}

/**
 * A Docker engine: `DOCKER_HOST` when set (it must answer), else the system daemon on
 * /var/run/docker.sock, else a daemon started here ({@linkcode startDocker}, stopped by
 * `stop()`).
 */
export async function ensureDocker(): Promise<DockerEngine> {
  const none = { log: () => "", stop: () => Promise.resolve(), started: false };
  const explicit = Deno.env.get("DOCKER_HOST");
  if (explicit) {
    if (await answers(explicit)) return { host: explicit, ...none };
    throw new Error(`DOCKER_HOST=${explicit} does not answer`);
  }
  const system = "unix:///var/run/docker.sock";
  if (await answers(system)) return { host: system, ...none };
  return await startDocker();
}

/**
 * Storage drivers a daemon started here tries in order: overlay2 is fast (no copy per layer
 * and container) where the kernel and file system allow it; vfs works everywhere.
 */
export const storageDrivers: readonly string[] = ["overlay2", "vfs"];

/**
 * A daemon of this run on `dataRoot`, used by no other run: waits (up to
 * `dataRootLockTimeoutMs`, saying so) while another run holds the data root's lock, stops a
 * daemon a dead run left on it, then starts one (overlay2, else vfs). Its `stop()` stops it
 * and releases the lock.
 */
export async function startDocker(): Promise<DockerEngine> {
  const lock = await lockDataRoot();
  try {
    await stopLeftDaemon();
    const drivers = Deno.env.get("WARREN_DOCKER_STORAGE_DRIVER")?.split(",") ?? storageDrivers;
    const failures: string[] = [];
    for (const driver of drivers) {
      try {
        const engine = await startDockerd(driver);
        let stopped: Promise<void> | undefined;
        return { ...engine, stop: () => stopped ??= engine.stop().finally(() => lock.close()) };
      } catch (err) {
        failures.push(err instanceof Error ? err.message : String(err));
      }
    }
    throw new Error(failures.join("\n\n"));
  } catch (err) {
    lock.close();
    throw err;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The exclusive lock on `dataRoot` (see {@linkcode dataRootLockPath}), holding our pid. */
async function lockDataRoot(): Promise<Deno.FsFile> {
  await Deno.mkdir(dataRoot, { recursive: true });
  const file = await Deno.open(dataRootLockPath, { read: true, write: true, create: true });
  try {
    const deadline = Date.now() + dataRootLockTimeoutMs;
    let said = false;
    while (!(await file.tryLock(true))) {
      const holder = (await Deno.readTextFile(dataRootLockPath)).trim();
      if (Date.now() > deadline) {
        throw new Error(
          `${dataRootLockPath} still locked after ${dataRootLockTimeoutMs} ms (${holder})`,
        );
      }
      if (!said) console.log(`  docker: waiting for ${dataRootLockPath} (${holder})`);
      said = true;
      await sleep(1_000);
    }
    await file.truncate(0);
    await file.write(new TextEncoder().encode(`held by pid ${Deno.pid}\n`));
  } catch (err) {
    file.close();
    throw err;
  }
  return file;
}

/** Pids of the dockerd processes running on `root` (read from /proc: never by name). */
export function daemonsOn(root: string): number[] {
  const pids: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const cmdline = Deno.readTextFileSync(`/proc/${e.name}/cmdline`);
      if (cmdline.includes(`--data-root=${root}\0`) && alive(Number(e.name))) {
        pids.push(Number(e.name));
      }
    } catch {
      // It exited while listed.
    }
  }
  return pids;
}

/** Whether process `pid` still runs (a zombie, exited but not reaped, does not). */
function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false; // no such process
  }
}

/**
 * With the data root's lock held, a daemon on it is one a run that died left behind (its
 * lock went with it): stop it (found by its pid file, confirmed by its command line, never by
 * name), so ours can open the data root.
 */
async function stopLeftDaemon(): Promise<void> {
  let pid: number | undefined;
  try {
    pid = Number(await Deno.readTextFile(`${runDir}/dockerd.pid`));
    const cmdline = await Deno.readTextFile(`/proc/${pid}/cmdline`);
    if (!cmdline.includes(`--data-root=${dataRoot}\0`) || !alive(pid)) pid = undefined;
  } catch {
    pid = undefined; // no pid file, or its process is gone: nothing runs on the data root
  }
  if (pid === undefined) return await dropDaemonLeftovers(dataRoot);
  console.log(`  docker: stopping dockerd ${pid}, left on ${dataRoot} by a run that died`);
  // Polled (not our child): bounded, retire() names it should it outlive SIGKILL.
  const deadline = Date.now() + 3 * daemonStopTimeoutMs;
  const left = pid;
  await retire((signal) => Deno.kill(left, signal), async () => {
    while (alive(left) && Date.now() < deadline) await sleep(100);
  });
}

/**
 * Stop a daemon of ours: SIGTERM, SIGKILL after `daemonStopTimeoutMs`, then drop what it
 * left ({@linkcode dropDaemonLeftovers}).
 */
async function retire(
  kill: (signal: Deno.Signal) => void,
  exited: () => Promise<unknown>,
): Promise<void> {
  const send = (signal: Deno.Signal) => {
    try {
      kill(signal);
    } catch {
      // already exited
    }
  };
  send("SIGTERM");
  const done = exited();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const slow = new Promise<"slow">((r) => {
    timer = setTimeout(() => r("slow"), daemonStopTimeoutMs);
  });
  const killed = await Promise.race([done, slow]) === "slow";
  clearTimeout(timer);
  if (killed) send("SIGKILL");
  await within(done, `dockerd to exit after SIGKILL (${runDir})`, daemonStopTimeoutMs);
  await dropDaemonLeftovers(dataRoot);
}

/**
 * What a daemon on `root` leaves once it exited (all of it, when it was killed hard): its
 * containerd (found by the pid file in its exec root, confirmed by its command line, never by
 * name), the host namespace's bind mount in its run dir, the bind mount of `root` on itself,
 * and the run dir. Call it only while no daemon runs on `root`.
 */
export async function dropDaemonLeftovers(root: string): Promise<void> {
  const dir = runDirOf(root);
  try {
    const pid = Number(await Deno.readTextFile(`${dir}/exec/containerd/containerd.pid`));
    const cmdline = await Deno.readTextFile(`/proc/${pid}/cmdline`);
    if (cmdline.includes(`${dir}/exec/containerd/`)) Deno.kill(pid, "SIGTERM");
  } catch {
    // no pid file or already gone
  }
  const mounts = (await Deno.readTextFile("/proc/mounts")).split("\n").map((l) => l.split(" ")[1]);
  for (const path of [`${dir}/exec/netns/default`, root]) {
    // One umount per time it is mounted (a daemon killed hard after another stacks them).
    for (const _ of mounts.filter((m) => m === path)) await must("umount", [path]);
  }
  await Deno.remove(dir, { recursive: true }).catch(() => {
    // No run dir: nothing was left.
  });
}

/**
 * Remove the data root `root` of a test's own daemons, once they were killed (bounded wait for
 * them to exit, naming them), with what they left ({@linkcode dropDaemonLeftovers}) and its lock
 * file.
 */
export async function removeDataRoot(root: string): Promise<void> {
  await until(
    `the dockerd on ${root} to exit (${daemonsOn(root)})`,
    () => daemonsOn(root).length === 0,
    daemonStopTimeoutMs,
  );
  await dropDaemonLeftovers(root);
  await Deno.remove(root, { recursive: true }).catch((err) => {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  });
  await Deno.remove(`${root}.lock`).catch((err) => {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  });
}

async function startDockerd(driver: string): Promise<DockerEngine> {
  await Deno.mkdir(runDir, { recursive: true });
  const host = `unix://${runDir}/docker.sock`;
  const child = new Deno.Command(dockerdBin, {
    args: [
      "--iptables=false",
      "--ip-masq=false",
      // Leave the host's net.ipv4.ip_forward alone (containers on one bridge and published
      // ports through docker-proxy need no routing).
      "--ip-forward=false",
      `--storage-driver=${driver}`,
      `--data-root=${dataRoot}`,
      `--exec-root=${runDir}/exec`,
      `--pidfile=${runDir}/dockerd.pid`,
      `--host=${host}`,
      // No default docker0 bridge: builds use the host network, compose makes its own.
      "--bridge=none",
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let logText = "";
  const pump = async (s: ReadableStream<Uint8Array>) => {
    for await (const chunk of s.pipeThrough(new TextDecoderStream())) {
      logText = (logText + chunk).slice(-daemonLogKeepBytes);
    }
  };
  const pumped = Promise.all([pump(child.stdout), pump(child.stderr)]);
  let stopped: Promise<void> | undefined;
  const engine: DockerEngine = {
    host,
    started: true,
    driver,
    pid: child.pid,
    log: () => logText,
    stop: () =>
      stopped ??= retire((signal) => child.kill(signal), () => Promise.all([child.status, pumped])),
  };
  const deadline = Date.now() + daemonStartTimeoutMs;
  let exited = false;
  child.status.then(() => exited = true);
  while (!(await answers(host))) {
    if (exited || Date.now() > deadline) {
      await engine.stop();
      throw new Error(`dockerd --storage-driver=${driver} did not come up:\n${logText}`);
    }
    await sleep(500);
  }
  return engine;
}

/** Whether `ref` names an image the engine has. */
export async function imageExists(env: Record<string, string>, ref: string): Promise<boolean> {
  return (await run(dockerBin, ["image", "inspect", ref], {
    env,
    timeoutMs: dockerCommandTimeoutMs,
  })).code === 0;
}

/** The first Debian mirror of the machine's apt sources that serves `suite` (not security). */
export function aptMirror(suite: string): string {
  const fromEnv = Deno.env.get("WARREN_DEBOOTSTRAP_MIRROR");
  if (fromEnv) return fromEnv;
  const read = (p: string): string => {
    try {
      return Deno.readTextFileSync(p);
    } catch {
      return "";
    }
  };
  const candidates: string[] = [];
  // one-line format: deb [options] URI suite components
  for (const line of read("/etc/apt/sources.list").split("\n")) {
    const m = /^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)/.exec(line);
    if (m && m[2] === suite) candidates.push(m[1]);
  }
  // deb822 format (*.sources): stanzas with URIs: and Suites:
  let files: string[] = [];
  try {
    files = [...Deno.readDirSync("/etc/apt/sources.list.d")]
      .filter((e) => e.name.endsWith(".sources") || e.name.endsWith(".list"))
      .map((e) => `/etc/apt/sources.list.d/${e.name}`).sort();
  } catch {
    // no directory
  }
  for (const f of files) {
    const text = read(f);
    if (f.endsWith(".list")) {
      for (const line of text.split("\n")) {
        const m = /^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)/.exec(line);
        if (m && m[2] === suite) candidates.push(m[1]);
      }
      continue;
    }
    for (const stanza of text.split(/\n\s*\n/)) {
      const field = (k: string) => new RegExp(`^${k}:\\s*(.+)$`, "mi").exec(stanza)?.[1].trim();
      if ((field("Enabled") ?? "yes") === "no") continue;
      if (!(field("Types") ?? "").split(/\s+/).includes("deb")) continue;
      if (!(field("Suites") ?? "").split(/\s+/).includes(suite)) continue;
      candidates.push(...(field("URIs") ?? "").split(/\s+/).filter(Boolean));
    }
  }
  return candidates.find((u) => !u.includes("security")) ?? "http://deb.debian.org/debian";
}

/** Paths (tar patterns) of the debootstrapped root file system left out of the base image. */
export const rootfsExcludes: readonly string[] = [
  "./var/lib/apt/lists/*",
  "./var/cache/apt/*",
  "./var/cache/debconf/*-old",
  "./usr/share/locale/*",
  "./usr/share/doc/*",
  "./usr/share/man/*",
  "./usr/share/info/*",
];

/** What building the base image did (for the test's timing report). */
export interface BaseImage {
  ref: string;
  /** "given" (WARREN_DOCKER_BASE), "cached" or "built". */
  how: "given" | "cached" | "built";
  ms: number;
}

/**
 * The image passed as the Dockerfile's BASE: WARREN_DOCKER_BASE when set (e.g. the official
 * denoland/deno image, pulled), else `warren-test-base:<deno version>`, built offline once
 * and reused: a Debian bookworm minbase root file system from the machine's apt mirror,
 * imported, plus the Deno binary running this test as /usr/bin/deno.
 */
export async function ensureBaseImage(
  env: Record<string, string>,
  tmp: string,
  progress: (msg: string) => void,
): Promise<BaseImage> {
  const t0 = Date.now();
  const given = Deno.env.get("WARREN_DOCKER_BASE");
  if (given) return { ref: given, how: "given", ms: 0 };
  const ref = `warren-test-base:${Deno.version.deno}`;
  if (await imageExists(env, ref)) return { ref, how: "cached", ms: Date.now() - t0 };
  const rootfsRef = "warren-base-rootfs:bookworm";
  if (!(await imageExists(env, rootfsRef))) {
    const dir = `${tmp}/rootfs`;
    const mirror = aptMirror("bookworm");
    progress(`debootstrap --variant=minbase bookworm from ${mirror} (a few minutes)`);
    const cacheDir = "/var/cache/warren-debootstrap";
    await Deno.mkdir(cacheDir, { recursive: true });
    await must(debootstrapBin, [
      "--variant=minbase",
      `--cache-dir=${cacheDir}`,
      "bookworm",
      dir,
      mirror,
    ]);
    progress("docker import");
    // Leave out what a container never reads (apt lists and debs, locales, docs): a smaller
    // image is copied faster, and with vfs every layer and container is a full copy.
    await must("/bin/sh", [
      "-c",
      `dir=$1 ref=$2; shift 2; tar -C "$dir" "$@" -c . | ${dockerBin} import - "$ref"`,
      "sh",
      dir,
      rootfsRef,
      ...rootfsExcludes.map((e) => `--exclude=${e}`),
    ], env);
    await Deno.remove(dir, { recursive: true });
  }
  const ctx = `${tmp}/base-context`;
  await Deno.mkdir(ctx, { recursive: true });
  await Deno.copyFile(Deno.execPath(), `${ctx}/deno`);
  await Deno.writeTextFile(
    `${ctx}/Dockerfile`,
    `FROM ${rootfsRef}\nCOPY deno /usr/bin/deno\n`,
  );
  progress(`docker build ${ref} (Deno ${Deno.version.deno} from ${Deno.execPath()})`);
  await must(dockerBin, ["build", "--force-rm", "-q", "-t", ref, ctx], env);
  await Deno.remove(ctx, { recursive: true });
  return { ref, how: "built", ms: Date.now() - t0 };
}

/**
 * PEM text of the CAs added locally to this machine (Debian's /usr/local/share/ca-certificates),
 * for the image build's npm downloads on a network that intercepts TLS; "" when none.
 */
export function localCaPem(): string {
  const dir = "/usr/local/share/ca-certificates";
  const pems: string[] = [];
  try {
    for (const e of [...Deno.readDirSync(dir)].sort((a, b) => a.name < b.name ? -1 : 1)) {
      if (e.isFile && e.name.endsWith(".crt")) pems.push(Deno.readTextFileSync(`${dir}/${e.name}`));
    }
  } catch {
    // none
  }
  return pems.map((p) => p.trim()).join("\n");
}

/** Sum of the samples of a Prometheus metric family in exposition text (0 when absent). */
export function metricSum(text: string, name: string): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    const m = new RegExp(`^${name}(?:\\{[^}]*\\})?\\s+(\\S+)`).exec(line);
    if (m) sum += Number(m[1]);
  }
  return sum;
}

/** The checkout the images are built from. */
const repoRoot = new URL("..", import.meta.url).pathname;

/**
 * Build the warren image (the repository's Dockerfile) on `baseRef` as `tag`; the npm
 * packages are fetched over the host's network (no masquerading bridge on our engine).
 */
export async function buildWarrenImage(
  env: Record<string, string>,
  baseRef: string,
  tag: string,
): Promise<void> {
  await must(dockerBin, [
    "build",
    "--force-rm",
    "--quiet",
    "--network=host",
    "--build-arg",
    `BASE=${baseRef}`,
    "--build-arg",
    `EXTRA_CA_PEM=${localCaPem()}`,
    "--tag",
    tag,
    repoRoot,
  ], env);
}

/** The offline image holding Debian's redis-server and haproxy (for the cluster stack). */
export const extrasImage = "warren-test-extras:bookworm";

/**
 * {@linkcode extrasImage}, built once from the offline base's root file system with apt over
 * the host's network (about 15 s), then reused; `commands` of the official redis and haproxy
 * images (`redis-server …`, `haproxy -f …`) run the same in it.
 */
export async function ensureExtrasImage(env: Record<string, string>, tmp: string): Promise<void> {
  if (await imageExists(env, extrasImage)) return;
  const ctx = `${tmp}/extras-context`;
  await Deno.mkdir(ctx, { recursive: true });
  await Deno.writeTextFile(
    `${ctx}/Dockerfile`,
    [
      "FROM warren-base-rootfs:bookworm",
      // No daemon starts at install (policy-rc.d), and nothing of apt stays.
      "RUN printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \\",
      " && apt-get update && apt-get install -y --no-install-recommends redis-server haproxy \\",
      " && rm -rf /var/lib/apt/lists/* /var/cache/apt/*",
      "",
    ].join("\n"),
  );
  await must(
    dockerBin,
    ["build", "--force-rm", "-q", "--network=host", "-t", extrasImage, ctx],
    env,
  );
  await Deno.remove(ctx, { recursive: true });
}
