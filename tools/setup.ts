/**
 * The test suite's setup step (`deno task test` runs it first): it reads the one list of Debian
 * packages whose programs the tests start (the `test-peers` block of `.ci/run`) and checks
 * them by the files those programs are. Missing ones are installed with apt-get when this
 * runs as root on a machine that has it (Debian's packages are the only outside source:
 * nothing else is downloaded here); otherwise it stops with one line naming them.
 *
 *     deno run --allow-read --allow-env --allow-sys=uid --allow-run=apt-get tools/setup.ts [--check]
 *
 * `--check` only reports (exit 1 when something is missing), never installs.
 * @module
 */

/** A Debian package and the programs of it the suite starts. */
export interface TestPeer {
  /** Debian package name. */
  pkg: string;
  /**
   * The files that prove it is installed: an absolute path, or a command name looked up on
   * PATH (then /usr/sbin and /sbin). Alternatives for one file are joined by `|`.
   */
  files: string[];
  /** Which tests need it. */
  usedBy: string;
}

/** Where the one package list lives: the CI entry point, which a reader of CI sees first. */
const listFile = new URL("../.ci/run", import.meta.url);

/**
 * Parse the `# test-peers:` … `# end test-peers` block of `.ci/run`: one package a line,
 * then its files (comma-separated), then what starts them, columns split by 2+ spaces.
 */
export function parsePeers(text: string): TestPeer[] {
  const lines = text.split("\n");
  const start = lines.findIndex((l) => l.trim() === "# test-peers:");
  const end = lines.findIndex((l) => l.trim() === "# end test-peers");
  if (start < 0 || end < start) throw new Error("no '# test-peers:' block in .ci/run");
  return lines.slice(start + 1, end).map((line) => {
    const [pkg, files, ...usedBy] = line.replace(/^#\s*/, "").split(/\s{2,}/);
    if (!pkg || !files || usedBy.length === 0) throw new Error(`bad test-peers line: ${line}`);
    return { pkg, files: files.split(","), usedBy: usedBy.join("  ") };
  });
}

/** Every Debian package the test suite starts a program of. */
export const testPeers: readonly TestPeer[] = parsePeers(Deno.readTextFileSync(listFile));

function isPresent(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Whether `file` (absolute path or command name, `|`-separated alternatives) exists. */
export function found(file: string, path = Deno.env.get("PATH") ?? ""): boolean {
  return file.split("|").some((f) => {
    if (f.startsWith("/")) return isPresent(f);
    const dirs = [...path.split(":").filter(Boolean), "/usr/sbin", "/sbin"];
    return dirs.some((d) => isPresent(`${d}/${f}`));
  });
}

/** The packages of `peers` some file of which is missing. */
export function missingPackages(peers: readonly TestPeer[] = testPeers): string[] {
  return peers.filter((p) => !p.files.every((f) => found(f))).map((p) => p.pkg);
}

async function apt(args: string[]): Promise<void> {
  const out = await new Deno.Command("apt-get", {
    args,
    env: { DEBIAN_FRONTEND: "noninteractive" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    const dec = new TextDecoder();
    throw new Error(
      `apt-get ${args.join(" ")} exited ${out.code}:\n` +
        dec.decode(out.stdout).slice(-4000) + dec.decode(out.stderr).slice(-4000),
    );
  }
}

if (import.meta.main) {
  const checkOnly = Deno.args.includes("--check");
  const missing = missingPackages();
  if (missing.length === 0) Deno.exit(0);
  const canInstall = !checkOnly && Deno.uid() === 0 && found("apt-get");
  if (!canInstall) {
    console.error(
      `setup: missing test peers: ${missing.join(" ")} (install them: apt-get install ` +
        `--no-install-recommends ${missing.join(" ")})`,
    );
    Deno.exit(1);
  }
  const t0 = performance.now();
  console.error(`setup: installing ${missing.join(" ")} (apt-get)`);
  try {
    await apt(["update", "-qq"]);
    await apt(["install", "-y", "-qq", "--no-install-recommends", ...missing]);
  } catch (err) {
    console.error(`setup: ${err instanceof Error ? err.message : String(err)}`);
    Deno.exit(1);
  }
  const still = missingPackages();
  if (still.length > 0) {
    console.error(`setup: still missing after apt-get install: ${still.join(" ")}`);
    Deno.exit(1);
  }
  console.error(`setup: installed in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}
