/**
 * deploy/cluster/compose.yaml on a real engine (issue 19): redis, two tunnel-servers sharing
 * it, haproxy in front (the public port), one tunnel-client and the demo app. Requests from
 * the host through haproxy reach both instances (the one not holding the client hands them
 * over its link); then the instance holding the client is killed (SIGKILL) and requests
 * recover once the client has moved to the other one; every answer that arrives is the right
 * one. Images are built offline (tests/_docker.ts: the debootstrap base, Debian's
 * redis-server and haproxy); the stack is always brought down, a daemon started here stopped.
 */

import { assert, assertEquals } from "./_assert.ts";
import { run } from "./_util.ts";
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
  ensureExtrasImage,
  extrasImage,
  must,
  slowTest,
} from "./_docker.ts";

const skip = dockerSkipReason();
if (skip) console.log(`docker_cluster_test: skipped: ${skip}`);

const repoRoot = new URL("..", import.meta.url).pathname;
const composeFile = `${repoRoot}deploy/cluster/compose.yaml`;
/** The same tag as docker_stack_test: a second build reuses every layer. */
const image = "warren-test:stack";
/** How long the stack may take to become healthy (busy 2-core box). */
const healthyTimeoutMs = 240_000;
/**
 * How long requests may fail after the kill (haproxy's check, the client's reconnect): a
 * hang's bound, the recovery time actually taken is printed.
 */
const recoverTimeoutMs = 180_000;
/** Consecutive successes that count as recovered. */
const recoveredStreak = 20;
const answer = "hello from the warren demo app (host hello.warren.test)\n";

function hex(bytes: number): string {
  return [...crypto.getRandomValues(new Uint8Array(bytes))]
    .map((b) => b.toString(16).padStart(2, "0")).join("");
}

function progress(msg: string): void {
  console.log(`  docker cluster: ${msg}`);
}

