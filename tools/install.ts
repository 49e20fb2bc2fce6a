/**
 * Puts every warren service on PATH under its own name (seaprox, depot-server, …), each with
 * only the Deno permissions it needs: the network, its own environment variables (WARREN_*
 * and its prefix, e.g. DEPOT_*), reading files (config, secrets, TLS keys; `--read` narrows
 * it to some paths), FFI for glibc's libc.so.6 only (the TCP resets of lib/net/reset.ts and
 * seaprox's SO_ORIGINAL_DST; without it a relay cut short ends in a FIN that a client takes
 * for a complete transfer), and nothing else (no write, run or sys). `--workers` adds what
 * `--workers N` needs to seaprox, depot-server and tunnel-server: `--unstable-net` (reusePort)
 * and `--allow-run` of this deno executable alone, to start the worker processes. That grant
 * is only given when asked for: a program that may start deno may start it with any
 * permission, so it ends the sandbox for a service that never runs workers.
 *
 *     deno run -A tools/install.ts [--root DIR] [--read PATHS] [--workers] [--shims] [service…]
 *
 * By default each service is installed with `deno install -g` (into `--root`, else
 * DENO_INSTALL_ROOT, else ~/.deno): the command caches what that service imports, and only
 * that. `--shims` writes plain `#!/bin/sh` launchers into `--root`/bin instead, running
 * `deno run --cached-only` on this checkout with its deno.json and deno.lock: for a machine
 * whose cache is already filled, like the image (Dockerfile).
 * @module
 */

import { libcCandidates } from "../lib/net/libc.ts";

/** The service scripts (services/<name>.ts) installed under their own names. */
export const serviceNames = [
  "seaprox",
  "depot-server",
  "depot-local",
  "tunnel-server",
  "tunnel-client",
  "fusion-server",
  "fusion-client",
] as const;

/** A service script name. */
export type ServiceName = typeof serviceNames[number];

/** The services that take `--workers N` (what `--workers` widens). */
export const workerServices: readonly ServiceName[] = ["seaprox", "depot-server", "tunnel-server"];

/** How a service is installed. */
export interface InstallOptions {
  /** The paths it may read (config, secret and certificate files); undefined: any. */
  read?: string[];
  /** Grant what `--workers N` needs (to the services of {@linkcode workerServices}). */
  workers?: boolean;
}

/** The egress-proxy variables (`--proxy`, `--https-proxy`, `--no-proxy`) a dialling service reads. */
const proxyEnv = ["ALL_PROXY", "HTTPS_PROXY", "NO_PROXY"];

/**
 * The two variables @redis/client (`--registry`) reads as it connects: without them an
 * installed depot-server or tunnel-server never got past connecting to Redis.
 */
const redisEnv = ["REDIS_DEBUG_MAINTENANCE", "REDIS_EMIT_DIAGNOSTICS"];

/**
 * The environment variables each service reads: lib/cli's common ones (WARREN_LOG_LEVEL,
 * WARREN_CONFIG, WARREN_TLS_*), those of its own flags, which all share a prefix, and the
 * egress-proxy variables of the services that dial out to a server.
 */
export const serviceEnv: Record<ServiceName, string[]> = {
  "seaprox": ["WARREN_*", "SEAPROX_*", ...proxyEnv],
  "depot-server": ["WARREN_*", "DEPOT_*", ...redisEnv],
  "depot-local": ["WARREN_*", "DEPOT_*", ...proxyEnv],
  "tunnel-server": ["WARREN_*", "TUNNEL_*", ...redisEnv],
  "tunnel-client": ["WARREN_*", "TUNNEL_*", ...proxyEnv],
  "fusion-server": ["WARREN_*", "FUSION_*"],
  "fusion-client": ["WARREN_*", "FUSION_*", ...proxyEnv],
};

/**
 * The Deno permission flags of `name` (and `--unstable-net` for seaprox's QUIC). `opts.read`
 * lists the paths it may read (config, secret and certificate files); undefined lets it read
 * any file the user names. FFI is granted for this machine's libc.so.6 alone (none without
 * glibc). With `opts.workers`, a service that takes `--workers N` also gets `--unstable-net`
 * (its listeners share ports with reusePort, unstable in Deno 2.9.6) and `--allow-run` of the
 * deno executable running this (the one the launchers run; the supervisor starts exactly it).
 * The supervisor reads its own command line through libc (lib/workers `ownCommandLine`).
 */
