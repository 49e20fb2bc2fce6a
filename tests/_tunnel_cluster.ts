/** In-process tunnel-server cluster members for the cluster tests (a real redis-server). */

import {
  ClusterLinks,
  type ClusterLinksOptions,
  RedisRegistry,
  type TunnelServerOptions,
} from "../lib/tunnel/mod.ts";
import { startApp, startClient, startTunnel, type TestTunnel } from "./_tunnel.ts";
import { startRedis, type TestRedis } from "./_redis.ts";
import { until } from "./_util.ts";

/** The link token of the in-process members. */
export const memberToken = "cluster-member-token-0001";

/** One running member. */
export interface Member {
  name: string;
  registry: RedisRegistry;
  tunnel: TestTunnel;
  links: ClusterLinks;
  close(): Promise<void>;
}

/**
 * One cluster instance in this process: registry, front, links (cache and leases long unless
 * `cacheMs` and `leaseMs` say otherwise; `server` adds tunnel server options such as a log or
 * claims; `advertise` gives where the others reach its link port, when not directly; `links`
 * adds link options).
 */
export async function member(
  url: string,
  name: string,
  opts: {
    cacheMs?: number;
    leaseMs?: number;
    server?: TunnelServerOptions;
    advertise?: (linkPort: number) => string;
    links?: Omit<ClusterLinksOptions, "token">;
  } = {},
): Promise<Member> {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const registry = await RedisRegistry.connect({
    url,
    instance: name,
    advertise: opts.advertise?.(l.addr.port) ?? `127.0.0.1:${l.addr.port}`,
    leaseMs: opts.leaseMs ?? 600_000,
    cacheMs: opts.cacheMs ?? 600_000,
  });
  const tunnel = startTunnel({ ...opts.server, registry });
  const links = new ClusterLinks(tunnel.server, registry, { ...opts.links, token: memberToken });
  links.attach();
  links.listen(l);
  return {
    name,
    registry,
    tunnel,
    links,
    close: async () => {
      await links.close();
      await tunnel.close();
      await registry.close();
    },
  };
}

/** What {@linkcode withOutageCluster} hands its test. */
export interface OutageCluster {
  redis: TestRedis;
  /** Holds the client (and its hosts). */
  a: Member;
  /** Joined last: its first beat read the hosts and the instances a and c. */
  b: Member;
  /** Stop c (its link port closes): a peer that cannot answer. */
  stopC(): Promise<void>;
}

/**
 * The outage tests' cluster on a real redis-server (heartbeats every 200 s: b's copies are
 * those of its first beat): members a and c, `hosts` (host → identifier) added through a, a
 * client of identifier `id` connected to a for app "app" (`/name?id=x` answers "app x"), then
 * member b (with `bOpts`). `fn` runs with them; everything is stopped after, whatever happened
 * (c only if `stopC` did not).
 */
export async function withOutageCluster(
  hosts: Record<string, string>,
  id: string,
  bOpts: Parameters<typeof member>[2],
  fn: (cluster: OutageCluster) => Promise<void>,
): Promise<void> {
  const redis = await startRedis();
  const app = startApp("app");
  const a = await member(redis.url, "a");
  const c = await member(redis.url, "c");
  let cOpen = true;
  for (const [host, identifier] of Object.entries(hosts)) {
    await a.tunnel.server.addHost(host, identifier);
  }
  const client = startClient({
    server: a.tunnel.url,
    identifier: id,
    local: { host: "127.0.0.1", port: app.port },
  });
  let b: Member | undefined;
  try {
    await client.connected();
    // Registered on a (its lease written after the handshake's answer): Redis going down
    // before that would fail the write, and a would drop the client.
    await until("a to register the client", () => a.tunnel.server.clientEvents.connected === 1);
    b = await member(redis.url, "b", bOpts);
    await fn({
      redis,
      a,
      b,
      stopC: async () => {
        cOpen = false;
        await c.close();
      },
    });
  } finally {
    await client.stop();
    await b?.close();
    if (cOpen) await c.close();
    await a.close();
    await app.close();
    await redis.stop();
  }
}
