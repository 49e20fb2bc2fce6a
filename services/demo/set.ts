/**
 * The whole demo set on loopback with free ports and generated secrets: an origin, seaprox
 * (static, SOCKS5, HTTP listeners and a link:// pair), depot-server + depot-local,
 * tunnel-server + tunnel-client serving a vhost of the origin, fusion-server +
 * fusion-client over two paths; the check of each path, and the command to try it by hand.
 * @module
 */

import type { LogLevel } from "../../lib/log.ts";
import { errorMessage, type HostPort } from "../../lib/net/mod.ts";
import {
  type DemoCheck,
  type DemoOrigin,
  demoPayload,
  demoPayloadBytes,
  expectBody,
  type Fetched,
  helloText,
  httpGet,
  startDemoOrigin,
  viaConnect,
  viaSocks5,
  withConn,
  wsEcho,
} from "../../lib/demo/mod.ts";
import { randomSecret } from "../../lib/control/mod.ts";
import {
  type DemoNode,
  type NodeContext,
  startDepotLocalNode,
  startDepotServerNode,
  startFusionClientNode,
  startFusionServerNode,
  startSeaproxNode,
  startTunnelClientNode,
  startTunnelServerNode,
} from "./nodes.ts";

/** The tunnel's virtual host (curl resolves *.localhost to loopback by itself). */
export const demoVhost = "demo.localhost";

/** A command to try one service by hand. */
export interface TryCommand {
  service: string;
  command: string;
}

/** The running set. */
export interface DemoSet {
  origin: DemoOrigin;
  nodes: DemoNode[];
  checks: DemoCheck[];
  commands: TryCommand[];
  /** Stop every service (clients first), then the origin. */
  stop(): Promise<void>;
}

/**
 * Start one wave of nodes together (each may take its own time to bind or connect). If any
 * fails, stop every node started so far (`started`, this wave's included) and throw naming
 * the one that failed.
 */
async function startWave<W extends Record<string, Promise<DemoNode>>>(
  started: DemoNode[],
  wave: W,
): Promise<{ [K in keyof W]: Awaited<W[K]> }> {
  const names = Object.keys(wave);
  const results = await Promise.allSettled(Object.values(wave));
  for (const r of results) if (r.status === "fulfilled") started.push(r.value);
  const failed = results.findIndex((r) => r.status === "rejected");
  if (failed >= 0) {
    await stopAll(started);
    const reason = (results[failed] as PromiseRejectedResult).reason;
    throw new Error(`${names[failed]} did not start: ${errorMessage(reason)}`);
  }
  const out: Record<string, DemoNode> = {};
  names.forEach((name, i) => out[name] = (results[i] as PromiseFulfilledResult<DemoNode>).value);
  return out as { [K in keyof W]: Awaited<W[K]> };
}

async function stopAll(nodes: DemoNode[]): Promise<void> {
  for (const n of [...nodes].reverse()) await n.stop();
}

