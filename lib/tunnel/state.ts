/**
 * The tunnel server's state file (`--state-file`): the hosts and TCP/UDP tunnels added through
 * the admin API, so they survive a restart and their clients are not locked out by a
 * redeploy, and the subdomain claims, so a restart within their grace period gives no name
 * away. Written atomically (a temporary file beside it, then a rename) with mode 0600:
 * it holds the clients' identifiers.
 * @module
 */

import type { Logger } from "../log.ts";
import { errorMessage } from "../net/errors.ts";
import { minIdentifierChars, TunnelConfigError } from "./config.ts";
import type { HostEntry } from "./registry.ts";
import type { PortTunnelSpec } from "./port_tunnels.ts";
import type { ClaimRecord, TunnelServer } from "./server.ts";
import { HostAccess, type HostAccessSpec } from "./access.ts";
import { HostRewrite, type HostRewriteSpec } from "./rewrite.ts";

/** Version written in (and required of) the file. */
export const stateFileVersion = 1;

/** The admin API's routes as the state file holds them. */
export interface TunnelState {
  /** {@linkcode stateFileVersion}. */
  version: number;
  /** Hosts added through the admin API. */
  hosts: HostEntry[];
  /** Server-defined TCP tunnels added through the admin API. */
  tcp: PortTunnelSpec[];
  /** Server-defined UDP tunnels added through the admin API (absent in older files). */
  udp?: PortTunnelSpec[];
  /** Access rules set through the admin API (absent in files of older builds). */
  access?: ({ host: string } & HostAccessSpec)[];
  /** Subdomain claims (account token digests, never tokens; absent in older files). */
  claims?: ClaimRecord[];
  /** Header rewrites set through the admin API (absent in older files). */
  rewrites?: ({ host: string } & HostRewriteSpec)[];
}

function isPort(n: unknown): n is number {
  return typeof n === "number" && Number.isInteger(n) && n >= 1 && n <= 65535;
}

function isIdentifier(s: unknown): s is string {
  return typeof s === "string" && s.length >= minIdentifierChars;
}

/** Parse and check a state file's text; throws {@linkcode TunnelConfigError} naming `path`. */
export function parseTunnelState(text: string, path: string): TunnelState {
  const bad = (what: string) => new TunnelConfigError(`state file ${path}: ${what}`);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw bad(`not JSON: ${errorMessage(err)}`);
  }
  const o = raw as Partial<Record<keyof TunnelState, unknown>>;
  if (typeof o !== "object" || o === null || o.version !== stateFileVersion) {
    throw bad(`want an object with "version": ${stateFileVersion}`);
  }
  if (!Array.isArray(o.hosts) || !Array.isArray(o.tcp)) throw bad(`want "hosts" and "tcp" lists`);
  const hosts = o.hosts.map((h: Partial<HostEntry>, i: number) => {
    if (typeof h?.host !== "string" || !h.host || !isIdentifier(h.identifier)) {
      throw bad(`hosts[${i}] must be {host, identifier of ${minIdentifierChars}+ characters}`);
    }
    return { host: h.host, identifier: h.identifier };
  });
  const ports = (list: Partial<PortTunnelSpec>[], name: string) =>
    list.map((t: Partial<PortTunnelSpec>, i: number) => {
      if (
        !isPort(t?.publicPort) || !isIdentifier(t.identifier) ||
        (t.localPort !== undefined && !isPort(t.localPort))
      ) {
        throw bad(`${name}[${i}] must be {publicPort, identifier, localPort?}`);
      }
      return {
        publicPort: t.publicPort,
        identifier: t.identifier,
        ...(t.localPort === undefined ? {} : { localPort: t.localPort }),
      };
    });
  const tcp = ports(o.tcp, "tcp");
  if (o.udp !== undefined && !Array.isArray(o.udp)) throw bad(`"udp" must be a list`);
  const udp = ports(o.udp ?? [], "udp");
  if (o.access !== undefined && !Array.isArray(o.access)) throw bad(`"access" must be a list`);
  const access = (o.access ?? []).map((a: { host?: unknown } & HostAccessSpec, i: number) => {
    if (typeof a?.host !== "string" || !a.host) throw bad(`access[${i}] needs a host`);
    try {
      new HostAccess(a);
    } catch (err) {
      throw bad(`access[${i}]: ${errorMessage(err)}`);
    }
    return { host: a.host, basic: a.basic, bearer: a.bearer, allow: a.allow };
  });
  if (o.claims !== undefined && !Array.isArray(o.claims)) throw bad(`"claims" must be a list`);
  const claims = (o.claims ?? []).map((c: Partial<ClaimRecord>, i: number) => {
    if (
      typeof c?.host !== "string" || !c.host || typeof c.account !== "string" ||
      !/^[0-9a-f]{64}$/.test(c.account) ||
      (c.leftAt !== undefined && (typeof c.leftAt !== "number" || !Number.isFinite(c.leftAt)))
    ) {
      throw bad(`claims[${i}] must be {host, account: SHA-256 hex, leftAt?: epoch ms}`);
    }
    return {
      host: c.host,
      account: c.account,
      ...(c.leftAt === undefined ? {} : { leftAt: c.leftAt }),
    };
  });
  if (o.rewrites !== undefined && !Array.isArray(o.rewrites)) {
    throw bad(`"rewrites" must be a list`);
  }
  const rewrites = (o.rewrites ?? []).map((r: { host?: unknown } & HostRewriteSpec, i: number) => {
    if (typeof r?.host !== "string" || !r.host) throw bad(`rewrites[${i}] needs a host`);
    const { host, ...spec } = r;
    try {
      new HostRewrite(spec);
    } catch (err) {
      throw bad(`rewrites[${i}]: ${errorMessage(err)}`);
    }
    return { host, ...spec };
  });
  return { version: stateFileVersion, hosts, tcp, udp, access, claims, rewrites };
}

