/**
 * Leases in Redis held by one instance of a cluster (issue 19), shared by tunnel-server's
 * registry and depot-server's cluster. A lease is a key whose JSON value names the holding
 * `instance`; the holder writes it outright when the client (or exit) connects to it, and its
 * heartbeat then only refreshes it while it is still its own. Without that check two
 * instances holding a connection under the same name (the client reconnected elsewhere
 * while its old session had not timed out yet) would each rewrite the lease every heartbeat
 * and the holder would flip between them on every beat.
 * @module
 */

/** What {@linkcode refreshLease} did. */
export type LeaseRefresh =
  /** Another instance holds the lease: left alone. */
  | "not-ours"
  /** Ours: its lifetime starts again. */
  | "refreshed"
  /** Gone (expired, or Redis restarted empty): written back as ours. */
  | "written-back";

/** The part of a Redis client {@linkcode refreshLease} needs (@redis/client's `eval`). */
export interface LeaseClient {
  eval(script: string, options: { keys: string[]; arguments: string[] }): Promise<unknown>;
}

// Atomic check-and-set: 1 refreshed, 2 written back, 0 not ours (then, with a standby hash
// KEYS[2], the instance's entry there is written and the hash lives another lease).
const refreshScript = `local cur = redis.call('GET', KEYS[1])
if cur and cjson.decode(cur).instance ~= ARGV[3] then
  if KEYS[2] then
    redis.call('HSET', KEYS[2], ARGV[3], ARGV[1])
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
  end
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if cur then return 1 end
return 2`;

/**
 * Refresh the lease `key` with `value` (JSON whose `instance` is `instance`) for `leaseMs`,
 * only if no other instance holds it; one atomic script, so no other writer slips in between.
 * With `standbyKey` (a hash: instance -> value), an instance finding the lease another's notes
 * there, in the same script, that it stands by for it (for a lease's lifetime), so standing
 * by costs a beat no more commands than holding.
 */
export async function refreshLease(
  client: LeaseClient,
  key: string,
  value: string,
  leaseMs: number,
  instance: string,
  standbyKey?: string,
): Promise<LeaseRefresh> {
  const n = Number(
    await client.eval(refreshScript, {
      keys: standbyKey === undefined ? [key] : [key, standbyKey],
      arguments: [value, String(leaseMs), instance],
    }),
  );
  return n === 0 ? "not-ours" : n === 1 ? "refreshed" : "written-back";
}
