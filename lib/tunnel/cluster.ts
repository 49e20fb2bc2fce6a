/**
 * Any instance serves any host (issue 19): a public request reaching instance A for a client
 * held by instance B travels A -> B over one long-lived, token-authenticated mux link per
 * pair of instances, one stream per request. The stream's SYN frame carries a small frame
 * naming the client (its identifier's digest), then exactly what A would have sent a local
 * client (the ControlMsg and the already-read request), so the hand-over costs no extra
 * round trip; B opens a stream to its client with those bytes in the SYN and relays both
 * ways (half-close and all). Instances find each other through the Redis registry
 * (`advertise` of their instance record).
 *
 * Redis unreachable: an instance that cannot tell where a client is (no lease read, no last
 * holder) or what a host is (not in its copy) asks its peers over the links (`{ask: digest}`,
 * `{askHost: host}`, one answer frame each); see {@linkcode ClusterLinks.remoteClient}.
 *
 * TLS (`tls`): lib/transport's TLS on both ends of every link, like etcd's peer TLS: each
 * instance serves its certificate on the cluster port and, when it trusts a CA for its peers,
 * presents the same certificate when it dials and requires one from the instances dialling
 * it (mutual TLS). The token is checked inside TLS as well. The links themselves (hello,
 * token, dialling, one session per peer) are lib/cluster's PeerLinks, shared with depot.
 * @module
 */

import type { SessionOptions, Stream } from "../mux/mod.ts";
import { type Logger, silentLogger } from "../log.ts";
import {
  BufferedReader,
  concatBytes,
  errorMessage,
  relay,
  type Server,
  writeAll,
} from "../net/mod.ts";
import { encodeFrame } from "../control/mod.ts";
import type { TlsClientConfig, TlsServerConfig } from "../transport/mod.ts";
import { ClientConn, clientKey } from "./client_conn.ts";
import {
  digestRef,
  fingerprint,
  identifierDigest,
  normalizeHostPattern,
  registryRetryAfterS,
  RegistryUnavailableError,
} from "./registry.ts";
import type { ClientLocation, InstanceRecord, RedisRegistry } from "./redis_registry.ts";
import type { TunnelServer } from "./server.ts";
import { linkKeepalive, PeerLinks, readLinkHeader } from "../cluster/links.ts";
import { LookupCache } from "./lookup_cache.ts";
import { PortClaims } from "./port_claims.ts";
import { encodeMessage, expectMessage } from "./protocol.ts";

/**
 * How long an instance cut off from Redis keeps its peers' "no such host" (or "cannot
 * tell") about a host: as long as the Retry-After of the 503 it answers meanwhile.
 */
export const hostAskAnswerMs = registryRetryAfterS * 1_000;

/**
 * At most this many hosts are asked about at once during an outage; a request for another
 * gets 503 without a round to every peer (random names cannot flood the links).
 */
