/**
 * The tunnel server's config-defined routes -- `vhost -> identifier` (from `--host` values and
 * hosts files) and server-defined TCP and UDP tunnels (`--tcp`, `--udp`) -- parsed with errors that name where
 * the bad value was written, and applied to a running {@linkcode TunnelServer} by a pure diff
 * (reload: only what changed is touched; hosts and tunnels added through the admin API are
 * left alone).
 * @module
 */

import { errorMessage } from "../net/errors.ts";
import { refusePlaceholder, resolveSecret } from "../config/secret.ts";
import { normalizeHostPattern, type RouteOrigin } from "./registry.ts";
import type { PortProtocol, PortTunnelSpec } from "./port_tunnels.ts";
import type { TunnelServer } from "./server.ts";

/** Shortest identifier accepted: identifiers are the clients' secrets. */
export const minIdentifierChars = 8;

/** A config value that cannot be used; the message names where it was written. */
export class TunnelConfigError extends Error {
  override name = "TunnelConfigError";
}

/** The routes a tunnel server's config defines. */
export interface TunnelConfig {
  /** Normalised vhost -> identifier. */
  hosts: Map<string, string>;
  /** Server-defined TCP tunnels by public port. */
  tcp: Map<number, PortTunnelSpec>;
  /** Server-defined UDP tunnels by public port (none when absent). */
  udp?: Map<number, PortTunnelSpec>;
  /** Where each host was written ("flag" when absent; "file": a hosts file). */
  origins?: Map<string, RouteOrigin>;
}

/** A public-port range (`--tcp-ports min-max`, `--udp-ports`). */
export interface PortRange {
  min: number;
  max: number;
}

/** `min-max` or a single port; throws {@linkcode TunnelConfigError} naming `where`. */
export function parsePortRange(text: string, where: string): PortRange {
  const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(text.trim());
  const min = m ? Number(m[1]) : NaN;
  const max = m ? Number(m[2] ?? m[1]) : NaN;
  if (!m || min < 1 || max > 65535 || min > max) {
    throw new TunnelConfigError(`${where} must be min-max (ports 1-65535), got ${text}`);
  }
  return { min, max };
}

function checkedHost(vhost: string, identifier: string, where: string): [string, string] {
  const host = normalizeHostPattern(vhost);
  if (!host) throw new TunnelConfigError(`${where}: bad host name ${JSON.stringify(vhost)}`);
  if (identifier.length < minIdentifierChars) {
    throw new TunnelConfigError(
      `${where}: identifier of ${vhost} must be at least ${minIdentifierChars} characters`,
    );
  }
  return [host, identifier];
}

function secretOf(ref: string, where: string, env?: (n: string) => string | undefined): string {
  try {
    return resolveSecret(ref, env);
  } catch (err) {
    throw new TunnelConfigError(`${where}: ${errorMessage(err)}`);
  }
}

/**
 * One `vhost=identifier` value (identifier may be `env:VAR` or `file:PATH`); `where` names
 * where it was written (`--host`, `tunnel.toml:4: key "host"`).
 */
export function parseHostSpec(
  spec: string,
  where: string,
  env?: (n: string) => string | undefined,
): [string, string] {
  const eq = spec.indexOf("=");
  if (eq <= 0) {
    throw new TunnelConfigError(
      `${where} must be vhost=identifier, got ${JSON.stringify(spec.split("=")[0])}`,
    );
  }
  const vhost = spec.slice(0, eq);
  return checkedHost(vhost, secretOf(spec.slice(eq + 1), `${where} ${vhost}`, env), where);
}

/**
 * The `vhost identifier` lines of a hosts file (`#` comments, blank lines); an error names
 * the file and the line.
 */
