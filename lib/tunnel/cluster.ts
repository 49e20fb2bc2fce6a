/**
 * Any instance serves any host (issue 19): a public request reaching instance A for a client
 * held by instance B travels A → B over one long-lived, token-authenticated mux link per
 * pair of instances, one stream per request. The stream's SYN frame carries a small frame
 * naming the client (its identifier's digest), then exactly what A would have sent a local
 * client (the ControlMsg and the already-read request), so the hand-over costs no extra
 * round trip; B opens a stream to its client with those bytes in the SYN and relays both
 * ways (half-close and all). Instances find each other through the Redis registry
 * (`advertise` of their instance record).
 *
 * TLS (`tls`): lib/transport's TLS on both ends of every link, like etcd's peer TLS: each
 * instance serves its certificate on the cluster port and, when it trusts a CA for its peers,
 * presents the same certificate when it dials and requires one from the instances dialling
 * it (mutual TLS). The token is checked inside TLS as well.
 * @module
 */

import { Session, type SessionOptions, type Stream } from "../mux/mod.ts";
import { type Logger, silentLogger } from "../log.ts";
import {
  BufferedReader,
  closeQuietly,
  concatBytes,
  type ConnHandler,
  type Duplex,
  errorMessage,
  relay,
  serve,
  type Server,
  timingSafeEqual,
  withPrefix,
  writeAll,
} from "../net/mod.ts";
import { encodeFrame, readFrameJson } from "../control/mod.ts";
import { dialTransport, type TlsClientConfig, type TlsServerConfig } from "../transport/mod.ts";
import { ClientConn, clientKey } from "./client_conn.ts";
import { digestRef, fingerprint, identifierDigest } from "./registry.ts";
import type { RedisRegistry } from "./redis_registry.ts";
import type { TunnelServer } from "./server.ts";

/** Time a peer has to send its link handshake (and to answer ours). */
export const clusterHandshakeTimeoutMs = 5_000;
/** Largest link or stream header frame. */
const maxHeaderBytes = 4096;
/** Time to connect to a peer (TCP and TLS handshake). */
export const clusterDialTimeoutMs = 5_000;

/** TLS of the links: the same lib/transport options as every other warren link. */
export interface ClusterTls {
  /**
   * This instance's certificate, served on the cluster port; with `client.ca` set, a client
   * certificate is required of the peers (`server.ca` = the same CA) and `client.cert` is
   * presented when dialling. A certificate used both ways needs both extended key usages.
   */
  server: TlsServerConfig;
  /** Trust (and identity, for mutual TLS) when dialling a peer. */
  client: TlsClientConfig;
}

/** Options of {@linkcode ClusterLinks}. */
export interface ClusterLinksOptions {
  /** The shared secret every instance of the cluster presents on its links. */
  token: string;
  /** Mux options of the links (keepalive). */
  mux?: SessionOptions;
  /**
   * TLS on the links; the listener given to `listen()` must then be a TLS listener of
   * `tls.server` (lib/transport `listenTls`). @default plaintext
   */
  tls?: ClusterTls;
  /** Where link events are logged. @default silent */
  log?: Logger;
}

