/**
 * Destination access control: allow and deny lists of networks (CIDR, IPv4 and IPv6), host
 * name patterns and ports, checked on the name a client asked for *and* on every address it
 * resolves to, and an ACL-enforcing dial that connects only to addresses it checked (so a name
 * cannot bypass an IP deny, and DNS cannot change its answer between check and connect).
 *
 * Rule syntax (one per `--allow` / `--deny`):
 *
 * | rule                      | matches                                                   |
 * | ------------------------- | --------------------------------------------------------- |
 * | `10.0.0.0/8`              | any port on 10.x (resolved address or literal)            |
 * | `10.0.0.0/8:443`          | port 443 only                                             |
 * | `192.0.2.7:8000-8999`     | one address, a port range                                 |
 * | `[fd00::/8]:22,443`       | IPv6 network (brackets when a port follows), port list    |
 * | `fd00::/8`                | IPv6 network, any port                                    |
 * | `*.internal`, `db?.corp`  | host names (`*` any run of characters, `?` one), any port |
 * | `*:25`                    | any destination on port 25                                |
 *
 * Semantics: a deny rule that matches the name or any address used wins; with no allow rule
 * everything else is allowed; with allow rules a destination must match one of them by name
 * or by address. IPv4-mapped IPv6 addresses are checked as IPv4. Every numeric spelling the
 * resolver accepts (`0x7f.1`, `2130706433`, `0177.0.0.1`) is checked as the address it means.
 * An unspecified address (`0.0.0.0/8`, `::`, in any spelling) is checked as the local host it
 * reaches (`127.0.0.1`, `::1`): a deny of either rule's address refuses it, an allow must admit
 * the loopback address.
 * @module
 */

import { type HostPort, ipFamily } from "./addr.ts";
import { dial, type DialOptions, resolveHost } from "./dial.ts";
import { NetError } from "./errors.ts";

/** A malformed rule. */
export class AclError extends Error {
  override name = "AclError";
  readonly reason = "bad-rule";
}

interface Cidr {
  v: 4 | 6;
  bits: bigint;
  prefix: number;
}

interface Rule {
  text: string;
  cidr?: Cidr;
  glob?: RegExp;
  /** Inclusive port ranges; empty = any. */
  ports: [number, number][];
}

/** An IP address as its version and its 32- or 128-bit value. */
export interface Ip {
  v: 4 | 6;
  bits: bigint;
}

/** Parse an IP literal to (version, 128/32-bit value); IPv4-mapped IPv6 becomes IPv4. */
export function parseIp(ip: string): Ip | null {
  const s = ip.replace(/^\[|\]$/g, "").replace(/%.*$/, "");
  const kind = ipFamily(s);
  if (kind === 4) {
    return { v: 4, bits: s.split(".").reduce((a, o) => (a << 8n) | BigInt(Number(o)), 0n) };
  }
  if (kind !== 6) return null;
  let text = s.toLowerCase();
  let tailV4: bigint | null = null;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    tailV4 = parseIp(v4[1])!.bits;
    text = text.slice(0, -v4[1].length) + "0:0";
  }
  const [head, tail] = text.split("::");
  const h = head ? head.split(":") : [];
  const t = tail !== undefined && tail !== "" ? tail.split(":") : [];
  const groups = text.includes("::")
    ? [...h, ...Array(8 - h.length - t.length).fill("0"), ...t]
    : h;
  let bits = groups.reduce((a, g) => (a << 16n) | BigInt(parseInt(g, 16)), 0n);
  if (tailV4 !== null) bits = (bits & ~0xffffffffn) | tailV4;
  if (bits >> 32n === 0xffffn) return { v: 4, bits: bits & 0xffffffffn };
  return { v: 6, bits };
}

/**
 * Parse a numeric IPv4 spelling as inet_aton (and so getaddrinfo) reads it: one to four parts,
 * each decimal, octal (`0` prefix) or hex (`0x` prefix), the last filling the remaining bytes
 * (`0`, `0x0`, `127.1`, `2130706433`). Null when `text` is not such a spelling.
 */
export function parseInetAton(text: string): bigint | null {
  const parts = text.split(".");
  if (parts.length > 4) return null;
  const values: bigint[] = [];
  for (const p of parts) {
    if (/^0x[0-9a-f]*$/i.test(p)) values.push(p.length === 2 ? 0n : BigInt(p));
    else if (/^0[0-7]*$/.test(p)) values.push(BigInt(`0o${p.slice(1) || "0"}`));
    else if (/^[1-9]\d*$/.test(p)) values.push(BigInt(p));
    else return null;
  }
  const last = values.pop()!;
  if (values.some((v) => v > 255n)) return null;
  const lastBits = BigInt(8 * (4 - values.length));
  if (last >> lastBits !== 0n) return null;
  return values.reduce((a, v, i) => a | (v << BigInt(24 - 8 * i)), 0n) | last;
}

