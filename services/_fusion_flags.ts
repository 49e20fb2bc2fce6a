/**
 * The session flags fusion-client and fusion-server share (both ends must agree on the
 * window; each end schedules its own direction), and their validation into session options.
 * @module
 */

import { fail, type FlagDef, intFlag } from "../lib/cli.ts";
import { type SchedulerName, schedulerNames } from "../lib/sequencer/mod.ts";

/** Flag definitions; `silenceHelp` says what this end does with a silent path. */
export function fusionSessionFlags(silenceHelp: string) {
  return {
    scheduler: {
      type: "string",
      arg: schedulerNames.join("|"),
      default: "weighted",
      help: "how this end spreads its frames over the paths",
    },
    "window-mib": {
      type: "string",
      arg: "MiB",
      default: "16",
      help: "bytes in flight per direction and session (same on both ends)",
    },
    "silence-timeout-ms": { type: "string", arg: "ms", default: "3000", help: silenceHelp },
    "nack-gap": {
      type: "string",
      arg: "frames",
      default: "10",
      help: "a hole with this many frames received beyond it is NACKed (or after 300 ms)",
    },
    "grace-ms": {
      type: "string",
      arg: "ms",
      default: "30000",
      help: "a session with no path for this long ends",
    },
  } as const satisfies Record<string, FlagDef>;
}

/** Session options from the parsed flags; exits 2 with one line on a bad value. */
export function fusionSessionOptions(flags: {
  scheduler: string | undefined;
  "window-mib": string | undefined;
  "silence-timeout-ms": string | undefined;
  "nack-gap": string | undefined;
  "grace-ms": string | undefined;
}): {
  scheduler: SchedulerName;
  windowBytes: number;
  silenceTimeoutMs: number;
  heartbeatIntervalMs: number;
  graceMs: number;
  nackGapFrames: number;
} {
  const scheduler = flags.scheduler as SchedulerName;
  if (!schedulerNames.includes(scheduler)) {
    fail(`--scheduler must be one of ${schedulerNames.join(", ")}`, 2);
  }
  const windowMiB = intFlag("window-mib", flags["window-mib"], 16);
  if (windowMiB < 1 || windowMiB > 1024) fail("--window-mib must be between 1 and 1024", 2);
  const silenceTimeoutMs = intFlag("silence-timeout-ms", flags["silence-timeout-ms"], 3000);
  if (silenceTimeoutMs < 100) fail("--silence-timeout-ms must be at least 100", 2);
  const nackGapFrames = intFlag("nack-gap", flags["nack-gap"], 10);
  if (nackGapFrames < 1) fail("--nack-gap must be at least 1", 2);
  return {
    scheduler,
    windowBytes: windowMiB * 1024 * 1024,
    silenceTimeoutMs,
    // Heartbeats several times per silence timeout, so one lost beat never drops a path.
    heartbeatIntervalMs: Math.max(20, Math.min(250, Math.floor(silenceTimeoutMs / 4))),
    graceMs: intFlag("grace-ms", flags["grace-ms"], 30_000),
    nackGapFrames,
  };
}
