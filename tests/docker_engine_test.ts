/**
 * tests/_docker.ts's own daemon: two runs on one machine (two suites) never share one, so
 * neither stops the other's. Real dockerd processes on a data root of their own (empty: no
 * image is built), each started by a `deno run` of its own, as two suites would.
 */
import { assert, assertEquals } from "./_assert.ts";
import { daemonsOn, dockerSkipReason, removeDataRoot } from "./_docker.ts";
import { within } from "./_util.ts";

const skip = dockerSkipReason();
const dockerModule = new URL("./_docker.ts", import.meta.url).href;

/** How long a daemon of the test may take to start, or to stop (vfs on a busy box is slow). */
const stepTimeoutMs = 180_000;

/**
 * Starts its daemon (`startDocker`), says `up <pid>`, and on each line of stdin: `check` says
 * whether its daemon still answers (`answering`), `stop` stops it and says `stopped`. With
 * the argument `leave`, it exits at once instead, leaving its daemon running (a run that died).
 */
const userScript = `
import { dockerBin, startDocker } from ${JSON.stringify(dockerModule)};
const engine = await startDocker();
console.log("up", engine.pid);
if (Deno.args[0] === "leave") Deno.exit(0);
for await (const line of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
  if (line.includes("check")) {
    const { success } = await new Deno.Command(dockerBin, {
      args: ["version"], env: { DOCKER_HOST: engine.host }, stdout: "null", stderr: "null",
    }).output();
    console.log(success ? "answering" : "not answering");
  }
  if (line.includes("stop")) {
    await engine.stop();
    console.log("stopped");
    break;
  }
}
`;

/** A `deno run` of `userScript` (in a process group of its own, with its daemon). */
class User {
  readonly child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #reader: ReadableStreamDefaultReader<string>;
  out = "";

  constructor(
    readonly name: string,
    script: string,
    env: Record<string, string>,
    args: string[] = [],
  ) {
    this.child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", script, ...args],
      env,
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
      detached: true,
    }).spawn();
    this.#writer = this.child.stdin.getWriter();
    this.#reader = this.child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  }

  /** The first line matching `re` since the last one taken (bounded, named). */
  async line(re: RegExp): Promise<RegExpExecArray> {
    while (true) {
      const m = re.exec(this.out);
      if (m) {
        this.out = this.out.slice(m.index + m[0].length);
        return m;
      }
      const { value, done } = await within(
        this.#reader.read(),
        () => `${this.name} to print ${re}, got: ${this.out}`,
        stepTimeoutMs,
      );
      assert(!done, `${this.name} ended before printing ${re}: ${this.out}`);
      this.out += value;
    }
  }

  say(word: string): Promise<void> {
    return this.#writer.write(new TextEncoder().encode(word + "\n"));
  }

  /** Its exit status, once it ended by itself (bounded, named). */
  exited(): Promise<Deno.CommandStatus> {
    return within(this.child.status, `${this.name} to exit`, stepTimeoutMs);
  }

  /**
   * Kill its whole group (it and its daemon, should the test have failed), then free its pipes.
   */
  async kill(): Promise<void> {
    try {
      Deno.kill(-this.child.pid, "SIGKILL");
    } catch {
      // The group is gone already: the run and its daemon exited.
    }
    await this.child.status;
    await this.#writer.close().catch(() => {
      // Its stdin is closed already (it exited): nothing to flush.
    });
    await this.#reader.cancel();
  }
}

Deno.test({
  name:
    "docker engine: a second run on one data root waits for the first's daemon to stop, then starts its own; nothing is left running",
  ignore: skip !== undefined,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "warren-docker-engine-" });
  const dataRoot = `${dir}/data`;
  const script = `${dir}/user.ts`;
  await Deno.writeTextFile(script, userScript);
  const env = { WARREN_DOCKER_DATA_ROOT: dataRoot, NO_COLOR: "1" };
  const a = new User("run a", script, env);
  let b: User | undefined;
  try {
    const pidA = Number((await a.line(/up (\d+)\n/))[1]);
    b = new User("run b", script, env);
    // B finds A's lock and waits, A's daemon answering meanwhile (the old code had B use
    // A's daemon at once, and stop it when done).
    const holder = await b.line(/waiting for .*\.lock \(held by pid (\d+)\)/);
    assertEquals(Number(holder[1]), a.child.pid);
    await a.say("check");
    await a.line(/^answering\n/m);
    assertEquals(daemonsOn(dataRoot), [pidA]);
    await a.say("stop");
    await a.line(/^stopped\n/m);
    assertEquals((await a.exited()).code, 0);
    // Then B starts its own.
    const pidB = Number((await b.line(/up (\d+)\n/))[1]);
    assert(pidB !== pidA, `b uses a's daemon ${pidA}`);
    assertEquals(daemonsOn(dataRoot), [pidB]);
    await b.say("stop");
    await b.line(/^stopped\n/m);
    assertEquals((await b.exited()).code, 0);
    assertEquals(daemonsOn(dataRoot), []);
  } finally {
    await a.kill();
    await b?.kill();
    // Killed with their runs, should the test have failed.
    await removeDataRoot(dataRoot);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "docker engine: a daemon left on the data root by a run that died is stopped by the next run, which starts its own",
  ignore: skip !== undefined,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "warren-docker-engine-" });
  const dataRoot = `${dir}/data`;
  const script = `${dir}/user.ts`;
  await Deno.writeTextFile(script, userScript);
  const env = { WARREN_DOCKER_DATA_ROOT: dataRoot, NO_COLOR: "1" };
  const gone = new User("run that dies", script, env, ["leave"]);
  let next: User | undefined;
  try {
    const left = Number((await gone.line(/up (\d+)\n/))[1]);
    assertEquals((await gone.exited()).code, 0);
    assertEquals(daemonsOn(dataRoot), [left], "the run's daemon outlives it");
    // The old code had the next run use it (and stop it when done, or not at all when another
    // run started it); a daemon on the data root keeps any other from opening it.
    next = new User("next run", script, env);
    assertEquals(Number((await next.line(/stopping dockerd (\d+), left on /))[1]), left);
    const own = Number((await next.line(/up (\d+)\n/))[1]);
    assert(own !== left, `the next run uses the left daemon ${left}`);
    assertEquals(daemonsOn(dataRoot), [own]);
    await next.say("stop");
    await next.line(/^stopped\n/m);
    assertEquals((await next.exited()).code, 0);
    assertEquals(daemonsOn(dataRoot), []);
  } finally {
    await gone.kill();
    await next?.kill();
    await removeDataRoot(dataRoot);
    await Deno.remove(dir, { recursive: true });
  }
});
