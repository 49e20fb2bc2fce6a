/**
 * A group: the clients connected with one identifier at the same time (server policy
 * `duplicate: "balance"`), which share its hosts. The identifier is the group's credential:
 * a client can only join by presenting it, so no one joins someone else's host (as frp's
 * `group_key`, but with the one secret a host is registered to). Public requests are spread
 * over the members that are ready and healthy (their health check passes), round-robin or to
 * the one with the fewest streams in use; so are the connections and flows of a public TCP or
 * UDP port, over the members that serve it (port_tunnels.ts keeps one group per port).
 * @module
 */

import type { ClientConn } from "./client_conn.ts";

/** How a group spreads new tunnel streams over its members. */
export type BalancePolicy = "round-robin" | "least-streams";

/** Members a pick passes over (tried already, or refused what is asked). */
export type MemberSkip = { has(c: ClientConn): boolean };

/** The live clients of one identifier, in the order they connected. */
export class ClientGroup {
  /** Members, oldest first. */
  readonly members: ClientConn[] = [];
  #next = 0;

  /** The oldest member, if any (the registry's record of the group). */
  get first(): ClientConn | undefined {
    return this.members[0];
  }

  /** Add a member (last in order). */
  add(c: ClientConn): void {
    if (!this.members.includes(c)) this.members.push(c);
  }

  /** Remove a member; false if it was not one. */
  remove(c: ClientConn): boolean {
    const i = this.members.indexOf(c);
    if (i < 0) return false;
    this.members.splice(i, 1);
    return true;
  }

  /**
   * The member for the next stream: among those that can take one (ready, healthy, session
   * alive) and are not in `skip` (members that already failed this request), the next in
   * turn, or the one with the fewest busy streams (open ones but those idle in a front's pool,
   * see `ClientConn.busyStreams`; ties: the next in turn).
   */
  pick(policy: BalancePolicy, skip?: MemberSkip): ClientConn | undefined {
    const n = this.members.length;
    if (n === 1) {
      const only = this.members[0];
      return only.usable && !skip?.has(only) ? only : undefined;
    }
    // The turn moves past the member chosen, so one out of rotation does not give its share
    // to its neighbour alone.
    const start = this.#next % Math.max(1, n);
    let best = -1;
    for (let i = 0; i < n; i++) {
      const k = (start + i) % n;
      const c = this.members[k];
      if (!c.usable || skip?.has(c)) continue;
      if (best < 0 || c.busyStreams < this.members[best].busyStreams) best = k;
      if (policy === "round-robin") break;
    }
    if (best < 0) return undefined;
    this.#next = best + 1;
    return this.members[best];
  }

  /** Members that can take a stream now. */
  get usableCount(): number {
    let k = 0;
    for (const c of this.members) if (c.usable) k++;
    return k;
  }
}