export function servicePermissions(name: ServiceName, opts: InstallOptions = {}): string[] {
  const libc = installedLibc();
  const workers = opts.workers === true && workerServices.includes(name);
  return [
    // seaprox's quic:// links use Deno's QUIC, unstable in Deno 2.9.6.
    ...(name === "seaprox" || workers ? ["--unstable-net"] : []),
    "--allow-net",
    `--allow-env=${serviceEnv[name].join(",")}`,
    opts.read ? `--allow-read=${opts.read.join(",")}` : "--allow-read",
    ...(libc ? [`--allow-ffi=${libc}`] : []),
    ...(workers ? [`--allow-run=${Deno.execPath()}`] : []),
  ];
}

/**
 * The libc.so.6 the services will open (lib/net/libc.ts tries the same paths in the same
 * order), or undefined on a machine without glibc (musl, not Linux): no FFI at all then.
 */
export function installedLibc(): string | undefined {
  if (Deno.build.os !== "linux") return undefined;
  return libcCandidates.find((path) => {
    try {
      return Deno.statSync(path).isFile;
    } catch {
      return false; // not this layout
    }
  });
}

const repoRoot = new URL("../", import.meta.url);
const repoPath = (p: string) => new URL(p, repoRoot).pathname;

/** A POSIX shell word quoting `s`. */
function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", "'\\''")}'`;
}

/** The text of a `--shims` launcher: `deno run --cached-only` of the service with its flags. */
export function shimText(name: ServiceName, opts: InstallOptions = {}): string {
  const args = [
    "deno",
    "run",
    "--cached-only",
    "--no-prompt",
    `--config=${repoPath("deno.json")}`,
    ...servicePermissions(name, opts),
    repoPath(`services/${name}.ts`),
  ];
  return `#!/bin/sh\n# warren ${name}: generated by tools/install.ts --shims\n` +
    `exec ${args.map(shellQuote).join(" ")} "$@"\n`;
}

/** The `deno install -g` arguments that put `name` on PATH under `root`/bin. */
export function installArgs(
  name: ServiceName,
  root: string | undefined,
  opts: InstallOptions = {},
) {
  return [
    "install",
    "--global",
    "--force",
    "--quiet",
    ...(root ? ["--root", root] : []),
    "--name",
    name,
    `--config=${repoPath("deno.json")}`,
    ...servicePermissions(name, opts),
    repoPath(`services/${name}.ts`),
  ];
}

function usageExit(msg: string): never {
  console.error(`error: ${msg}`);
  console.error(
    "usage: tools/install.ts [--root DIR] [--read PATHS] [--workers] [--shims] [service…]",
  );
  Deno.exit(2);
}

if (import.meta.main) {
  let root = Deno.env.get("DENO_INSTALL_ROOT") || undefined;
  const opts: InstallOptions = {};
  let shims = false;
  const names: ServiceName[] = [];
  const args = [...Deno.args];
  while (args.length > 0) {
    const a = args.shift()!;
    const [flag, inline] = a.startsWith("--") && a.includes("=") ? a.split(/=(.*)/s) : [a];
    const value = () => inline ?? args.shift() ?? usageExit(`${flag} needs a value`);
    if (flag === "--root") root = value();
    else if (flag === "--read") opts.read = value().split(",").filter(Boolean);
    else if (flag === "--workers") opts.workers = true;
    else if (flag === "--shims") shims = true;
    else if ((serviceNames as readonly string[]).includes(a)) names.push(a as ServiceName);
    else usageExit(`unknown argument ${a} (services: ${serviceNames.join(" ")})`);
  }
  if (names.length === 0) names.push(...serviceNames);
  if (shims) {
    if (!root) usageExit("--shims needs --root");
    await Deno.mkdir(`${root}/bin`, { recursive: true });
    for (const name of names) {
      const path = `${root}/bin/${name}`;
      await Deno.writeTextFile(path, shimText(name, opts), { mode: 0o755 });
      await Deno.chmod(path, 0o755); // mode applies to new files only
    }
  } else {
    for (const name of names) {
      const out = await new Deno.Command(Deno.execPath(), {
        args: installArgs(name, root, opts),
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
      if (!out.success) {
        const dec = new TextDecoder();
        console.error(`error: deno install ${name} exited ${out.code}:`);
        console.error(dec.decode(out.stdout) + dec.decode(out.stderr));
        Deno.exit(1);
      }
    }
  }
  const bin = `${root ?? `${Deno.env.get("HOME")}/.deno`}/bin`;
  console.log(`installed ${names.join(" ")} into ${bin}`);
}