/** An IP literal in any spelling the resolver accepts (see {@linkcode parseInetAton}). */
function parseLiteral(name: string): Ip | null {
  const ip = parseIp(name);
  if (ip) return ip;
  const v4 = parseInetAton(name);
  return v4 === null ? null : { v: 4, bits: v4 };
}

const loopbackV4: Ip = { v: 4, bits: 0x7f000001n };
const loopbackV6: Ip = { v: 6, bits: 1n };

/**
 * The address a connection to `ip` reaches: an unspecified address (0.0.0.0/8, `::`) means
 * the local host (Linux connects 0.0.0.0 to 127.0.0.1 and `::` to ::1), anything else itself.
 */
function reached(ip: Ip): Ip {
  if (ip.v === 4 && ip.bits >> 24n === 0n) return loopbackV4;
  if (ip.v === 6 && ip.bits === 0n) return loopbackV6;
  return ip;
}

function inCidr(ip: Ip, c: Cidr): boolean {
  if (ip.v !== c.v) return false;
  const width = c.v === 4 ? 32 : 128;
  const shift = BigInt(width - c.prefix);
  return (ip.bits >> shift) === (c.bits >> shift);
}

function parsePorts(text: string, rule: string): [number, number][] {
  if (text === "*") return [];
  return text.split(",").map((part) => {
    const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(part.trim());
    if (!m) throw new AclError(`bad port ${JSON.stringify(part)} in rule ${JSON.stringify(rule)}`);
    const lo = Number(m[1]), hi = Number(m[2] ?? m[1]);
    if (hi > 65535 || lo > hi) throw new AclError(`bad port range in rule ${JSON.stringify(rule)}`);
    return [lo, hi];
  });
}

function parseCidr(text: string, rule: string): Cidr | null {
  const [addr, len] = text.split("/");
  const ip = parseIp(addr);
  if (!ip) return null;
  // An IPv4-mapped network (::ffff:a.b.c.d/104+) is an IPv4 network.
  const width = ip.v === 4 ? 32 : 128;
  let prefix = len === undefined ? width : Number(len);
  if (ip.v === 4 && ipFamily(addr) === 6 && len !== undefined) prefix -= 96;
  if (
    !Number.isInteger(prefix) || prefix < 0 || prefix > width ||
    (len !== undefined && !/^\d+$/.test(len))
  ) {
    throw new AclError(`bad prefix length in rule ${JSON.stringify(rule)}`);
  }
  return { v: ip.v, bits: ip.bits, prefix };
}

/** Parse one rule (see the module table); throws {@linkcode AclError}. */
export function parseAclRule(rule: string): Rule {
  const r = rule.trim();
  if (r === "") throw new AclError("empty rule");
  let host: string;
  let ports: [number, number][] = [];
  const bracket = /^\[([^\]]+)\](?::(.+))?$/.exec(r);
  if (bracket) {
    host = bracket[1];
    if (bracket[2] !== undefined) ports = parsePorts(bracket[2], r);
  } else if (ipFamily(r.split("/")[0]) === 6) {
    host = r; // bare IPv6 (or IPv6 CIDR): no port possible
  } else {
    const i = r.lastIndexOf(":");
    host = i >= 0 ? r.slice(0, i) : r;
    if (i >= 0) ports = parsePorts(r.slice(i + 1), r);
  }
  if (host === "") throw new AclError(`no host in rule ${JSON.stringify(rule)}`);
  const cidr = parseCidr(host, r);
  if (cidr) return { text: r, cidr, ports };
  if (host.includes("/")) throw new AclError(`bad network in rule ${JSON.stringify(rule)}`);
  if (!/^[a-z0-9*?._-]+$/i.test(host)) {
    throw new AclError(`bad host pattern in rule ${JSON.stringify(rule)}`);
  }
  const re = host.toLowerCase().replace(/[.+^${}()|[\]\\-]/g, "\\$&").replace(/\*/g, ".*")
    .replace(/\?/g, ".");
  return { text: r, glob: new RegExp(`^${re}$`), ports };
}

function portOk(rule: Rule, port: number): boolean {
  return rule.ports.length === 0 || rule.ports.some(([lo, hi]) => port >= lo && port <= hi);
}

/** The outcome of a check, with the rule that decided (for logs). */
export interface AclDecision {
  allowed: boolean;
  /** The deciding rule, or why nothing matched. */
  rule: string;
}

/**
 * Allow/deny lists of destinations.
 *
 * @example
 * ```ts
 * import { Acl } from "./acl.ts";
 * const acl = new Acl({ allow: ["10.0.0.0/8:443", "*.internal"], deny: ["10.9.0.0/16"] });
 * console.assert(acl.check({ host: "10.1.2.3", port: 443 }).allowed);
 * console.assert(!acl.check({ host: "10.9.2.3", port: 443 }).allowed);
 * console.assert(!acl.check({ host: "git.internal", port: 22 }, "10.9.0.1").allowed);
 * ```
 */
