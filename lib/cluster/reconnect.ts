/**
 * The Redis client of both clusters (the tunnel registry and depot's), and its reconnects.
 *
 * node-redis waits between reconnect attempts on a timer of its own that nothing cancels: a
 * client closed during that wait leaves the timer running, up to the longest delay, after its
 * owner's close() returned (a test's sanitizer sees it leak into the next test; a service's
 * event loop stays alive for it). {@linkcode ReconnectPauses} notes when each wait its
 * strategy asks for ends, so close() can outlast them.
 * @module
 */

// deno-lint-ignore no-import-prefix
import type { createClient } from "npm:@redis/client@6.3.1";

/** Slack for the library's timer, started just after the strategy returned its delay. */
const pauseSlackMs = 50;

/** The reconnect strategy of a node-redis client: a delay in ms, or what ends the retries. */
export type ReconnectStrategy<E> = (retries: number, cause: Error) => number | E;

/**
 * The waits between reconnect attempts of one or more clients (a client and its duplicates
 * share the strategy): {@linkcode settled} resolves once every wait asked for so far is over.
 */
export class ReconnectPauses {
  /** When the last wait asked for ends (performance.now() time). */
  #until = 0;

  /** `strategy`, noting the end of each wait it asks for. */
  wrap<E>(strategy: ReconnectStrategy<E>): ReconnectStrategy<E> {
    return (retries, cause) => {
      const delay = strategy(retries, cause);
      if (typeof delay === "number") {
        this.#until = Math.max(this.#until, performance.now() + delay);
      }
      return delay;
    };
  }

  /**
   * Resolves once the waits asked for so far are over (at once when none is): call it after
   * closing the clients, whose next attempt then ends without starting another wait.
   */
  async settled(): Promise<void> {
    const leftMs = this.#until + pauseSlackMs - performance.now();
    if (leftMs > 0) await new Promise((r) => setTimeout(r, leftMs));
  }
}

/** Connect attempts at start before giving up (later outages retry forever). */
const startAttempts = 3;

/** Bounds of {@linkcode newRedisClient}'s connects and reconnects. */
export interface RedisClientLimits {
  /** How long one connect attempt may take. */
  connectTimeoutMs: number;
  /** The longest wait between reconnect attempts (they start at 50 ms and double). */
  maxReconnectDelayMs: number;
}

/**
 * A Redis client that retries forever once it has been `connected()`, and gives up after 3
 * attempts before (so a start without Redis fails, in a line); its waits between attempts
 * (and its duplicates') are noted in `pauses`. The client library is loaded here, on the first
 * call: a service without a cluster never carries its ~7 MB of heap (issue 20: a larger heap
 * makes each of the full GCs that per-connection buffers set off dearer).
 */
export async function newRedisClient(
  url: string,
  connected: () => boolean,
  pauses: ReconnectPauses,
  limits: RedisClientLimits,
): Promise<RedisClient> {
  // deno-lint-ignore no-import-prefix
  const { createClient } = await import("npm:@redis/client@6.3.1");
  return createClient({
    url,
    disableOfflineQueue: true,
    socket: {
      connectTimeout: limits.connectTimeoutMs,
      reconnectStrategy: pauses.wrap((retries: number, cause: Error) =>
        !connected() && retries >= startAttempts
          ? cause
          : Math.min(50 * 2 ** Math.min(retries, 10), limits.maxReconnectDelayMs)
      ),
    },
  });
}

/** A client made by {@linkcode newRedisClient}. */
export type RedisClient = ReturnType<typeof createClient>;
