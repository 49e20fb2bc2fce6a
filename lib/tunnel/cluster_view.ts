/**
 * The whole cluster as one instance sees it (issue 19): every host with the instance holding
 * its client, every client (its own with their live details, the others' from their leases)
 * and the live instances, so the admin API and status page of any instance show the cluster.
 * Without a shared registry it is this server's own view.
 * @module
 */

import { errorMessage } from "../net/mod.ts";
import type { ClientInfo } from "./client_conn.ts";
import type { ClientRecord } from "./registry.ts";
import { type InstanceRecord, RedisRegistry } from "./redis_registry.ts";
import type { TunnelServer } from "./server.ts";
import type { HostStatus } from "./stats.ts";
import type { PortProtocol, PortTunnelInfo } from "./port_tunnels.ts";

/** One live instance of the cluster. */
export interface ClusterInstanceInfo extends InstanceRecord {
  /** Whether it is the instance answering. */
  self: boolean;
  /** Clients it holds (by their leases). */
  clients: number;
}

/**
 * A TCP or UDP port as this instance serves it: in a cluster, a port a client asked for
 * anywhere names its holder, and one this instance could not bind says why.
 */
export interface PortStatus extends PortTunnelInfo {
  /** "tcp" or "udp". */
  proto: PortProtocol;
}

/** What {@linkcode clusterView} returns. */
export interface ClusterView {
  /** The answering instance's name (absent without a shared registry). */
  instance?: string;
  /** Live instances (empty without a shared registry). */
  instances: ClusterInstanceInfo[];
  /** Every host; `instance` names the holder of its client. */
  hosts: HostStatus[];
  /** Every connected client; `instance` names its holder. */
  clients: ClientInfo[];
  /** This instance's TCP and UDP ports (in a cluster: every client's claimed ports). */
  ports: PortStatus[];
  /** Set when the registry could not be read: only this instance's own clients are shown. */
  registryError?: string;
}

/** The cluster seen from `server` (one registry scan of leases and instances). */
export async function clusterView(server: TunnelServer): Promise<ClusterView> {
  const reg = server.registry;
  const hosts = await server.status();
  const local = server.clients();
  const ports = portsOf(server);
  if (!(reg instanceof RedisRegistry)) return { instances: [], hosts, clients: local, ports };
  const self = reg.instance;
  let leases: ClientRecord[] = [];
  let records: InstanceRecord[] = [];
  let registryError: string | undefined;
  try {
    [leases, records] = await Promise.all([reg.listClients(), reg.instances()]);
  } catch (err) {
    registryError = errorMessage(err);
  }
  const clients: ClientInfo[] = local.map((c) => ({ ...c, instance: self }));
  const mine = new Set(local.map((c) => c.fingerprint));
  const holder = new Map<string, string>();
  for (const c of local) holder.set(c.fingerprint, self);
  for (const l of leases) {
    if (l.instance === self && mine.has(l.fingerprint)) continue;
    holder.set(l.fingerprint, l.instance);
    clients.push({
      id: l.clientId,
      fingerprint: l.fingerprint,
      remote: l.remote,
      since: l.since,
      hosts: hosts.filter((h) => h.client === l.fingerprint).map((h) => h.host),
      tcpPorts: [],
      udpPorts: [],
      // Held elsewhere: its lease says it is there; live counters stay with its holder.
      healthy: true,
      streams: 0,
      openStreams: 0,
      instance: l.instance,
    });
  }
  for (const h of hosts) {
    const at = holder.get(h.client);
    if (at === undefined) continue;
    h.instance = at;
    h.connected = true;
    if (at !== self && h.members === 0) h.members = h.healthy = 1;
  }
  const count = (name: string) => clients.filter((c) => c.instance === name).length;
  const instances = records
    .map((r) => ({ ...r, self: r.name === self, clients: count(r.name) }))
    .sort((a, b) => a.name.localeCompare(b.name));
  return {
    instance: self,
    instances,
    hosts,
    clients,
    ports,
    ...(registryError ? { registryError } : {}),
  };
}

/** `server`'s TCP and UDP ports (the UDP ones without their flow counters). */
function portsOf(server: TunnelServer): PortStatus[] {
  const tcp = server.tcpTunnels().map((t): PortStatus => ({ proto: "tcp", ...t }));
  const udp = server.udpTunnels().map(({ flows: _f, stats: _s, ...t }): PortStatus => ({
    proto: "udp",
    ...t,
  }));
  return [...tcp, ...udp];
}