export class Acl {
  readonly #allow: Rule[];
  readonly #deny: Rule[];

  /** Parse both lists; throws {@linkcode AclError} on the first bad rule. */
  constructor(lists: { allow?: readonly string[]; deny?: readonly string[] }) {
    this.#allow = (lists.allow ?? []).map(parseAclRule);
    this.#deny = (lists.deny ?? []).map(parseAclRule);
  }

  /** Whether there is no rule at all (everything allowed). */
  get empty(): boolean {
    return this.#allow.length === 0 && this.#deny.length === 0;
  }

  /** Human summary for a startup log line. */
  describe(): string {
    const a = this.#allow.map((r) => r.text).join(" ") || "all";
    const d = this.#deny.map((r) => r.text).join(" ") || "none";
    return `allow ${a}; deny ${d}`;
  }

  #matches(rule: Rule, name: string, ips: readonly Ip[], port: number) {
    if (!portOk(rule, port)) return false;
    if (rule.cidr) return ips.some((ip) => inCidr(ip, rule.cidr!));
    return rule.glob!.test(name);
  }

  /**
   * Check `dest` (the name or literal the client asked for) and, when given, the `address`
   * it resolved to. Without an address, IP rules apply only to IP literals, so call again
   * with each resolved address before connecting (as {@linkcode aclDial} does).
   */
  check(dest: HostPort, address?: string): AclDecision {
    const name = dest.host.toLowerCase().replace(/^\[|\]$/g, "").replace(/\.$/, "");
    const literal = parseLiteral(name);
    const ip = address !== undefined ? parseLiteral(address) : literal;
    // Deny: the address as written, the literal asked for, and what each of them reaches.
    const denyIps = [ip, literal].filter((x): x is Ip => x !== null).flatMap((
      x,
    ) => [x, reached(x)]);
    for (const r of this.#deny) {
      if (this.#matches(r, name, denyIps, dest.port)) {
        return { allowed: false, rule: `deny ${r.text}` };
      }
    }
    if (this.#allow.length === 0) return { allowed: true, rule: "no allow list" };
    // Allow: only what the connection reaches (an allow of 0.0.0.0 does not admit 127.0.0.1).
    const allowIps = ip === null ? [] : [reached(ip)];
    for (const r of this.#allow) {
      if (this.#matches(r, name, allowIps, dest.port)) {
        return { allowed: true, rule: `allow ${r.text}` };
      }
    }
    return { allowed: false, rule: "not in the allow list" };
  }

  /**
   * Whether the name alone is refused: a deny rule matches the name (or literal), or an allow
   * list exists that no address could satisfy. Lets a dialer refuse before resolving.
   */
  refusesName(dest: HostPort): AclDecision | null {
    const d = this.check(dest);
    if (d.allowed) return null;
    if (d.rule.startsWith("deny")) return d;
    // Not in the allow list by name: an address rule may still allow it after resolution.
    const anyCidrAllow = this.#allow.some((r) => r.cidr && portOk(r, dest.port));
    const name = dest.host.replace(/^\[|\]$/g, "").replace(/\.$/, "");
    return anyCidrAllow && parseLiteral(name) === null ? null : d;
  }
}

/**
 * Dial `dest` through `acl`: refuse by name first, resolve, drop every address the ACL denies,
 * and connect only to the addresses that passed (preferred family first). Rejects with
 * `NetError("not-allowed")` (SOCKS5 reply 0x02, HTTP 403) when nothing is allowed.
 */
export async function aclDial(
  acl: Acl,
  dest: HostPort,
  opts: DialOptions = {},
): Promise<Deno.TcpConn> {
  const target = `${dest.host}:${dest.port}`;
  const byName = acl.refusesName(dest);
  if (byName) throw new NetError("not-allowed", `${target} refused by ${byName.rule}`);
  const addrs = await resolveHost(dest.host, opts.prefer ?? "ipv6");
  let refusal: AclDecision | undefined;
  const allowed = addrs.filter((a) => {
    const d = acl.check(dest, a);
    if (!d.allowed) refusal ??= d;
    return d.allowed;
  });
  if (allowed.length === 0) {
    throw new NetError("not-allowed", `${target} refused by ${refusal?.rule ?? "the ACL"}`);
  }
  let last: unknown;
  for (const a of allowed) {
    try {
      return await dial(a, dest.port, opts);
    } catch (err) {
      last = err;
      if (err instanceof NetError && (err.reason === "aborted" || err.reason === "timeout")) {
        throw err;
      }
    }
  }
  throw last;
}
