/** In-process tunnel-server cluster members for the cluster tests (a real redis-server). */

import {
  ClusterLinks,
  type ClusterLinksOptions,
  RedisRegistry,
  type TunnelServerOptions,
} from "../lib/tunnel/mod.ts";
import { startTunnel, type TestTunnel } from "./_tunnel.ts";

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