async function clusterTest(): Promise<void> {
  const t0 = Date.now();
  const tmp = await Deno.makeTempDir({ prefix: "warren-docker-cluster-" });
  const engine = await ensureDocker();
  const env = { DOCKER_HOST: engine.host, DOCKER_BUILDKIT: "0" };
  const project = `warren-cluster-${hex(4)}`;
  const compose = ["--ansi", "never", "--project-name", project, "--file", composeFile];
  let cenv: Record<string, string> | undefined;
  let ok = false;
  // The stack down and the daemon stopped: by the finally below, or by the watchdog should the
  // test hang (its finally would never run).
  let cleaned: Promise<void> | undefined;
  const cleanUp = () =>
    cleaned ??= (async () => {
      if (cenv) {
        if (!ok) {
          const l = await run(composeBin, [...compose, "logs", "--no-color", "--tail=30"], {
            env: cenv,
            timeoutMs: dockerCommandTimeoutMs,
          });
          console.error(`compose logs of ${project}:\n${l.stdout}${l.stderr}`);
        }
        const down = await run(
          composeBin,
          [...compose, "down", "--volumes", "--remove-orphans", "--timeout", "5"],
          { env: cenv, timeoutMs: dockerCommandTimeoutMs },
        );
        if (down.code !== 0) console.error(`compose down failed: ${down.stderr}`);
      }
      await engine.stop();
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    })();
  const unregister = cleanUpOnTimeout(cleanUp);
  try {
    const base = await ensureBaseImage(env, tmp, progress);
    await buildWarrenImage(env, base.ref, image);
    // With an offline base, Redis and haproxy come from Debian too; a given base (a
    // registry) lets compose pull the official images.
    const extras: Record<string, string> = {};
    if (base.how !== "given") {
      await ensureExtrasImage(env, tmp);
      extras.WARREN_REDIS_IMAGE = extras.WARREN_HAPROXY_IMAGE = extrasImage;
    }
    progress(`images ready after ${((Date.now() - t0) / 1000).toFixed(1)}s`);
    cenv = {
      ...env,
      PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
      WARREN_IMAGE: image,
      WARREN_CLUSTER_PORT: "", // an ephemeral host port
      WARREN_HEALTH_INTERVAL: "2s",
      TUNNEL_IDENTIFIER: hex(32),
      TUNNEL_CLUSTER_TOKEN: hex(32),
      TUNNEL_REDIS_PASSWORD: hex(32),
      ...extras,
    };
    await must(composeBin, [...compose, "up", "--detach", "--no-build"], cenv);
    const ps = async (svc: string) =>
      (await must(composeBin, [...compose, "ps", "-q", svc], cenv))
        .trim();
    const health = async (svc: string) =>
      (await run(dockerBin, ["inspect", "--format", "{{.State.Health.Status}}", await ps(svc)], {
        env,
      })).stdout.trim();
    const deadline = Date.now() + healthyTimeoutMs;
    while ((await health("tunnel-client")) !== "healthy") {
      assert(Date.now() < deadline, "the tunnel-client never connected");
      await new Promise((r) => setTimeout(r, 1_000));
    }
    progress(`stack up, client connected after ${((Date.now() - t0) / 1000).toFixed(1)}s`);
    const addr = (await must(composeBin, [...compose, "port", "haproxy", "8080"], cenv)).trim()
      .replace(/^0\.0\.0\.0:/, "127.0.0.1:");
    const get = async (): Promise<string> => {
      const r = await run("curl", [
        "-sS",
        "--max-time",
        "10",
        "-o",
        "-",
        "-w",
        " %{http_code}",
        "-H",
        "Host: hello.warren.test",
        `http://${addr}/hello`,
      ]);
      return r.code === 0 ? r.stdout : `curl ${r.code}`;
    };

    // Through haproxy (round robin over connections): both instances answer, byte-exact.
    for (let i = 0; i < 10; i++) assertEquals(await get(), `${answer} 200`);
    const logs = async (
      svc: string,
    ) => (await must(composeBin, [...compose, "logs", "--no-color", svc], cenv));
    const holder = (await logs("tunnel-a")).includes('msg="client connected"')
      ? "tunnel-a"
      : "tunnel-b";
    const other = holder === "tunnel-a" ? "tunnel-b" : "tunnel-a";
    assert((await logs(other)).includes('msg="cluster link up"'), `${other} handed requests over`);

    // Kill the holder; requests fail only until haproxy and the client have moved on.
    await must(composeBin, [...compose, "kill", "-s", "SIGKILL", holder], cenv);
    const killedAt = Date.now();
    let failed = 0, streak = 0;
    const seen = new Set<string>();
    while (streak < recoveredStreak) {
      assert(Date.now() - killedAt < recoverTimeoutMs, `no recovery: ${[...seen].join(", ")}`);
      const r = await get();
      if (r === `${answer} 200`) {
        streak++;
        continue;
      }
      // A wrong body with 200 would be a mixed-up response: never acceptable.
      assert(!r.endsWith(" 200"), `wrong answer: ${r}`);
      seen.add(r.replace(/^[^]*(\d{3})$/, "$1"));
      failed++;
      streak = 0;
    }
    console.log(
      `  docker cluster: kill -9 ${holder}: ${failed} failed (${[...seen].join(", ") || "-"}), ` +
        `recovered in ${((Date.now() - killedAt) / 1000).toFixed(1)}s`,
    );
    assert((await logs(other)).includes('msg="client connected"'), `the client moved to ${other}`);
    ok = true;
  } finally {
    await cleanUp();
    unregister();
    console.log(`  docker cluster: total ${((Date.now() - t0) / 1000).toFixed(1)}s`);
  }
}

Deno.test({
  name:
    "docker cluster: redis, two tunnel-servers behind haproxy; kill the holder, requests recover",
  ignore: skip !== undefined,
}, slowTest(dockerTestTimeoutMs, clusterTest));
