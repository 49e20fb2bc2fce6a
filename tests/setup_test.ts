/**
 * The setup step's package list (the `test-peers` block of .ci/run, read by tools/setup.ts) is
 * the one list of what the suite starts:
 * every program a test spawns is either in it or part of every Debian system, and every entry
 * of it is started by some test. Also: the setup step finds programs on PATH and by path,
 * and stops with one line naming what is missing when it may not install.
 */
import { assert, assertEquals } from "./_assert.ts";
import { found, missingPackages, testPeers } from "../tools/setup.ts";
import { run } from "./_util.ts";

/**
 * Programs of Debian's essential packages (on every Debian system), shell builtins, and the
 * Deno running the suite: never in the setup list.
 */
const essential = new Set([
  ...["sh", "umount", "head", "sha256sum", "tar", "prlimit"], // dash, mount, coreutils, tar, util-linux
  ...["cd", "shift"], // shell builtins
  "deno",
]);

const testsDir = new URL("./", import.meta.url);

/** Program names the tests start, read from their source. */
function spawnedPrograms(): Map<string, string> {
  const patterns = [
    /new Deno\.Command\(\s*"([^"]+)"/g, // new Deno.Command("nginx", …)
    /\b(?:run|sh|must)\(\s*"([^"]+)"/g, // run("curl", …), sh("ip", …), must("/bin/sh", …)
    /\bspawn\(\s*[\w.]+,\s*"([^"]+)"/g, // net.spawn(ns, "/usr/sbin/sshd", …)
    /"exec",\s*[\w.]+,\s*"([^"]+)"/g, // ip netns exec <ns> "ssh" …
    /\bsh\(\s*`([\w-]+) /g, // sh(`openssl req …`)
    /export const \w+(?:Bin|Path) = "(\/[^"]+)"/g, // dockerBin = "/usr/bin/docker"
  ];
  const script = /"-c",\s*`([^`]*)`/g; // run("sh", ["-c", `head … | curl …`])
  const found = new Map<string, string>();
  for (const e of Deno.readDirSync(testsDir)) {
    if (!e.isFile || !e.name.endsWith(".ts")) continue;
    const text = Deno.readTextFileSync(new URL(e.name, testsDir));
    for (const re of patterns) {
      for (const m of text.matchAll(re)) found.set(m[1], e.name);
    }
    for (const m of text.matchAll(script)) {
      for (const part of m[1].split(/\||&&|;/)) {
        // the first word after any leading variable assignments (`dir=$1 tar …`)
        const word = /^\s*(?:\w+=\S*\s+)*([\w./-]+)(?:\s|$)/.exec(part)?.[1];
        if (word) found.set(word, e.name);
      }
    }
  }
  return found;
}

const base = (p: string) => p.slice(p.lastIndexOf("/") + 1);
const listed = new Set(testPeers.flatMap((p) => p.files.flatMap((f) => f.split("|").map(base))));

Deno.test("setup: every program a test starts is in the setup list or essential", () => {
  const programs = spawnedPrograms();
  // The scan itself must see the peers it is about (a broken pattern would pass vacuously).
  const names = new Set([...programs.keys()].map(base));
  for (const p of ["microsocks", "danted", "nginx", "curl", "ip", "sshd", "ssh", "openssl"]) {
    assert(names.has(p), `the scan found ${p}: ${[...names].join(" ")}`);
  }
  const unlisted = [...programs].filter(([p]) => !listed.has(base(p)) && !essential.has(base(p)));
  assertEquals(
    unlisted,
    [],
    "programs started by tests but missing from the test-peers list in .ci/run",
  );
});

Deno.test("setup: every package in the list is used by a test", () => {
  const names = new Set([...spawnedPrograms().keys()].map(base));
  const texts = [...Deno.readDirSync(testsDir)]
    .filter((e) => e.isFile && e.name.endsWith(".ts") && e.name !== "setup_test.ts")
    .map((e) => Deno.readTextFileSync(new URL(e.name, testsDir))).join("\n");
  for (const peer of testPeers) {
    // A program started by a test, or a path a test reads (Debian's yamux source folder).
    const used = peer.files.some((f) =>
      f.split("|").some((alt) => names.has(base(alt)) || texts.includes(`"${alt}"`))
    );
    assert(used, `${peer.pkg} is not used by any test`);
  }
});

Deno.test("setup: programs are found on PATH or by path, alternatives with |", () => {
  const dir = Deno.makeTempDirSync({ prefix: "warren-setup-" });
  try {
    Deno.writeTextFileSync(`${dir}/fake-peer`, "");
    assert(found("fake-peer", dir));
    assert(!found("fake-peer", "/nonexistent"));
    assert(found(`${dir}/fake-peer`, ""));
    assert(found(`/nonexistent/x|${dir}/fake-peer`, ""));
    assertEquals(
      missingPackages([
        { pkg: "there", files: [`${dir}/fake-peer`], usedBy: "" },
        { pkg: "absent", files: [`${dir}/fake-peer`, `${dir}/no-such-program`], usedBy: "" },
      ]),
      ["absent"],
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("setup: on this machine nothing is missing, and --check says so", async () => {
  assertEquals(missingPackages(), []);
  const r = await run(Deno.execPath(), [
    "run",
    "--allow-read",
    "--allow-env",
    "--allow-sys=uid",
    new URL("../tools/setup.ts", import.meta.url).pathname,
    "--check",
  ]);
  assertEquals([r.code, r.stdout, r.stderr], [0, "", ""]);
});
