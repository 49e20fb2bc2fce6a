/**
 * The shedding rule of a full connection limit, shared by serve() and seaprox's connection
 * table: instead of refusing every newcomer while idle connections hold all the places (an
 * idle flood would starve everybody until the idle timeout), close the connection that moved
 * no byte for the longest time, if that is at least `shedIdleMs`.
 * @module
 */

/**
 * Default least idle time of a connection shed for a newcomer: as long as a client may take
 * for its handshake (serve's default), far below any relay idle timeout.
 */
export const defaultShedIdleMs = 10_000;

/**
 * The item idle longest among `items`, if it has been idle since `idleSinceMs` at least.
 * `activeMs` gives when an item last moved bytes, or undefined for an item that must not be
 * shed (another source's, one that cannot be closed). Of equally idle ones the first wins.
 */
export function longestIdle<T>(
  items: Iterable<T>,
  activeMs: (item: T) => number | undefined,
  idleSinceMs: number,
): T | undefined {
  let victim: T | undefined;
  let victimAt = Infinity;
  for (const item of items) {
    const at = activeMs(item);
    if (at !== undefined && at <= idleSinceMs && at < victimAt) {
      victimAt = at;
      victim = item;
    }
  }
  return victim;
}
