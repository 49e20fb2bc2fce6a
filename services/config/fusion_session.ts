/**
 * The session flags fusion-client and fusion-server share (both ends must agree on the
 * window; each end schedules its own direction), and the session options they make.
 * @module
 */

import type { FlagDefs } from "../../lib/config/mod.ts";
import { type SchedulerName, schedulerNames } from "../../lib/sequencer/mod.ts";

/** Flag definitions; `silenceHelp` says what this end does with a silent path. */
export function fusionSessionFlags(silenceHelp: string) {
  return {
    scheduler: {
      kind: "choice",
      choices: schedulerNames,
      arg: schedulerNames.join("|"),
      default: "weighted",
      help: "how this end spreads its frames over the paths",
    },
    "window-mib": {
      kind: "int",
      min: 1,
      max: 1024,
      arg: "MiB",
      default: "16",
      help: "bytes in flight per direction and session (same on both ends)",
    },
    "silence-timeout": {
      kind: "duration",
      min: 100,
      default: "3s",
      aliases: ["silence-timeout-ms"],
      help: silenceHelp,
    },
    "nack-gap": {
      kind: "int",
      min: 1,
      arg: "frames",
      default: "10",
      help: "a hole with this many frames received beyond it is NACKed (or after 300 ms)",
    },
    grace: {
      kind: "duration",
      default: "30s",
      aliases: ["grace-ms"],
      help: "a session with no path for this long ends",
    },
  } as const satisfies FlagDefs;
}

/** The session options both fusion ends take from these flags. */
export interface FusionSessionOptions {
  scheduler: SchedulerName;
  windowBytes: number;
  silenceTimeoutMs: number;
  heartbeatIntervalMs: number;
  graceMs: number;
  nackGapFrames: number;
}

/** Session options from the parsed flags (already range-checked). */
export function fusionSessionOptions(f: {
  scheduler: SchedulerName;
  "window-mib": number;
  "silence-timeout": number;
  "nack-gap": number;
  grace: number;
}): FusionSessionOptions {
  const silenceTimeoutMs = f["silence-timeout"];
  return {
    scheduler: f.scheduler,
    windowBytes: f["window-mib"] * 1024 * 1024,
    silenceTimeoutMs,
    // Heartbeats several times per silence timeout, so one lost beat never drops a path.
    heartbeatIntervalMs: Math.max(20, Math.min(250, Math.floor(silenceTimeoutMs / 4))),
    graceMs: f.grace,
    nackGapFrames: f["nack-gap"],
  };
}