export function parseHostsFile(text: string, path: string): [string, string][] {
  const out: [string, string][] = [];
  text.split("\n").forEach((line, i) => {
    const t = line.replace(/#.*$/, "").trim();
    if (!t) return;
    const where = `${path}:${i + 1}`;
    const parts = t.split(/\s+/);
    if (parts.length !== 2) {
      throw new TunnelConfigError(`${where}: want "vhost identifier", got ${parts.length} fields`);
    }
    out.push(checkedHost(parts[0], refusePlaceholder(parts[1], `${where}: identifier`), where));
  });
  return out;
}

/** {@linkcode parseHostsFile} of the file at `path`; an unreadable file names it. */
export function readHostsFile(path: string): [string, string][] {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (err) {
    throw new TunnelConfigError(`hosts file ${path}: ${errorMessage(err)}`);
  }
  return parseHostsFile(text, path);
}

/**
 * One `port[:localPort]=identifier` value (`--tcp`, or `--udp` with `protocol` "udp"), inside
 * `range`; identifier may be `env:VAR` or `file:PATH`.
 */
export function parseTcpSpec(
  spec: string,
  range: PortRange | undefined,
  where: string,
  env?: (n: string) => string | undefined,
  protocol: PortProtocol = "tcp",
): PortTunnelSpec {
  const m = /^(\d{1,5})(?::(\d{1,5}))?=(.+)$/.exec(spec);
  const publicPort = m ? Number(m[1]) : NaN;
  const localPort = m?.[2] !== undefined ? Number(m[2]) : undefined;
  if (!m || publicPort < 1 || publicPort > 65535 || (localPort ?? 1) < 1 || localPort! > 65535) {
    throw new TunnelConfigError(
      `${where} must be port[:localPort]=identifier, got ${spec.split("=")[0]}`,
    );
  }
  if (!range || publicPort < range.min || publicPort > range.max) {
    throw new TunnelConfigError(
      `${where} ${publicPort}: outside --${protocol}-ports ${
        range ? `${range.min}-${range.max}` : "(none)"
      }`,
    );
  }
  const identifier = secretOf(m[3], `${where} ${publicPort}`, env);
  return { publicPort, identifier, localPort, origin: "flag" };
}

/** The changes that turn `current` routes into `wanted` (pure; a changed identifier or local
 * port is a removal and an addition). */
export interface TunnelConfigDiff {
  removeHosts: string[];
  addHosts: [string, string][];
  removeTcp: number[];
  addTcp: PortTunnelSpec[];
  removeUdp: number[];
  addUdp: PortTunnelSpec[];
}

/** {@linkcode TunnelConfigDiff} of two configs. */
export function diffTunnelConfig(current: TunnelConfig, wanted: TunnelConfig): TunnelConfigDiff {
  const same = (a: PortTunnelSpec, b?: PortTunnelSpec) =>
    b !== undefined && a.identifier === b.identifier && a.localPort === b.localPort;
  const remove = (cur: Map<number, PortTunnelSpec>, want: Map<number, PortTunnelSpec>) =>
    [...cur].filter(([p, t]) => !same(t, want.get(p))).map(([p]) => p);
  const add = (cur: Map<number, PortTunnelSpec>, want: Map<number, PortTunnelSpec>) =>
    [...want].filter(([p, t]) => !same(t, cur.get(p))).map(([, t]) => t);
  const [curUdp, wantUdp] = [current.udp ?? new Map(), wanted.udp ?? new Map()];
  return {
    removeHosts: [...current.hosts].filter(([h, id]) => wanted.hosts.get(h) !== id).map(([h]) => h),
    addHosts: [...wanted.hosts].filter(([h, id]) => current.hosts.get(h) !== id),
    removeTcp: remove(current.tcp, wanted.tcp),
    addTcp: add(current.tcp, wanted.tcp),
    removeUdp: remove(curUdp, wantUdp),
    addUdp: add(curUdp, wantUdp),
  };
}

/** What one {@linkcode TunnelConfigApplier.apply} did. */
export interface TunnelConfigResult extends TunnelConfigDiff {
  /** TCP tunnels that could not be added (port busy, outside the range), with why. */
  failedTcp: { port: number; error: string }[];
  /** UDP tunnels that could not be added, with why. */
  failedUdp: { port: number; error: string }[];
}

/**
 * Applies configs to one server, remembering what the config defined (so hosts and tunnels
 * added through the admin API are never touched by a reload). Connected clients and their
 * streams stay; a removed host stops routing, a changed identifier takes the next client.
 */
export class TunnelConfigApplier {
  #applied: Required<Omit<TunnelConfig, "origins">> = {
    hosts: new Map(),
    tcp: new Map(),
    udp: new Map(),
  };

  constructor(readonly server: TunnelServer) {}

  /** Make the server's config-defined routes `cfg`. */
  async apply(cfg: TunnelConfig): Promise<TunnelConfigResult> {
    const diff = diffTunnelConfig(this.#applied, cfg);
    const applied = this.#applied;
    for (const host of diff.removeHosts) {
      await this.server.removeHost(host);
      applied.hosts.delete(host);
    }
    for (const [host, id] of diff.addHosts) {
      await this.server.addHost(host, id, { origin: cfg.origins?.get(host) ?? "flag" });
      applied.hosts.set(host, id);
    }
    const ports = async (
      remove: number[],
      add: PortTunnelSpec[],
      into: Map<number, PortTunnelSpec>,
      ops: {
        remove(port: number): Promise<boolean>;
        add(spec: PortTunnelSpec): Promise<unknown>;
      },
    ) => {
      for (const port of remove) {
        await ops.remove(port);
        into.delete(port);
      }
      const failed: { port: number; error: string }[] = [];
      for (const t of add) {
        try {
          await ops.add(t);
          into.set(t.publicPort, t);
        } catch (err) {
          failed.push({ port: t.publicPort, error: errorMessage(err) });
        }
      }
      return failed;
    };
    const s = this.server;
    const failedTcp = await ports(diff.removeTcp, diff.addTcp, applied.tcp, {
      remove: (p) => s.removeTcpTunnel(p),
      add: (t) => s.addTcpTunnel(t),
    });
    const failedUdp = await ports(diff.removeUdp, diff.addUdp, applied.udp, {
      remove: (p) => s.removeUdpTunnel(p),
      add: (t) => s.addUdpTunnel(t),
    });
    return { ...diff, failedTcp, failedUdp };
  }
}