/** Start the set; `pages` also serves each service's live status page. */
export async function startDemoSet(opts: { level: LogLevel; pages: boolean }): Promise<DemoSet> {
  const origin = startDemoOrigin();
  const user = "demo", pass = randomSecret(), identifier = randomSecret();
  const ctx: NodeContext = {
    ...opts,
    env: {
      SEAPROX_LINK_TOKEN: randomSecret(),
      DEPOT_TOKEN: randomSecret(),
      FUSION_TOKEN: randomSecret(),
      TUNNEL_IDENTIFIER: identifier,
    },
  };
  const any = "127.0.0.1:0";
  const nodes: DemoNode[] = [];
  try {
    const {
      seaprox: front,
      "depot-server": depotServer,
      "tunnel-server": tunnelServer,
      "fusion-server": fusionServer,
    } = await startWave(nodes, {
      seaprox: startSeaproxNode("seaprox", [
        "--listen",
        `static://${any}?to=${origin.addr}`,
        "--listen",
        `socks5://${user}:${pass}@${any}`,
        "--listen",
        `http://${user}:${pass}@${any}`,
        "--listen",
        `link://${any}`,
      ], ctx),
      "depot-server": startDepotServerNode(
        ["--control", any, "--socks", any, "--tunnel", any],
        ctx,
      ),
      // Also as localhost: for clients that cannot set Host (WebSocket in a browser or Deno).
      "tunnel-server": startTunnelServerNode([
        "--listen",
        any,
        "--host",
        `${demoVhost}=${identifier}`,
        "--host",
        `localhost=${identifier}`,
      ], ctx),
      "fusion-server": startFusionServerNode(["--listen", any, "--target", origin.addr], ctx),
    });
    const fusionPath = `127.0.0.1:${fusionServer.port}`;
    const { "seaprox-via": via, "fusion-client": fusionClient } = await startWave(nodes, {
      "seaprox-via": startSeaproxNode("seaprox-via", [
        "--listen",
        `static://${any}?to=${origin.addr}`,
        "--via",
        `link://127.0.0.1:${front.linkPorts[0]}`,
      ], ctx),
      "depot-local": startDepotLocalNode([
        "--server",
        `127.0.0.1:${depotServer.addrs.control.port}`,
        "--tunnel",
        `127.0.0.1:${depotServer.addrs.tunnel.port}`,
      ], ctx),
      "tunnel-client": startTunnelClientNode([
        "--server",
        `http://127.0.0.1:${tunnelServer.port}`,
        "--local",
        origin.addr,
      ], ctx),
      "fusion-client": startFusionClientNode(
        ["--listen", any, "--path", fusionPath, "--path", fusionPath],
        ctx,
      ),
    });
    const [staticPort, socksPort, httpPort] = front.ports;
    const originHp: HostPort = { host: "127.0.0.1", port: origin.port };
    const auth = { user, pass };
    const target = origin.addr;
    /** A small GET and a large one, each on a new connection from `get`. */
    const smallAndLarge = (get: (path: string) => Promise<Fetched>) => async () =>
      expectBody(await get("/hello"), helloText) +
      expectBody(await get(`/bytes/${demoPayloadBytes}`), demoPayload(demoPayloadBytes));
    const at = (p: number) => `:${p}`;
    const checks: DemoCheck[] = [
      {
        path: "seaprox static",
        through: `static ${at(staticPort)} -> origin`,
        service: "seaprox",
        run: smallAndLarge((p) => withConn(staticPort, (c) => httpGet(c, target, p))),
      },
      {
        path: "seaprox socks5",
        through: `SOCKS5 ${at(socksPort)}, user:pass -> origin`,
        service: "seaprox",
        run: smallAndLarge((p) =>
          withConn(socksPort, async (c) => httpGet(await viaSocks5(c, originHp, auth), target, p))
        ),
      },
      {
        path: "seaprox http CONNECT",
        through: `HTTP proxy ${at(httpPort)}, CONNECT, user:pass -> origin`,
        service: "seaprox",
        run: smallAndLarge((p) =>
          withConn(httpPort, async (c) => httpGet(await viaConnect(c, target, auth), target, p))
        ),
      },
      {
        path: "seaprox http forward",
        through: `HTTP proxy ${at(httpPort)}, GET http://origin/, user:pass`,
        service: "seaprox",
        run: smallAndLarge((p) =>
          withConn(httpPort, (c) => httpGet(c, target, `http://${target}${p}`, auth))
        ),
      },
      {
        path: "seaprox link",
        through: `static ${at(via.ports[0])} -> link ${at(front.linkPorts[0])}, token -> origin`,
        service: "seaprox link:// pair",
        run: smallAndLarge((p) => withConn(via.ports[0], (c) => httpGet(c, target, p))),
      },
      {
        path: "depot",
        through: `depot-server SOCKS5 ${at(depotServer.addrs.socks.port)} -> depot-local, token`,
        service: "depot-server + depot-local",
        run: smallAndLarge((p) =>
          withConn(
            depotServer.addrs.socks.port,
            async (c) => httpGet(await viaSocks5(c, originHp), target, p),
          )
        ),
      },
      {
        path: "tunnel http",
        through: `tunnel-server ${at(tunnelServer.port)}, Host ${demoVhost} -> tunnel-client`,
        service: "tunnel-server + tunnel-client",
        run: smallAndLarge((p) => withConn(tunnelServer.port, (c) => httpGet(c, demoVhost, p))),
      },
      {
        path: "tunnel websocket",
        through: `tunnel-server ${at(tunnelServer.port)}, ws://${demoVhost}/ws -> echo`,
        service: "tunnel-server + tunnel-client",
        run: () => withConn(tunnelServer.port, (c) => wsEcho(c, demoVhost, demoPayloadBytes)),
      },
      {
        path: "fusion",
        through: `fusion-client ${at(fusionClient.port)} -> 2 paths, token -> fusion-server`,
        service: "fusion-client + fusion-server",
        run: smallAndLarge((p) => withConn(fusionClient.port, (c) => httpGet(c, target, p))),
      },
    ];
    const hello = `http://${target}/hello`;
    const proxyAuth = `-U ${user}:${pass}`;
    const wsScript = `const ws = new WebSocket('ws://localhost:${tunnelServer.port}/ws'); ` +
      `ws.onopen = () => ws.send('hello over a websocket'); ` +
      `ws.onmessage = (e) => { console.log(e.data); ws.close(); };`;
    const commands: TryCommand[] = [
      { service: "seaprox static", command: `curl -s http://127.0.0.1:${staticPort}/hello` },
      {
        service: "seaprox socks5",
        command: `curl -s --socks5 127.0.0.1:${socksPort} ${proxyAuth} ${hello}`,
      },
      {
        service: "seaprox http",
        command: `curl -s -x http://127.0.0.1:${httpPort} ${proxyAuth} ${hello}`,
      },
      {
        service: "seaprox http CONNECT",
        command: `curl -s -p -x http://127.0.0.1:${httpPort} ${proxyAuth} ${hello}`,
      },
      { service: "seaprox link", command: `curl -s http://127.0.0.1:${via.ports[0]}/hello` },
      {
        service: "depot",
        command: `curl -s --socks5 127.0.0.1:${depotServer.addrs.socks.port} ${hello}`,
      },
      {
        service: "tunnel http",
        command: `curl -s -H 'Host: ${demoVhost}' http://127.0.0.1:${tunnelServer.port}/hello`,
      },
      { service: "tunnel websocket", command: `deno eval "${wsScript}"` },
      { service: "fusion", command: `curl -s http://127.0.0.1:${fusionClient.port}/hello` },
    ];
    return {
      origin,
      nodes,
      checks,
      commands,
      stop: async () => {
        await stopAll(nodes);
        await origin.close();
      },
    };
  } catch (err) {
    await origin.close();
    throw err;
  }
}
