/**
 * `FlowTable`: the per-peer state of a UDP relay (a "flow" is one peer's association with
 * its upstream socket or destination), bounded three ways -- flows expire after an idle
 * timeout, at most `maxFlows` are held (at the bound the least recently active one is closed
 * for a newcomer, and counted: a flood of new peers churns the table instead of locking out
 * the peers that keep talking), and the bytes handed to the kernel but not yet sent are
 * capped (`reserve`/`release`).
 * @module
 */

import type { UdpDrops } from "./drops.ts";
import { liveFlowSources, udpLabels, type UdpRelayName } from "./metrics.ts";

/** Default time a flow lives without a datagram either way: 60 s (like conntrack's UDP). */
export const defaultUdpIdleTimeoutMs = 60_000;
/** Default bound on flows one table holds. */
export const defaultMaxUdpFlows = 1024;
/** Default bound on bytes queued for sending across one table's flows: 4 MiB. */
export const defaultMaxUdpQueuedBytes = 4 * 1024 * 1024;

/** The bounds of a {@linkcode FlowTable}. */
export interface FlowLimits {
  /** A flow without traffic for this long is closed; 0 = never. @default 60000 */
  idleTimeoutMs?: number;
  /** Flows held at once. @default 1024 */
  maxFlows?: number;
  /** Bytes waiting to be sent, across flows. @default 4 MiB */
  maxQueuedBytes?: number;
}

/** What a flow must offer the table: a way to release it. */
export interface Flow {
  close(): void;
  /**
   * Release it at once to make room for a newcomer (a carrier that ends gracefully on
   * `close()` cuts instead); `close()` when absent.
   */
  evict?(): void;
}

interface Entry<F> {
  flow: F;
  lastActiveMs: number;
}

/** Bounded, idle-expiring flows by key (a peer's `ip:port`). */
export class FlowTable<F extends Flow> {
  readonly idleTimeoutMs: number;
  readonly maxFlows: number;
  readonly maxQueuedBytes: number;
  readonly #flows = new Map<string, Entry<F>>();
  readonly #timer?: ReturnType<typeof setInterval>;
  #queuedBytes = 0;
  /** Flows opened so far. */
  opened = 0;
  /** Flows closed by the idle timeout so far. */
  expired = 0;
  /** Flows closed to make room for a new one at the bound so far. */
  evicted = 0;
  /** Most flows held at once. */
  peak = 0;
  /** This table in the flows gauge (when its drops name a relay). */
  readonly #gauged?: { relay: UdpRelayName; listener?: string; readonly size: number };

  constructor(limits: FlowLimits, readonly drops: UdpDrops) {
    this.idleTimeoutMs = limits.idleTimeoutMs ?? defaultUdpIdleTimeoutMs;
    this.maxFlows = limits.maxFlows ?? defaultMaxUdpFlows;
    this.maxQueuedBytes = limits.maxQueuedBytes ?? defaultMaxUdpQueuedBytes;
    if (this.idleTimeoutMs > 0) {
      // Swept at a quarter of the timeout (within 250 ms - 5 s): a flow outlives its timeout
      // by at most that much.
      const everyMs = Math.min(5_000, Math.max(250, this.idleTimeoutMs / 4));
      const timer = setInterval(() => this.sweep(), everyMs);
      Deno.unrefTimer(timer);
      this.#timer = timer;
    }
    if (drops.relay) {
      const flows = this.#flows;
      this.#gauged = {
        ...udpLabels(drops.relay, drops.listener),
        get size() {
          return flows.size;
        },
      };
      liveFlowSources.add(this.#gauged);
    }
  }

  /** Flows held now. */
  get size(): number {
    return this.#flows.size;
  }

  /** Bytes reserved and not yet released. */
  get queuedBytes(): number {
    return this.#queuedBytes;
  }

  /** The flow of `key`, marked active; undefined when there is none. */
  get(key: string): F | undefined {
    const e = this.#flows.get(key);
    if (!e) return undefined;
    this.#markActive(key, e);
    return e.flow;
  }

  /** The flow of `key` without marking it active; undefined when there is none. */
  peek(key: string): F | undefined {
    return this.#flows.get(key)?.flow;
  }

  /** Map order is activity order (oldest first): re-inserting keeps eviction O(1). */
  #markActive(key: string, e: Entry<F>): void {
    e.lastActiveMs = performance.now();
    this.#flows.delete(key);
    this.#flows.set(key, e);
  }

  /**
   * Whether `opening` flows may be set up beside the held ones (flows whose sockets are still
   * binding, which eviction cannot reclaim): false, counted as "flow-limit", when `opening`
   * alone reaches the bound.
   */
  canOpen(key: string, opening: number): boolean {
    if (opening < this.maxFlows) return true;
    this.drops.drop("flow-limit", `${opening} flows being opened; new flow from ${key}`);
    return false;
  }

  /**
   * The flow of `key`, opened with `open` when there is none. At the bound, idle flows are
   * swept, then the least recently active flow is closed to make room (`evicted`).
   */
  getOrOpen(key: string, open: () => F): F {
    const had = this.get(key);
    if (had) return had;
    if (this.#flows.size >= this.maxFlows) this.sweep();
    if (this.#flows.size >= this.maxFlows) {
      const [oldest, e] = this.#flows.entries().next().value!;
      this.#flows.delete(oldest);
      if (e.flow.evict) e.flow.evict();
      else e.flow.close();
      this.evicted++;
    }
    const flow = open();
    this.#flows.set(key, { flow, lastActiveMs: performance.now() });
    this.opened++;
    this.peak = Math.max(this.peak, this.#flows.size);
    return flow;
  }

  /** Mark `key` active (traffic in the other direction). */
  touch(key: string): void {
    const e = this.#flows.get(key);
    if (e) this.#markActive(key, e);
  }

  /** Close and forget the flow of `key`. */
  delete(key: string): void {
    const e = this.#flows.get(key);
    if (!e) return;
    this.#flows.delete(key);
    e.flow.close();
  }

  /**
   * Reserve `n` bytes of the send queue; false (and a "queue-full" drop counted) when that
   * would pass `maxQueuedBytes`. Call `release(n)` once the send settles.
   */
  reserve(n: number): boolean {
    if (this.#queuedBytes + n > this.maxQueuedBytes) {
      this.drops.drop("queue-full", `${this.#queuedBytes} bytes queued`);
      return false;
    }
    this.#queuedBytes += n;
    return true;
  }

  /** Give back bytes reserved with `reserve`. */
  release(n: number): void {
    this.#queuedBytes = Math.max(0, this.#queuedBytes - n);
  }

  /** Close flows idle for the timeout; returns how many. */
  sweep(now: number = performance.now()): number {
    if (this.idleTimeoutMs <= 0) return 0;
    let n = 0;
    // Oldest first: the first flow still active ends the sweep.
    for (const [key, e] of this.#flows) {
      if (now - e.lastActiveMs < this.idleTimeoutMs) break;
      this.#flows.delete(key);
      e.flow.close();
      n++;
    }
    this.expired += n;
    return n;
  }

  /** Close every flow, stop the sweep timer and leave the flows gauge. */
  close(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    if (this.#gauged) liveFlowSources.delete(this.#gauged);
    for (const e of this.#flows.values()) e.flow.close();
    this.#flows.clear();
  }
}