/** Read one JSON frame within the handshake time; null on EOF or timeout. */
async function readHeader(r: BufferedReader): Promise<Record<string, unknown> | null> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<null>((res) =>
    timer = setTimeout(() => res(null), clusterHandshakeTimeoutMs)
  );
  try {
    const f = await Promise.race([readFrameJson(r, maxHeaderBytes), timeout]);
    return f && typeof f.json === "object" && f.json !== null
      ? f.json as Record<string, unknown>
      : null;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The links of one instance: serves the cluster port (streams from other instances to the
 * clients held here) and dials the instances holding clients this one does not.
 * `attach()` makes the TunnelServer route to remote clients through it.
 */
export class ClusterLinks {
  readonly #server: TunnelServer;
  readonly #registry: RedisRegistry;
  readonly #opts: ClusterLinksOptions;
  readonly #log: Logger;
  /** Live links to other instances by address (one dial shared by concurrent requests). */
  #links = new Map<string, Promise<Session>>();
  /** Remote clients as ClientConns on a link, by digest (`remote` names the link). */
  #remote = new Map<string, ClientConn>();
  #listener?: Server;

  /** Links for `server`, finding peers in `registry`. */
  constructor(server: TunnelServer, registry: RedisRegistry, opts: ClusterLinksOptions) {
    this.#server = server;
    this.#registry = registry;
    this.#opts = opts;
    this.#log = (opts.log ?? silentLogger).child({ cluster: registry.instance });
  }

  /** Route requests for clients held elsewhere through the links. */
  attach(): void {
    this.#server.remoteClient = (identifier) => this.remoteClient(identifier);
  }

  /**
   * Serve other instances' links on `listener` (the `--cluster-listen` address): a TCP
   * listener, or with `tls` a TLS one (which hands out only handshaken connections).
   */
  listen(listener: Deno.Listener<Deno.Conn, Deno.NetAddr>): Server {
    const handler: ConnHandler = (conn, ctx) => this.#accept(conn, ctx);
    this.#listener = serve(listener, handler, { log: this.#log, name: "cluster" });
    return this.#listener;
  }

  async #accept(conn: Deno.Conn, ctx: { handshakeDone(): void }): Promise<void> {
    const reader = new BufferedReader(conn);
    const at = conn.remoteAddr as Deno.NetAddr;
    const remote = `${at.hostname}:${at.port}`;
    let hello: Record<string, unknown> | null;
    try {
      hello = await readHeader(reader);
    } catch (err) {
      this.#log.warn("cluster link refused", { remote, failure: errorMessage(err) });
      return;
    }
    if (
      !hello || typeof hello.token !== "string" || !timingSafeEqual(hello.token, this.#opts.token)
    ) {
      this.#log.warn("cluster link refused", { remote, failure: hello ? "bad-token" : "no-hello" });
      await writeAll(conn, encodeFrame({ ok: false, error: "bad token" })).catch(() => {
        // The peer left: nothing to tell.
      });
      return;
    }
    ctx.handshakeDone();
    await writeAll(conn, encodeFrame({ ok: true }));
    const session = Session.server(withPrefix(conn, reader.takeBuffered()), this.#opts.mux);
    this.#log.info("cluster link up", { remote, peer: String(hello.from ?? "?") });
    while (true) {
      // A failed accept means the link is over.
      const s = await session.accept().catch(() => null);
      if (s === null) break;
      void this.#serveStream(s);
    }
    this.#log.info("cluster link down", { remote });
  }

  /**
   * One request from another instance: hand it to the local client, relay both ways. When
   * the client is not held here (the sender's cache was stale), look it up afresh and pass
   * the stream on to the instance holding it, once (`hop`), so the request is still served.
   */
  async #serveStream(s: Stream): Promise<void> {
    const reader = new BufferedReader(s);
    try {
      const h = await readHeader(reader);
      const d = typeof h?.client === "string" ? h.client : "";
      const identifier = this.#registry.knownIdentifier(d);
      const client = identifier !== undefined ? this.#server.localClient(identifier) : undefined;
      if (client && (client.access || client.rewrite)) {
        // Its own access rules and rewrites are applied where a request is parsed, on the
        // instance the public request reached: not there, so it is served only here.
        this.#log.warn("cluster stream refused: the client set its own access rules or rewrites", {
          client: d.slice(0, 12),
        });
        s.reset();
        return;
      }
      let out: Stream | undefined;
      if (client) out = await client.session.open({ data: reader.takeBuffered() });
      else if (d && h?.hop === undefined) out = await this.#passOn(d, reader.takeBuffered());
      if (!out) {
        this.#log.warn("cluster stream for a client not held here", { client: d.slice(0, 12) });
        s.reset();
        return;
      }
      await relay(s, out);
    } catch (err) {
      this.#log.debug("cluster stream failed", { error: errorMessage(err) });
      s.reset();
    }
  }

  /** Open the stream of client `d` on the link to the instance holding it now, if another. */
  async #passOn(d: string, rest: Uint8Array): Promise<Stream | undefined> {
    const identifier = digestRef(d);
    this.#registry.forget(identifier);
    const at = await this.#registry.locate(identifier, true).catch(() => undefined);
    if (!at?.inst?.advertise || at.rec.instance === this.#registry.instance) return undefined;
    const session = await this.#link(at.inst.advertise);
    this.#log.info("cluster stream passed on to the instance holding the client", {
      client: d.slice(0, 12),
      peer: at.inst.advertise,
    });
    return await session.open({ data: concatBytes(encodeFrame({ client: d, hop: 1 }), rest) });
  }

  /**
   * The client of `identifier` held by another instance, as a ClientConn whose streams go
   * over the link to it; undefined when no live instance holds it or it cannot be reached.
   * Where it is held comes from the registry's cache; when the link to a cached place fails,
   * the entry is dropped and looked up afresh once.
   */
  async remoteClient(identifier: string): Promise<ClientConn | undefined> {
    const d = identifierDigest(identifier);
    for (let fresh = false;; fresh = true) {
      const at = await this.#registry.locate(identifier, fresh).catch(() => undefined);
      if (!at || at.rec.instance === this.#registry.instance || !at.inst?.advertise) {
        this.#remote.delete(d);
        return undefined;
      }
      const addr = at.inst.advertise;
      const have = this.#remote.get(d);
      if (have?.remote === `cluster:${addr}`) return have;
      try {
        const session = await this.#link(addr);
        const c = new ClientConn(
          0,
          fingerprint(identifier),
          `cluster:${addr}`,
          session,
          clientKey(identifier),
        );
        c.streamPrefix = encodeFrame({ client: d });
        c.ready = true;
        this.#remote.set(d, c);
        return c;
      } catch (err) {
        this.#log.warn("cluster link failed", { peer: addr, error: errorMessage(err) });
        this.#registry.forget(identifier, at.rec.instance);
        if (!at.cached) return undefined;
      }
    }
  }

  #link(addr: string): Promise<Session> {
    let p = this.#links.get(addr);
    if (!p) {
      p = this.#dial(addr);
      this.#links.set(addr, p);
      const forget = () => {
        if (this.#links.get(addr) === p) this.#links.delete(addr);
        for (const [d, c] of this.#remote) {
          if (c.remote === `cluster:${addr}`) this.#remote.delete(d);
        }
      };
      p.then((s) => s.closed.then(forget), forget);
    }
    return p;
  }

  async #dial(addr: string): Promise<Session> {
    const i = addr.lastIndexOf(":");
    const tls = this.#opts.tls;
    const conn: Duplex = await dialTransport({
      kind: tls ? "tls" : "tcp",
      host: addr.slice(0, i).replace(/^\[|\]$/g, ""),
      port: Number(addr.slice(i + 1)),
      path: "/",
    }, { timeoutMs: clusterDialTimeoutMs, ...(tls ? { tls: tls.client } : {}) });
    try {
      await writeAll(conn, encodeFrame({ token: this.#opts.token, from: this.#registry.instance }));
      const reader = new BufferedReader(conn);
      const answer = await readHeader(reader);
      if (answer?.ok !== true) {
        throw new Error(`peer refused the link: ${String(answer?.error ?? "no answer")}`);
      }
      const session = Session.client(withPrefix(conn, reader.takeBuffered()), this.#opts.mux);
      this.#log.info("cluster link up", { peer: addr });
      return session;
    } catch (err) {
      closeQuietly(conn);
      throw err;
    }
  }

  /** Close every link and the cluster port. */
  async close(): Promise<void> {
    this.#server.remoteClient = undefined;
    const links = [...this.#links.values()];
    this.#links.clear();
    this.#remote.clear();
    for (const p of links) {
      await p.then((s) => s.close(), () => {
        // That link never came up: nothing to close.
      });
    }
    await this.#listener?.stop(0);
  }
}
