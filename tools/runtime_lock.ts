/**
 * The runtime lockfile: deno.lock without the packages only tests import (fast-check,
 * playwright-core, socks and what they depend on). Deno fetches every package of a lockfile
 * it caches with, whatever the entry points import, so the image (Dockerfile) caches its
 * services against this pruned copy: every version stays pinned as in deno.lock, and no test
 * package enters the image.
 *
 *     deno run --allow-read=. --allow-write=deno.lock tools/runtime_lock.ts [dir…]
 *
 * Keeps the `npm:name@version` specifiers that deno.json's imports or the files under the given
 * directories (default: lib services deploy, plus mod.ts) name, and the packages they reach;
 * rewrites ./deno.lock in place.
 * @module
 */

/** The parts of a version 5 deno.lock this script reads and prunes. */
export interface DenoLock {
  version: string;
  specifiers?: Record<string, string>;
  npm?: Record<string, NpmEntry>;
  [key: string]: unknown;
}

/** One resolved npm package of the lockfile. */
export interface NpmEntry {
  integrity?: string;
  dependencies?: string[];
  optionalDependencies?: string[];
  optionalPeers?: string[];
  [key: string]: unknown;
}

/** `npm:name@version` specifiers named in `text` (subpaths such as `/dist/x.js` dropped). */
export function npmSpecifiers(text: string): Set<string> {
  const out = new Set<string>();
  for (const m of text.matchAll(/npm:((?:@[\w.-]+\/)?[\w.-]+)@([\w.+-]+)/g)) {
    out.add(`npm:${m[1]}@${m[2]}`);
  }
  return out;
}

/** The package key (`name@version`) a dependency entry of `lock.npm` points to. */
function resolveDep(npm: Record<string, NpmEntry>, dep: string): string | undefined {
  if (dep in npm) return dep; // already name@version (several versions of one name)
  const prefix = `${dep}@`;
  return Object.keys(npm).find((k) =>
    k.startsWith(prefix) && !k.slice(prefix.length).includes("@")
  );
}

/** `lock` with only the specifiers in `keep` and the npm packages they reach. */
export function pruneLock(lock: DenoLock, keep: Set<string>): DenoLock {
  const specifiers = Object.fromEntries(
    Object.entries(lock.specifiers ?? {}).filter(([s]) => keep.has(s)),
  );
  const npm = lock.npm ?? {};
  const reached = new Set<string>();
  const todo = Object.entries(specifiers).flatMap(([s, version]) => {
    if (!s.startsWith("npm:")) return [];
    const name = s.slice(4, s.lastIndexOf("@"));
    const key = `${name}@${version}`;
    return key in npm ? [key] : [];
  });
  while (todo.length > 0) {
    const key = todo.pop()!;
    if (reached.has(key)) continue;
    reached.add(key);
    const e = npm[key];
    for (const dep of [...e.dependencies ?? [], ...e.optionalDependencies ?? []]) {
      const k = resolveDep(npm, dep);
      if (k && !reached.has(k)) todo.push(k);
    }
  }
  const out: DenoLock = { ...lock, specifiers };
  if (lock.npm) {
    out.npm = Object.fromEntries(Object.entries(npm).filter(([k]) => reached.has(k)));
  }
  return out;
}

/** Every file under `dir` ending in .ts or .js (or `dir` itself when it is a file). */
function* sourceFiles(dir: string): Generator<string> {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(dir);
  } catch {
    return; // not in this tree (e.g. a directory the image leaves out)
  }
  if (info.isFile) {
    yield dir;
    return;
  }
  for (const e of Deno.readDirSync(dir)) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory && e.name !== "node_modules") yield* sourceFiles(p);
    else if (e.isFile && /\.(ts|js)$/.test(e.name)) yield p;
  }
}

/** The specifiers deno.json's imports and the sources under `dirs` name. */
export function runtimeSpecifiers(dirs: string[]): Set<string> {
  const keep = npmSpecifiers(Deno.readTextFileSync("deno.json"));
  for (const dir of dirs) {
    for (const f of sourceFiles(dir)) {
      for (const s of npmSpecifiers(Deno.readTextFileSync(f))) keep.add(s);
    }
  }
  return keep;
}

if (import.meta.main) {
  const dirs = Deno.args.length > 0 ? Deno.args : ["lib", "services", "deploy", "mod.ts"];
  const lock = JSON.parse(Deno.readTextFileSync("deno.lock")) as DenoLock;
  const pruned = pruneLock(lock, runtimeSpecifiers(dirs));
  Deno.writeTextFileSync("deno.lock", JSON.stringify(pruned, null, 2) + "\n");
  const dropped = Object.keys(lock.npm ?? {}).filter((k) => !(k in (pruned.npm ?? {})));
  console.log(
    `runtime lock: ${Object.keys(pruned.npm ?? {}).length} npm packages kept, ` +
      `dropped ${dropped.join(" ") || "none"}`,
  );
}
