/** The per-test watchdog: a hung test fails with a report and its service processes die. */
import { assert, assertEquals, assertMatch } from "./_assert.ts";

const watchdog = new URL("./_watchdog.ts", import.meta.url).href;

Deno.test("watchdog: a hung test fails named, with its log and its child's, the child is killed and the next test runs", async () => {
  const dir = await Deno.makeTempDir();
  const pidFile = `${dir}/pid`;
  try {
    await Deno.writeTextFile(
      `${dir}/hang_test.ts`,
      `import { testLogger, watchChild } from ${JSON.stringify(watchdog)};
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
  await new Promise(() => {});
});
Deno.test("runs after it", () => {});
`,
    );
    // Killed after a minute, should the watchdog not work: this test must not hang either.
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["test", "-A", "--no-check", "--preload", watchdog, `${dir}/hang_test.ts`],
      env: { WARREN_TEST_TIMEOUT_S: "2", NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000),
    }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    assert(out.signal === null, `the hung run was killed after 60 s:\n${text}`);
    assert(out.code !== 0, text);
    assertMatch(text, /test "hangs forever" did not finish in 2 s/);
    assertMatch(text, /waiting for the thing that never comes.*step=7/);
    assertMatch(text, /service sleeper still running, its last lines:\s+child line one/);
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
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["test", "-A", "--no-check", "--preload", watchdog, `${dir}/slow_test.ts`],
      env: { WARREN_TEST_TIMEOUT_S: "1", NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000),
    }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    assert(out.signal === null, `the run was killed after 60 s:\n${text}`);
    assertMatch(text, /slow with its own limit \.\.\. ok/);
    assertMatch(text, /test "slow with the default limit" did not finish in 1 s/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