/**
 * Keeps one server's admin routes in a file: {@linkcode load} at start (after the flags'
 * routes, which win over a file entry for the same host or port), {@linkcode save} after
 * every admin change (saves never overlap; the last one written is the newest state).
 */
export class TunnelStateFile {
  #saving: Promise<void> = Promise.resolve();

  /** The state file at `path` for `server`. */
  constructor(readonly path: string, readonly server: TunnelServer, readonly log: Logger) {}

  /**
   * Add the file's hosts and TCP/UDP tunnels to the server (a missing file is an empty state).
   * An entry that cannot be added (host defined by a flag, port busy) is skipped with a
   * warning; a malformed file throws {@linkcode TunnelConfigError}.
   */
  async load(): Promise<
    { hosts: number; tcp: number; udp: number; access: number; rewrites: number; claims: number }
  > {
    let text: string;
    try {
      text = await Deno.readTextFile(this.path);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) {
        return { hosts: 0, tcp: 0, udp: 0, access: 0, rewrites: 0, claims: 0 };
      }
      throw new TunnelConfigError(`state file ${this.path}: ${errorMessage(err)}`);
    }
    const state = parseTunnelState(text, this.path);
    let hosts = 0, tcp = 0, udp = 0;
    for (const { host, identifier } of state.hosts) {
      try {
        await this.server.addHost(host, identifier, { origin: "admin", exclusive: true });
        hosts++;
      } catch (err) {
        this.log.warn("state file host skipped", { host, error: errorMessage(err) });
      }
    }
    for (const t of state.tcp) {
      try {
        await this.server.addTcpTunnel({ ...t, origin: "admin" });
        tcp++;
      } catch (err) {
        this.log.warn("state file tcp tunnel skipped", {
          port: t.publicPort,
          error: errorMessage(err),
        });
      }
    }
    for (const t of state.udp ?? []) {
      try {
        await this.server.addUdpTunnel({ ...t, origin: "admin" });
        udp++;
      } catch (err) {
        this.log.warn("state file udp tunnel skipped", {
          port: t.publicPort,
          error: errorMessage(err),
        });
      }
    }
    let access = 0;
    for (const { host, ...spec } of state.access ?? []) {
      if (this.server.accessInfo(host)) {
        this.log.warn("state file access rules skipped: set by a flag or the cluster", { host });
        continue;
      }
      try {
        await this.server.setAccess(host, spec, "admin");
      } catch (err) {
        this.log.warn("state file access rules skipped", { host, error: errorMessage(err) });
        continue;
      }
      access++;
    }
    let rewrites = 0;
    for (const { host, ...spec } of state.rewrites ?? []) {
      if (this.server.rewriteInfo(host)) {
        this.log.warn("state file rewrites skipped: set by a flag or the cluster", { host });
        continue;
      }
      try {
        await this.server.setRewrite(host, spec, "admin");
      } catch (err) {
        this.log.warn("state file rewrites skipped", { host, error: errorMessage(err) });
        continue;
      }
      rewrites++;
    }
    let claims = 0;
    for (const c of state.claims ?? []) {
      try {
        await this.server.restoreClaim(c);
        claims++;
      } catch (err) {
        this.log.info("state file claim not restored", { host: c.host, why: errorMessage(err) });
      }
    }
    this.log.info("state loaded", { path: this.path, hosts, tcp, access, rewrites, claims, udp });
    return { hosts, tcp, udp, access, rewrites, claims };
  }

  /** Resolves once the saves started so far are done (written or failed): before an exit. */
  settled(): Promise<void> {
    return this.#saving;
  }

  /** Write the server's admin routes now: a temporary file (0600), then a rename over the old. */
  save(): Promise<void> {
    const run = this.#saving.then(() => this.#write());
    this.#saving = run.catch(() => {
      // The next save waits for this one, failed or not: its caller saw the failure.
    });
    return run;
  }

  async #write(): Promise<void> {
    const { hosts, tcp, udp, access, rewrites } = await this.server.adminRoutes();
    const state: TunnelState = {
      version: stateFileVersion,
      hosts,
      tcp: tcp.map(({ origin: _, ...t }) => t),
      // Only when there are any: files without UDP tunnels keep their older shape.
      ...(udp.length > 0 ? { udp: udp.map(({ origin: _, ...t }) => t) } : {}),
      access,
      rewrites,
      claims: this.server.claimRecords(),
    };
    const tmp = `${this.path}.tmp-${Deno.pid}`;
    try {
      await Deno.writeTextFile(tmp, JSON.stringify(state, null, 2) + "\n", { mode: 0o600 });
      await Deno.rename(tmp, this.path);
    } catch (err) {
      await Deno.remove(tmp).catch(() => {
        // Never written, or already renamed: nothing to clean.
      });
      this.log.error("state file not written", { path: this.path, error: errorMessage(err) });
      throw err;
    }
    this.log.debug("state saved", { path: this.path, hosts: hosts.length, tcp: tcp.length });
  }
}
