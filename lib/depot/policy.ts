/**
 * depot-local's destination policy: which `host:port` a SOCKS client may reach through this
 * exit. Everything is allowed unless an allow list is given.
 * @module
 */

import type { HostPort } from "../net/mod.ts";

/** A malformed `--allow` pattern. */
export class PolicyError extends Error {
  /** Error class name. */
  override name = "PolicyError";
  /** Machine-readable reason. */
  readonly reason = "bad-pattern";
}

/**
 * Build an allow predicate from patterns `host` or `host:port` (`[v6]:port` for IPv6),
 * where `host` may use `*` as a wildcard (`*.corp.example`, `10.1.*`, `*`) and `port` is a
 * number, a range `lo-hi`, or `*`. Hosts compare case-insensitively against the name the
 * client asked for (no resolution: allow names, or IP literals, as clients send them).
 * An empty list allows everything.
 *
 * @example
 * ```ts
 * import { allowList } from "./policy.ts";
 * const allow = allowList(["*.corp.example:443", "10.1.2.3"]);
 * console.assert(allow({ host: "git.corp.example", port: 443 }));
 * console.assert(!allow({ host: "git.corp.example", port: 22 }));
 * console.assert(allow({ host: "10.1.2.3", port: 22 }));
 * ```
 */
export function allowList(patterns: readonly string[]): (dest: HostPort) => boolean {
  if (patterns.length === 0) return () => true;
  const rules = patterns.map(parseRule);
  return (dest) => {
    const host = dest.host.toLowerCase();
    return rules.some((r) => r.host.test(host) && dest.port >= r.lo && dest.port <= r.hi);
  };
}

interface Rule {
  host: RegExp;
  lo: number;
  hi: number;
}

function parseRule(pattern: string): Rule {
  const p = pattern.trim();
  const m = /^(?:\[([^\]]+)\]|([^:\[\]]+))(?::(\*|\d{1,5}(?:-\d{1,5})?))?$/.exec(p);
  if (!m) throw new PolicyError(`bad allow pattern ${JSON.stringify(pattern)}`);
  const hostGlob = (m[1] ?? m[2]).toLowerCase();
  let lo = 0, hi = 65535;
  if (m[3] !== undefined && m[3] !== "*") {
    const [a, b] = m[3].split("-").map(Number);
    lo = a;
    hi = b ?? a;
    if (hi > 65535 || lo > hi) {
      throw new PolicyError(`bad port range in ${JSON.stringify(pattern)}`);
    }
  }
  const re = hostGlob.split("*").map((s) => s.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join(".*");
  return { host: new RegExp(`^${re}$`), lo, hi };
}