export const maxHostAsks = 32;

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
  /** Mux options of the links. @default {@linkcode linkKeepalive} of the registry's lease */
  mux?: SessionOptions;
  /**
   * TLS on the links; the listener given to `listen()` must then be a TLS listener of
   * `tls.server` (lib/transport `listenTls`). @default plaintext
   */
  tls?: ClusterTls;
  /** Where link events are logged. @default silent */
  log?: Logger;
  /**
   * How long the peers' "no such host" or "cannot tell" about a host is kept during an
   * outage. @default {@linkcode hostAskAnswerMs}
   */
  hostAnswerMs?: number;
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
  /** The links to other instances (one per address, shared by concurrent requests). */
  readonly #links: PeerLinks;
  /**
   * Remote clients as ClientConns on a link (`remote` names it), by digest, with the instance
   * that held each at its last lookup: kept while the link is up, so the holder still serves
   * it when Redis loses the lease for a while.
   */
  #remote = new Map<string, { conn: ClientConn; instance: string }>();
  /** The claims of the ports clients ask for, kept beside the registry. */
  readonly #claims: PortClaims;
  /** The peers being asked where a client is, by digest (one round for concurrent requests). */
  #asking = new Map<string, Promise<ClientConn | undefined>>();
  /** The peers being asked about a host, by host (at most {@linkcode maxHostAsks}). */
  #askingHost = new Map<string, Promise<string | null | undefined>>();
  /**
   * Hosts the peers lately said none has (null) or could not tell (undefined), for
   * `hostAnswerMs`: a client retrying a name during an outage asks once.
   */
  readonly #hostAnswers: LookupCache<null | undefined>;

  /** Links for `server`, finding peers in `registry`. */
  constructor(server: TunnelServer, registry: RedisRegistry, opts: ClusterLinksOptions) {
    this.#server = server;
    this.#registry = registry;
    this.#opts = opts;
    this.#log = (opts.log ?? silentLogger).child({ cluster: registry.instance });
    this.#links = new PeerLinks({
      token: opts.token,
      from: registry.instance,
      tls: opts.tls?.client,
      mux: opts.mux ?? linkKeepalive(registry.leaseMs),
      log: this.#log,
      onStream: (s) => void this.#serveStream(s),
    });
    this.#hostAnswers = new LookupCache(opts.hostAnswerMs ?? hostAskAnswerMs, 1_024);
    this.#claims = new PortClaims(registry, this.#log);
    registry.extend(this.#claims);
  }

  /**
   * Route requests for clients held elsewhere through the links, and make the ports clients
   * ask for span the cluster (claimed in the registry, bound on every instance).
   */
  attach(): void {
    this.#server.remoteClient = (identifier) => this.remoteClient(identifier);
    this.#registry.askPeersForHost = (host) => this.#askHost(host);
    this.#server.attachPortClaims(this.#claims);
  }

  /**
   * Serve other instances' links on `listener` (the `--cluster-listen` address): a TCP
   * listener, or with `tls` a TLS one (which hands out only handshaken connections).
   */
  listen(listener: Deno.Listener<Deno.Conn, Deno.NetAddr>): Server {
    return this.#links.serve(listener);
  }

  /**
   * One request from another instance: hand it to the local client, relay both ways. When
   * the client is not held here (the sender's cache was stale), look it up afresh and pass
   * the stream on to the instance holding it, once (`hop`), so the request is still served.
   */
  async #serveStream(s: Stream): Promise<void> {
    const reader = new BufferedReader(s);
    try {
      const h = await readLinkHeader(reader);
      if (typeof h?.ask === "string") {
        await this.#answerAsk(s, h.ask);
        return;
      }
      if (typeof h?.askHost === "string") {
        await this.#answerAskHost(s, h.askHost);
        return;
      }
      const d = typeof h?.client === "string" ? h.client : "";
      const identifier = this.#registry.knownIdentifier(d);
      const client = identifier !== undefined ? this.#server.localClient(identifier) : undefined;
      let head: Uint8Array | undefined;
      if (client && (client.access || client.rewrite)) {
        // Its own access rules and rewrites are applied where an HTTP request is parsed, on
        // the instance the public request reached: not there, so HTTP is served only here.
        // They are rules of its hosts: a TCP or UDP port's streams pass.
        const msg = await expectMessage(reader, "controlMsg");
        if (msg.transportProtocol === "http") {
          this.#log.warn(
            "cluster stream refused: the client set its own access rules or rewrites",
            { client: d.slice(0, 12) },
          );
          s.reset();
          return;
        }
        head = encodeMessage(msg);
      }
      let out: Stream | undefined;
      if (client) {
        const rest = reader.takeBuffered();
        out = await client.session.open({ data: head ? concatBytes(head, rest) : rest });
      } else if (d && h?.hop === undefined) out = await this.#passOn(d, reader.takeBuffered());
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

  /**
   * Another instance, which Redis cannot answer, asks whether the client of digest `d` is
   * held here (`{ask: d}`): one frame `{held}`, then the stream ends.
   */
  async #answerAsk(s: Stream, d: string): Promise<void> {
    const identifier = this.#registry.knownIdentifier(d);
    const held = identifier !== undefined && this.#server.localClient(identifier) !== undefined;
    await writeAll(s, encodeFrame({ held }));
    s.close();
  }

  /** Open the stream of client `d` on the link to the instance holding it now, if another. */
  async #passOn(d: string, rest: Uint8Array): Promise<Stream | undefined> {
    const identifier = digestRef(d);
    this.#registry.forget(identifier);
    const at = await this.#registry.locate(identifier, true).catch(() => undefined);
    if (!at?.inst?.advertise || at.rec.instance === this.#registry.instance) return undefined;
    const session = await this.#links.link(at.inst.advertise);
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
   * the entry is dropped and looked up afresh once. When Redis cannot say where it is
   * (unreachable, or restarted empty before the holder wrote its lease back), the link to
   * the instance that held it at the last lookup serves it (`#lastHolder`); with no last
   * holder, a lookup in the moment after Redis lost its records waits for the holder's
   * write-back (`awaitWriteBack`, bounded by the registry's `settleMs`), and one while Redis
   * is unreachable asks the peers (`#askPeers`; throws RegistryUnavailableError when that
   * cannot be told).
   */
  async remoteClient(identifier: string): Promise<ClientConn | undefined> {
    const d = identifierDigest(identifier);
    for (let fresh = false;; fresh = true) {
      let at: ClientLocation | undefined;
      let unreachable = false;
      try {
        at = await this.#registry.locate(identifier, fresh);
      } catch {
        // Redis is unreachable: the last holder's link may still serve it (below).
        unreachable = true;
      }
      if (at?.rec.instance === this.#registry.instance) {
        this.#remote.delete(d);
        return undefined;
      }
      if (!at?.inst?.advertise) {
        const knew = this.#remote.has(d);
        const last = await this.#lastHolder(identifier, d, at, unreachable);
        if (!last && unreachable) return await this.#askPeers(identifier, d);
        // Redis lost its records a moment ago and no holder is known (a known one that wrote
        // its records back without the lease has lost the client): it may not have written
        // them back yet.
        if (last || knew || unreachable || !(await this.#registry.awaitWriteBack(identifier, at))) {
          return last;
        }
        continue;
      }
      const addr = at.inst.advertise;
      try {
        return await this.#connTo(identifier, d, addr, at.rec.instance);
      } catch (err) {
        this.#log.warn("cluster link failed", { peer: addr, error: errorMessage(err) });
        this.#registry.forget(identifier, at.rec.instance);
        if (!at.cached) return undefined;
      }
    }
  }

  /**
   * The client of `identifier` (digest `d`) held by `instance` at `addr`, as a ClientConn on
   * the link to it, kept as its last holder while that link lives.
   */
  async #connTo(
    identifier: string,
    d: string,
    addr: string,
    instance: string,
  ): Promise<ClientConn> {
    const have = this.#remote.get(d);
    if (have?.conn.remote === `cluster:${addr}`) return have.conn;
    const session = await this.#links.link(addr);
    const c = new ClientConn(
      0,
      fingerprint(identifier),
      `cluster:${addr}`,
      session,
      clientKey(identifier),
    );
    c.streamPrefix = encodeFrame({ client: d });
    c.ready = true;
    const entry = { conn: c, instance };
    this.#remote.set(d, entry);
    session.closed.then(() => {
      if (this.#remote.get(d) === entry) this.#remote.delete(d);
    });
    return c;
  }

  /**
   * Redis cannot be reached and no link served the client of digest `d` before: ask every
   * instance live at the registry's last heartbeat, over its link, whether it holds it
   * (concurrent requests for one client share the round). The one that does serves it, and
   * is its last holder from then on. When every one answered no, it is connected nowhere:
   * undefined (no-client). When some could not answer (link down, an older instance), that
   * is not known: {@linkcode RegistryUnavailableError} (the request gets 503 and a
   * Retry-After, not a definitive no-client).
   */
  #askPeers(identifier: string, d: string): Promise<ClientConn | undefined> {
    let round = this.#asking.get(d);
    if (!round) {
      round = this.#ask(identifier, d).finally(() => this.#asking.delete(d));
      this.#asking.set(d, round);
    }
    return round;
  }

  /**
   * Ask every instance of the registry's last copy one `question` over its link: the answer
   * frame of each, or null when it could not be asked or did not answer (an older instance
   * resets the stream; the read is bounded by the links' handshake time).
   */
  async #askAll(
    question: Record<string, unknown>,
  ): Promise<{ peers: InstanceRecord[]; answers: (Record<string, unknown> | null)[] }> {
    const peers = this.#registry.peers().filter((p) => p.advertise !== undefined);
    const answers = await Promise.all(peers.map(async (p) => {
      try {
        const s = await (await this.#links.link(p.advertise!)).open({
          data: encodeFrame(question),
        });
        try {
          return await readLinkHeader(new BufferedReader(s));
        } finally {
          s.close();
        }
      } catch (err) {
        this.#log.debug("cluster peer not asked", { peer: p.name, error: errorMessage(err) });
        return null;
      }
    }));
    return { peers, answers };
  }

  async #ask(identifier: string, d: string): Promise<ClientConn | undefined> {
    const asked = await this.#askAll({ ask: d });
    const peers = asked.peers;
    const answers = asked.answers.map((a) => typeof a?.held === "boolean" ? a.held : undefined);
    const at = answers.indexOf(true);
    if (at >= 0) {
      this.#log.info("registry unreachable: a peer holds the client", {
        client: d.slice(0, 12),
        peer: peers[at].name,
      });
      return await this.#connTo(identifier, d, peers[at].advertise!, peers[at].name);
    }
    if (answers.every((a) => a === false)) return undefined;
    const silent = peers.filter((_, i) => answers[i] === undefined).map((p) => p.name);
    throw new RegistryUnavailableError(
      "find client",
      new Error(`no instance that answered holds it; not answered: ${silent.join(", ")}`),
    );
  }

  /**
   * The registry cannot route `host` (Redis unreachable, not in its copy): ask the peers
   * (concurrent requests for one host share the round). The digest one of them gives; null
   * when every one answered that there is no such host; undefined when that cannot be told.
   */
  #askHost(host: string): Promise<string | null | undefined> {
    let round = this.#askingHost.get(host);
    if (round) return round;
    const answered = this.#hostAnswers.get(host);
    if (answered) return Promise.resolve(answered.value);
    if (this.#askingHost.size >= maxHostAsks) {
      // A flood of names during an outage: not asked, so not known (503, retry later).
      this.#log.debug("cluster host not asked: too many asks under way", { host });
      return Promise.resolve(undefined);
    }
    const epoch = this.#hostAnswers.epoch;
    round = this.#askAll({ askHost: host }).then(({ answers }) => {
      const found = answers.find((a) => typeof a?.digest === "string");
      if (found) return found.digest as string;
      const none = answers.every((a) => a?.digest === null) ? null : undefined;
      this.#hostAnswers.set(host, none, epoch);
      return none;
    }).finally(() => this.#askingHost.delete(host));
    this.#askingHost.set(host, round);
    return round;
  }

  /**
   * A peer that cannot route `host` asks (`{askHost}`): `{digest}` as this instance knows it,
   * null when it has no such host: Redis says so, or, Redis unreachable here too, the copy
   * lacks it (a host cannot be added anywhere while Redis is down for all, and one added
   * through this instance or announced to it is in the copy); then the stream ends.
   */
  async #answerAskHost(s: Stream, host: string): Promise<void> {
    const d = await this.#registry.hostHere(normalizeHostPattern(host));
    await writeAll(s, encodeFrame({ digest: d ?? null }));
    s.close();
  }

  /**
   * No live lease and instance record say where the client of digest `d` is: Redis is
   * `unreachable`, or restarted empty (or lost the keys) and the holder has not written them
   * back yet. Rather than refuse what could be served, use the link to the instance that held
   * it at the last lookup, while that link is up and the registry cannot rule it out
   * (`mayHold`; `at`, a lease whose instance record is missing, must name the same
   * instance). Should that instance have lost the client, it refuses the stream itself
   * (`#serveStream`).
   */
  async #lastHolder(
    identifier: string,
    d: string,
    at: ClientLocation | undefined,
    unreachable: boolean,
  ): Promise<ClientConn | undefined> {
    const last = this.#remote.get(d);
    if (
      last && (at === undefined || at.rec.instance === last.instance) &&
      (unreachable || await this.#registry.mayHold(identifier, last.instance))
    ) {
      this.#log.debug("no lease in the registry: the client's last holder serves it", {
        client: d.slice(0, 12),
        peer: last.instance,
      });
      return last.conn;
    }
    if (this.#remote.get(d) === last) this.#remote.delete(d);
    return undefined;
  }

  /** Close every link and the cluster port. */
  async close(): Promise<void> {
    this.#server.remoteClient = undefined;
    this.#registry.askPeersForHost = undefined;
    this.#server.attachPortClaims(undefined);
    this.#remote.clear();
    await Promise.allSettled([...this.#asking.values(), ...this.#askingHost.values()]);
    await this.#links.close();
  }
}
