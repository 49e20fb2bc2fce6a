/**
 * lib/net `AcceptRetry`, what every accept loop does after a failed accept (EMFILE): with fds
 * hovering at the limit (a failure, an accept, a failure …) it warns once per
 * `acceptWarnIntervalMs` and says once when the warned streak ended, instead of two lines per
 * accepted connection (the pause after each failure is checked on running services in
 * fd_limit_test).
 */

import { assert, assertEquals } from "./_assert.ts";
import { Logger } from "../lib/log.ts";
import { AcceptRetry } from "../lib/net/mod.ts";

const emfile = Object.assign(new Error("Too many open files (os error 24)"), { code: "EMFILE" });

Deno.test("accept retry: fds hovering at the limit cost one warning and one 'accepting again', not two lines per accept", async () => {
  const lines: string[] = [];
  const retry = new AcceptRetry(new Logger("debug", {}, (l) => void lines.push(l)));
  const rounds = 10;
  for (let i = 0; i < rounds; i++) {
    await retry.failed(emfile);
    if (i === 0) await retry.failed(emfile); // the first streak: two failures
    retry.accepted();
  }
  const warned = lines.filter((l) => /level=warn msg="accept failed, retrying"/.test(l));
  const again = lines.filter((l) => /msg="accepting again"/.test(l));
  assertEquals([warned.length, again.length], [1, 1], lines.join("\n"));
  assert(warned[0].includes("Too many open files"), warned[0]);
  assert(again[0].includes("failedAccepts=2"), again[0]);
  assertEquals(lines.length, 2, lines.join("\n"));
});

Deno.test("accept retry: a long streak starting soon after a warned one is warned once the interval has passed", async () => {
  const lines: string[] = [];
  const warnIntervalMs = 200;
  const retry = new AcceptRetry(new Logger("debug", {}, (l) => void lines.push(l)), warnIntervalMs);
  const warned = () => lines.filter((l) => /msg="accept failed, retrying"/.test(l)).length;
  await retry.failed(emfile);
  retry.accepted(); // a blip: warned, and its end said
  // fds short for good from now on (within the interval of that warning): still warned,
  // once, when the interval has passed; not silent for as long as the streak lasts.
  const t0 = performance.now();
  while (performance.now() - t0 <= warnIntervalMs) await retry.failed(emfile);
  await retry.failed(emfile);
  await retry.failed(emfile);
  assertEquals(warned(), 2, lines.join("\n"));
  retry.accepted();
  assert(/msg="accepting again" failedAccepts=\d+/.test(lines.at(-1) ?? ""), lines.join("\n"));
});
