/** The per-test watchdog: a hung test fails with a report and its service processes die. */
import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { dockerSkipReason, removeDataRoot } from "./_docker.ts";

const watchdog = new URL("./_watchdog.ts", import.meta.url).href;
const dockerModule = new URL("./_docker.ts", import.meta.url).href;

/** How long an inner test run may take before it is killed: the watchdog under test failed. */
const innerLimitMs = 60_000;

/**
 * `deno test` of `file` under the preloaded watchdog with `env`, in a process group of its own
 * (`detached`: setsid), killed as a group after `limitMs` and again when done: should the
 * watchdog not work, neither the hung run nor a child it started (`deno eval`) outlives this
 * test. Returns whether it was killed, its exit code and its output.
 */
async function runUnderWatchdog(
  file: string,
  env: Record<string, string>,
  limitMs = innerLimitMs,
): Promise<{ killed: boolean; code: number; text: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["test", "-A", "--no-check", "--preload", watchdog, file],
    env: { ...env, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
    detached: true,
  }).spawn();
  const killGroup = () => {
    try {
      Deno.kill(-child.pid, "SIGKILL");
    } catch {
      // No process is left in the group: nothing to kill.
    }
  };
  let killed = false;
  const timer = setTimeout(() => {
    killed = true;
    killGroup();
  }, limitMs);
  try {
    const out = await child.output();
    const dec = new TextDecoder();
    return { killed, code: out.code, text: dec.decode(out.stdout) + dec.decode(out.stderr) };
  } finally {
    clearTimeout(timer);
    killGroup();
  }
}

Deno.test("watchdog: a hung test fails named, with its log and its child's, the child is killed, its cleanups run and the next test runs", async () => {
  const dir = await Deno.makeTempDir();
  const pidFile = `${dir}/pid`;
  const cleanedFile = `${dir}/cleaned`;
  try {
    await Deno.writeTextFile(
      `${dir}/hang_test.ts`,
      `import { cleanUpOnTimeout, testLogger, watchChild } from ${JSON.stringify(watchdog)};
const log = testLogger("in-process");
Deno.test("hangs forever", async () => {
  log.info("waiting for the thing that never comes", { step: 7 });
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", "console.log('child line one'); setTimeout(() => {}, 1e9)"],
    stdout: "piped",
  }).spawn();
  await Deno.writeTextFile(${JSON.stringify(pidFile)}, String(child.pid));
  const lines: string[] = [];
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  lines.push(((await reader.read()).value ?? "").trim());
  watchChild({ name: "sleeper", lines, kill: () => child.kill("SIGKILL") });
  cleanUpOnTimeout(() => Deno.writeTextFile(${JSON.stringify(cleanedFile)}, "cleaned"));
  cleanUpOnTimeout(() => { throw new Error("the second cleanup broke"); });
  await new Promise(() => {});
});
Deno.test("runs after it", async () => {
  if (await Deno.readTextFile(${
        JSON.stringify(cleanedFile)
      }) !== "cleaned") throw new Error("not cleaned");
});
`,
    );
    // Killed after a minute with its child, should the watchdog not work: this test must not
    // hang either, nor leave the child behind.
    const out = await runUnderWatchdog(`${dir}/hang_test.ts`, { WARREN_TEST_TIMEOUT_S: "2" });
    const text = out.text;
    assert(!out.killed, `the hung run was killed after ${innerLimitMs} ms:\n${text}`);
    assert(out.code !== 0, text);
    assertMatch(text, /test "hangs forever" did not finish in 2 s/);
    assertMatch(text, /waiting for the thing that never comes.*step=7/);
    assertMatch(text, /service sleeper still running, its last lines:\s+child line one/);
    // Both cleanups ran before the next test (which reads the first's file); the failing one
    // is named in the report.
    assertMatch(text, /cleanup failed: the second cleanup broke/);
    assertMatch(text, /runs after it \.\.\. ok/);
    const pid = Number(await Deno.readTextFile(pidFile));
    // The child got SIGKILL from the watchdog; the test runner reaped it or it is gone.
    let alive = true;
    try {
      Deno.kill(pid, "SIGCONT");
    } catch {
      alive = false;
    }
    assertEquals(alive, false, `child ${pid} still alive`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("watchdog: slowTest gives a test a longer limit of its own, the others keep the default", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(
      `${dir}/slow_test.ts`,
      `import { slowTest } from ${JSON.stringify(watchdog)};
const sleep = () => new Promise((r) => setTimeout(r, 2_500));
Deno.test("slow with its own limit", slowTest(30_000, sleep));
Deno.test("slow with the default limit", sleep);
`,
    );
    const out = await runUnderWatchdog(`${dir}/slow_test.ts`, { WARREN_TEST_TIMEOUT_S: "1" });
    const text = out.text;
    assert(!out.killed, `the run was killed after ${innerLimitMs} ms:\n${text}`);
    assertMatch(text, /slow with its own limit \.\.\. ok/);
    assertMatch(text, /test "slow with the default limit" did not finish in 1 s/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "watchdog: a Docker test's registered cleanup stops its daemon at a timeout, before the next test",
  ignore: dockerSkipReason() !== undefined,
}, async () => {
  const dir = await Deno.makeTempDir();
  const dataRoot = `${dir}/data`;
  try {
    // The daemon starts as the module loads (outside the watchdog's limit, which is short
    // here); the test registers its stop as the Docker tests do, and hangs.
    await Deno.writeTextFile(
      `${dir}/docker_hang_test.ts`,
      `import { cleanUpOnTimeout } from ${JSON.stringify(watchdog)};
import { dataRootLockPath, daemonsOn, dataRoot, runDir, startDocker } from ${
        JSON.stringify(dockerModule)
      };
const engine = await startDocker();
console.log("daemon", engine.pid, "up");
Deno.test({ name: "hangs holding a daemon", sanitizeOps: false, sanitizeResources: false }, async () => {
  cleanUpOnTimeout(() => engine.stop());
  await new Promise(() => {});
});
Deno.test("runs after it", async () => {
  if (daemonsOn(dataRoot).length) throw new Error("daemon running: " + daemonsOn(dataRoot));
  if (await Deno.stat(runDir).then(() => true, () => false)) throw new Error(runDir + " left");
  const lock = await Deno.open(dataRootLockPath, { write: true });
  try {
    if (!(await lock.tryLock(true))) throw new Error(dataRootLockPath + " still locked");
  } finally {
    lock.close();
  }
  console.log("daemon stopped, lock free");
});
`,
    );
    // Killed with its daemon (its process group) after 5 minutes, should the watchdog not
    // work.
    const out = await runUnderWatchdog(`${dir}/docker_hang_test.ts`, {
      WARREN_TEST_TIMEOUT_S: "2",
      WARREN_DOCKER_DATA_ROOT: dataRoot,
    }, 300_000);
    const text = out.text;
    assert(!out.killed, `the hung run was killed after 300 s:\n${text}`);
    assertMatch(text, /daemon \d+ up/);
    assertMatch(text, /test "hangs holding a daemon" did not finish in 2 s/);
    assert(!text.includes("cleanup failed"), text);
    assertMatch(text, /daemon stopped, lock free/);
    assertMatch(text, /runs after it \.\.\. ok/);
  } finally {
    // Its daemon was killed with it should the run have failed.
    await removeDataRoot(dataRoot);
    await Deno.remove(dir, { recursive: true });
  }
});
