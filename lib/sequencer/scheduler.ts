/**
 * Schedulers pick the path for the next frame. All of them respect each path's in-flight
 * cap: a path takes a frame only while its unacknowledged bytes are under its cap (near its
 * bandwidth-delay product), so no path queues more than it can deliver in about one RTT
 * and a slow path cannot hold the reorder buffer hostage.
 * @module
 */

/** What a scheduler sees of one live path. */
export interface PathView {
  /** Path id. */
  id: number;
  /** Bytes assigned to the path and not yet acknowledged by the peer on it. */
  inflightBytes: number;
  /** The most the path may have in flight. */
  capBytes: number;
  /** Measured delivery rate (windowed max), bytes per second; 0 while unknown. */
  rateBytesPerSec: number;
  /** Lowest ack round trip seen, ms; 0 while unknown. */
  minRttMs: number;
}

/** Picks a path for one frame. */
export interface Scheduler {
  /** Which scheduler this is. */
  readonly name: SchedulerName;
  /** Index into `paths` of the path to send on, or -1 to wait (no path has room). */
  pick(paths: readonly PathView[], frameBytes: number): number;
}

/** The schedulers selectable by flag. */
export type SchedulerName = "rr" | "random" | "weighted";
/** Every scheduler name. */
export const schedulerNames: readonly SchedulerName[] = ["rr", "random", "weighted"];

/** Whether `p` may take a frame of `frameBytes` now (an idle path always may). */
export function hasRoom(p: PathView, frameBytes: number): boolean {
  return p.inflightBytes === 0 || p.inflightBytes + frameBytes <= p.capBytes;
}

/** Round-robin over the paths that have room, in turn. */
export class RoundRobinScheduler implements Scheduler {
  /** Name for flags and logs. */
  readonly name = "rr";
  #lastId = -1;
  pick(paths: readonly PathView[], frameBytes: number): number {
    if (paths.length === 0) return -1;
    // Start after the path used last (by id, so joins and deaths do not reset the turn).
    let start = paths.findIndex((p) => p.id > this.#lastId);
    if (start < 0) start = 0;
    for (let k = 0; k < paths.length; k++) {
      const i = (start + k) % paths.length;
      if (hasRoom(paths[i], frameBytes)) {
        this.#lastId = paths[i].id;
        return i;
      }
    }
    return -1;
  }
}

/** Uniformly random among the paths that have room. */
export class RandomScheduler implements Scheduler {
  /** Name for flags and logs. */
  readonly name = "random";
  /** `random` in [0, 1): injectable for deterministic tests. */
  constructor(private readonly random: () => number = Math.random) {}
  pick(paths: readonly PathView[], frameBytes: number): number {
    const ok: number[] = [];
    for (let i = 0; i < paths.length; i++) if (hasRoom(paths[i], frameBytes)) ok.push(i);
    if (ok.length === 0) return -1;
    return ok[Math.min(ok.length - 1, Math.floor(this.random() * ok.length))];
  }
}

/**
 * Earliest expected completion among the paths with room (the idea of ECF/BLEST in MPTCP):
 * a frame sent on path p arrives after about `(inflight + frame) / rate + minRtt / 2`.
 * Since every cap scales with its path's rate, each path keeps taking frames in proportion
 * to its delivery rate, like mud's rate-weighted choice, but without randomness.
 */
export class WeightedScheduler implements Scheduler {
  /** Name for flags and logs. */
  readonly name = "weighted";
  pick(paths: readonly PathView[], frameBytes: number): number {
    let best = -1;
    let bestT = Infinity;
    for (let i = 0; i < paths.length; i++) {
      const p = paths[i];
      if (!hasRoom(p, frameBytes)) continue;
      // Unknown rate: assume a modest one so a new path gets probed, not flooded.
      const rate = p.rateBytesPerSec > 0 ? p.rateBytesPerSec : 1_000_000;
      const t = (p.inflightBytes + frameBytes) / rate * 1000 + p.minRttMs / 2;
      if (t < bestT) {
        bestT = t;
        best = i;
      }
    }
    return best;
  }
}

/** A scheduler by name. */
export function makeScheduler(name: SchedulerName): Scheduler {
  switch (name) {
    case "rr":
      return new RoundRobinScheduler();
    case "random":
      return new RandomScheduler();
    case "weighted":
      return new WeightedScheduler();
  }
}
