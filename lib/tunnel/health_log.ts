/**
 * A bounded log of one health check's transitions: the server's of one client ("client
 * unhealthy: out of rotation", "client healthy: in rotation") and the tunnel-client's of its
 * own check ("health check failing: out of rotation", ...). A member whose check flaps, or a
 * client that sends `health` messages in a loop, must not fill either log. The first transitions of a window
 * are logged in full; further ones are counted and summed up in one line when the window
 * ends, and every window after that gets one summary line until a window passes without a
 * transition.
 * @module
 */

import type { LogFields, Logger } from "../log.ts";

/** Transition lines logged in full per client and window before they are summed up. */
export const healthLinesPerWindow = 4;
/** Length of a window: how often a flapping client's summary line is written. */
export const healthLogWindowMs = 60_000;

/** The texts of a {@linkcode HealthLog}'s lines: who logs them says whose health it is. */
export interface HealthLogLines {
  /** Back in rotation (info). */
  healthy: string;
  /** Out of rotation (warn). */
  unhealthy: string;
  /** The summary of the transitions held back in a window. */
  flapping: string;
}

/** The server's lines about one client (the default). */
export const serverHealthLines: HealthLogLines = {
  healthy: "client healthy: in rotation",
  unhealthy: "client unhealthy: out of rotation",
  flapping: "client health flapping: transitions not logged",
};

/** The tunnel-client's lines about its own local app's check. */
export const clientHealthLines: HealthLogLines = {
  healthy: "health check passes: in rotation",
  unhealthy: "health check failing: out of rotation",
  flapping: "health check flapping: transitions not logged",
};

/** Runs `fn` after `ms`; returns what cancels it (a timer by default). */
export type Schedule = (fn: () => void, ms: number) => () => void;

/** The default {@linkcode Schedule}: a timer. */
export const timerSchedule: Schedule = (fn, ms) => {
  const t = setTimeout(fn, ms);
  return () => clearTimeout(t);
};

/** Options of {@linkcode HealthLog}. */
export interface HealthLogOptions {
  /** @default healthLinesPerWindow */
  linesPerWindow?: number;
  /** @default healthLogWindowMs */
  windowMs?: number;
  /** Where the end of a window is scheduled. @default setTimeout */
  schedule?: Schedule;
  /** @default serverHealthLines */
  lines?: HealthLogLines;
}

/** The health transition lines of one client or check (see the module doc). */
export class HealthLog {
  readonly #log: Logger;
  readonly #linesPerWindow: number;
  readonly #windowMs: number;
  readonly #schedule: Schedule;
  readonly #lines: HealthLogLines;
  /** Cancels the end of the current window; undefined: no window is open. */
  #cancel: (() => void) | undefined;
  #logged = 0;
  #held = { out: 0, in: 0 };
  #last: { ok: boolean; fields: LogFields } | undefined;

  /** Lines for one client go to `log`. */
  constructor(log: Logger, opts: HealthLogOptions = {}) {
    this.#log = log;
    this.#linesPerWindow = opts.linesPerWindow ?? healthLinesPerWindow;
    this.#windowMs = opts.windowMs ?? healthLogWindowMs;
    this.#schedule = opts.schedule ?? timerSchedule;
    this.#lines = opts.lines ?? serverHealthLines;
  }

  /**
   * Whether transitions are being counted now rather than logged: lines that come with each
   * transition (the client's "health check failed") should be quiet too, or they flood the log
   * in the transitions' place.
   */
  get holding(): boolean {
    return this.#logged >= this.#linesPerWindow;
  }

  /** The client went in (`ok`) or out of rotation; `fields` describe it (error, members). */
  transition(ok: boolean, fields: LogFields): void {
    this.#cancel ??= this.#schedule(() => this.#windowEnd(), this.#windowMs);
    if (this.#logged < this.#linesPerWindow) {
      this.#logged++;
      if (ok) this.#log.info(this.#lines.healthy, fields);
      else this.#log.warn(this.#lines.unhealthy, fields);
      return;
    }
    if (ok) this.#held.in++;
    else this.#held.out++;
    this.#last = { ok, fields };
  }

  /** The client (or session) is gone: the transitions held back so far are summed up now. */
  close(): void {
    this.#cancel?.();
    this.#cancel = undefined;
    this.#summary();
  }

  #windowEnd(): void {
    this.#cancel = undefined;
    this.#logged = 0;
    if (!this.#summary()) return;
    // Still flapping: the next window gets its summary only.
    this.#logged = this.#linesPerWindow;
    this.#cancel = this.#schedule(() => this.#windowEnd(), this.#windowMs);
  }

  /** One line for the transitions held back, if any; whether there were. */
  #summary(): boolean {
    const last = this.#last;
    if (!last) return false;
    const { out, in: back } = this.#held;
    this.#held = { out: 0, in: 0 };
    this.#last = undefined;
    // Its state now is the last transition's; warn while it stays out of rotation.
    this.#log[last.ok ? "info" : "warn"](this.#lines.flapping, {
      out,
      in: back,
      healthy: last.ok,
      ...last.fields,
    });
    return true;
  }
}
