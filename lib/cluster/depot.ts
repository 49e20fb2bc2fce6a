/**
 * depot-server as a cluster (issue 19): a SOCKS client on any instance reaches an exit
 * (depot-local) held by another. Each instance writes a lease in Redis for every exit it
 * holds (`<prefix>depot:exit:<name>` -> its instance name, where its cluster port is
 * reached, and the exit's SOCKS password as an HMAC keyed with the cluster token, never in
 * clear), refreshed every heartbeat and written at once when an exit connects; it reads the
 * others' leases on the same beat, so where an exit is held is known within a heartbeat and
 * the SOCKS handshake needs no Redis round trip. An exit name connected to two instances
 * stays with the one it connected to last (lib/cluster/lease.ts). Each instance also keeps a
 * lease of its own (`<prefix>depot:instance:<name>`), so any instance's status lists the live
 * ones ({@linkcode DepotClusterView}). A request for an exit held elsewhere goes
 * over the {@linkcode PeerLinks} link to that instance as one stream whose first frame is the
 * request (`{exit, host, port}`); the holder connects through its exit and answers one frame
 * (`{ok, bound}` or `{ok: false, reason, message}`) before the bytes flow both ways. A UDP
 * ASSOCIATE is the same with `{exit, udp: true}`: the client's relay socket stays on the
 * instance it reached, and the association's framed datagrams (lib/udp `DatagramStream`) ride
 * the stream; the holder passes them on over its tunnel to the exit and the answers back,
 * counted as relay "depot-cluster", within its own queued-byte bound. The stream ends with the
 * association (client gone, idle timeout: the instance the client reached closes it), with
 * the exit, or with the link.
 *
 * Redis unreachable: instances keep serving the exits they hold and the leases they last
 * read (until those expire); requests for exits known nowhere get 0x03 as without a cluster.
 * Redis lost its records (FLUSHALL, a restart without persistence): an instance notices at its
 * next beat (its own instance lease gone), writes its leases back in that beat (at once in
 * another beat when the loss fell inside one), and for a settle window (a lease time and the
 * longest reconnect wait) keeps routing to the exits it read before the loss that are not yet
 * back, so its SOCKS clients are not refused while the holders write back (an exit that left
 * meanwhile is answered by its old holder: no such exit there). It also nudges the instances
 * it knew over their links (`{lost: 1}`, no answer): each runs a beat at once, finds its own
 * lease gone and writes its leases back, instead of at its next beat (the tunnel registry's
 * `l:` notice does the same there).
 * @module
 */

import { type Logger, silentLogger } from "../log.ts";
import {
  BufferedReader,
  closeQuietly,
  type Duplex,
  errorMessage,
  type NetFailureReason,
  relay,
  timingSafeEqual,
  withPrefix,
  writeAll,
} from "../net/mod.ts";
import { hmacSha256Hex } from "../net/sha256.ts";
import { encodeFrame, randomSecret, readFrameJson } from "../control/mod.ts";
import type { Stream } from "../mux/mod.ts";
import type { TlsClientConfig } from "../transport/mod.ts";
import {
  type DepotServer,
  type HandedAssociationEnd,
  type HereRequest,
  type Outcome,
  passAssociation,
  type RemoteExit,
} from "../depot/mod.ts";
import { type Flow, FlowTable, UdpDrops, UdpTally } from "../udp/mod.ts";
import { refreshLease } from "./lease.ts";
import { linkKeepalive, linkMaxHeaderBytes, PeerLinks, readLinkHeader } from "./links.ts";
import { newRedisClient, ReconnectPauses, type RedisClient as Client } from "./reconnect.ts";

/** Options of {@linkcode DepotCluster}. */
export interface DepotClusterOptions {
  /** redis:// or rediss:// URL of the shared registry. */
  url: string;
  /** The links' shared secret (also the key of the password digests). */
  token: string;
  /** Where the other instances reach this one's cluster port (`host:port`). */
  advertise: string;
  /** How often leases are written and read; a lease lives 3 of them. @default 2000 */
  heartbeatMs?: number;
  /** Key prefix in Redis. @default "warren:" */
  prefix?: string;
  /** This instance's name. @default random */
  instance?: string;
  /** TLS when dialling the peers (their cluster ports then serve TLS). */
  tls?: TlsClientConfig;
  /**
   * Nudge the other instances over their links when Redis lost its records, so they write
   * back at once; false leaves it to their own beats (tests of the settle window).
   * @default true
   */
  nudgeOnLoss?: boolean;
  log?: Logger;
}

/** An exit's lease as stored. */
interface ExitLease {
  instance: string;
  advertise: string;
  /** HMAC-SHA256(token, SOCKS password), hex; "" = no password. */
  auth: string;
  /** The exit carries UDP (absent in leases of older instances, which cannot hand it over). */
  udp?: boolean;
}

/** An instance's own lease (`<prefix>depot:instance:<name>`), so every one lists the live ones. */
interface InstanceLease {
  advertise: string;
  /** When it joined (ISO 8601). */
  since: string;
}

/** One live instance as {@linkcode DepotClusterView} lists it. */
export interface DepotInstanceInfo {
  name: string;
  /** Where the others reach its cluster port. */
  advertise: string;
  /** When it joined (ISO 8601). */
  since: string;
  /** How many exits' leases name it. */
  exits: number;
  /** Whether it is the instance answering. */
  self: boolean;
}

/** The cluster as one instance sees it, as of its last heartbeat (status JSON and page). */
export interface DepotClusterView {
  instance: string;
  /** Whether Redis answered the last heartbeat (if not, what was read last is shown). */
  registryUp: boolean;
  /** The live instances, by name, this one included. */
  instances: DepotInstanceInfo[];
  /** The exits the other instances hold, by name. */
  exitsElsewhere: { name: string; instance: string }[];
}

/** The Redis client's bounds: 5 s a connect, at most 5 s between reconnects. */
const redisLimits = { connectTimeoutMs: 5_000, maxReconnectDelayMs: 5_000 };

/** The cluster side of one depot-server instance; see the module doc. */
export class DepotCluster {
  readonly instance: string;
  readonly #server: DepotServer;
  readonly #opts: DepotClusterOptions;
  readonly #log: Logger;
  readonly #redis: Client;
  /** The Redis client's waits between reconnect attempts (close() outlasts them). */
  readonly #pauses: ReconnectPauses;
  readonly #links: PeerLinks;
  readonly #heartbeatMs: number;
  /** Exits held by the other instances, as last read. */
  #remote = new Map<string, ExitLease>();
  /** Names this instance wrote leases for (to delete the ones that left). */
  #written = new Set<string>();
  /** Exits that connected here since the last beat: their lease is taken outright. */
  #claims = new Set<string>();
  /** Exits held here whose lease another instance holds (the exit connected there later). */
  #ceded = new Set<string>();
  #timer?: ReturnType<typeof setInterval>;
  #beat: Promise<void> = Promise.resolve();
  #redisUp = false;
  /** The exits held elsewhere as read before Redis lost its records, kept until then. */
  #beforeLoss = new Map<string, ExitLease>();
  /** End of the settle window after a loss (performance.now() time; 0 = none). */
  #settleUntil = 0;
  /** Whether a beat wrote this instance's lease (so a later beat finding it gone = a loss). */
  #joined = false;
  /** The live instances (this one included), as last read. */
  #instances = new Map<string, InstanceLease>();
  /** A peer's nudge has a beat queued (more nudges until it runs add none). */
  #nudged = false;
  /** close() began: no beat starts from now on (a queued one is skipped). */
  #closed = false;
  readonly #since = new Date().toISOString();

  private constructor(
    server: DepotServer,
    redis: Client,
    pauses: ReconnectPauses,
    opts: DepotClusterOptions,
  ) {
    this.#server = server;
    this.#opts = opts;
    this.#redis = redis;
    this.#pauses = pauses;
    this.#heartbeatMs = opts.heartbeatMs ?? 2_000;
    this.instance = opts.instance ?? randomSecret(4);
    this.#log = (opts.log ?? silentLogger).child({ cluster: this.instance });
    this.#links = new PeerLinks({
      token: opts.token,
      from: this.instance,
      tls: opts.tls,
      mux: linkKeepalive(this.#heartbeatMs * 3),
      log: this.#log,
      onStream: (s) => void this.#serveStream(s),
    });
  }

  /** Connect to Redis (throws when it cannot), attach to `server` and start the heartbeat. */
  static async connect(server: DepotServer, opts: DepotClusterOptions): Promise<DepotCluster> {
    let connected = false;
    const pauses = new ReconnectPauses();
    const redis = await newRedisClient(opts.url, () => connected, pauses, redisLimits);
    const c = new DepotCluster(server, redis, pauses, opts);
    redis.on("error", (err: Error) => {
      if (c.#redisUp) c.#log.warn("registry unreachable", { error: errorMessage(err) });
      c.#redisUp = false;
    });
    try {
      await redis.connect();
    } catch (err) {
      // The start attempts are spent (the client is closed then). Not the URL: it may hold
      // the password.
      throw new Error(`registry unreachable: ${errorMessage(err)}`, { cause: err });
    }
    c.#redisUp = connected = true;
    server.cluster = {
      remoteExit: (name) => c.#remoteExit(name),
      exitsChanged: (connected) => {
        if (connected !== undefined) c.#claims.add(connected);
        c.#schedule();
      },
    };
    await c.#heartbeat();
    c.#timer = setInterval(() => c.#schedule(), c.#heartbeatMs);
    return c;
  }

  /**
   * The cluster as this instance sees it (the status JSON's `cluster`): its name, whether
   * Redis answers, and the exits the other instances hold, as of the last heartbeat.
   */
  view(): DepotClusterView {
    const exitsOf = new Map<string, number>();
    for (const l of this.#remote.values()) {
      exitsOf.set(l.instance, (exitsOf.get(l.instance) ?? 0) + 1);
    }
    exitsOf.set(this.instance, this.#written.size - this.#ceded.size);
    const instances = new Map(this.#instances);
    instances.set(this.instance, { advertise: this.#opts.advertise, since: this.#since });
    return {
      instance: this.instance,
      registryUp: this.#redisUp,
      instances: [...instances].map(([name, i]) => ({
        name,
        advertise: i.advertise,
        since: i.since,
        exits: exitsOf.get(name) ?? 0,
        self: name === this.instance,
      })).sort((a, b) => a.name.localeCompare(b.name)),
      exitsElsewhere: [...this.#remote].map(([name, l]) => ({ name, instance: l.instance }))
        .sort((a, b) => a.name.localeCompare(b.name)),
    };
  }

  /** Take the other instances' links on `listener` (the cluster port). */
  listen(listener: Deno.Listener<Deno.Conn, Deno.NetAddr>): void {
    this.#links.serve(listener);
  }

  #key(name: string): string {
    return `${this.#opts.prefix ?? "warren:"}depot:exit:${name}`;
  }

  #instanceKey(name: string): string {
    return `${this.#opts.prefix ?? "warren:"}depot:instance:${name}`;
  }

  /** Every value under `prefix`, by the rest of its key. */
  async #scan(prefix: string): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    for await (const keys of this.#redis.scanIterator({ MATCH: `${prefix}*`, COUNT: 500 })) {
      const batch = keys as string[];
      if (batch.length === 0) continue;
      const values = await this.#redis.mGet(batch);
      batch.forEach((k, i) => {
        const v = values[i];
        if (v) out.set(k.slice(prefix.length), v);
      });
    }
    return out;
  }

  #digest(password: string | undefined): string {
    return password === undefined ? "" : hmacSha256Hex(this.#opts.token)(password);
  }

  /**
   * One heartbeat after the current one (beats never overlap); a beat stuck on a Redis that
   * stopped answering is given up after a lease time, so the next ones still run.
   */
  #schedule(): void {
    if (this.#closed) return;
    this.#beat = this.#beat.then(async () => {
      if (!this.#closed) await bounded(this.#heartbeat(), this.#heartbeatMs * 3);
    });
  }

  /**
   * Write the leases of the exits held here, drop those that left, read everyone's (finding
   * this instance's lease gone, nudge the others unless `nudge` is false). An exit
   * that just connected takes its lease outright; the others' leases are only refreshed while
   * they are ours ({@linkcode refreshLease}): an exit name connected to two instances stays
   * with the one it connected to last instead of flipping between them every beat.
   */
  async #heartbeat(nudge = true): Promise<void> {
    const leaseMs = this.#heartbeatMs * 3;
    try {
      // First, so whoever reads one of our exit leases also finds this instance.
      const self: InstanceLease = { advertise: this.#opts.advertise, since: this.#since };
      const had = await this.#redis.eval(setReportingScript, {
        keys: [this.#instanceKey(this.instance)],
        arguments: [JSON.stringify(self), String(leaseMs)],
      });
      if (this.#joined && Number(had) === 0) this.#lost(nudge);
      this.#joined = true;
      const held = this.#server.heldExits();
      const names = new Set(held.map((e) => e.name));
      for (const e of held) {
        const key = this.#key(e.name);
        const lease = JSON.stringify(
          {
            instance: this.instance,
            advertise: this.#opts.advertise,
            auth: this.#digest(e.socksPassword),
            udp: e.carriesUdp,
          } satisfies ExitLease,
        );
        if (this.#claims.has(e.name) || !this.#written.has(e.name)) {
          this.#claims.delete(e.name);
          await this.#redis.set(key, lease, { PX: leaseMs });
          this.#ceded.delete(e.name);
          continue;
        }
        const kept = await refreshLease(this.#redis, key, lease, leaseMs, this.instance);
        if (kept !== "not-ours") {
          if (this.#ceded.delete(e.name)) this.#log.info("exit held here again", { exit: e.name });
        } else if (!this.#ceded.has(e.name)) {
          this.#ceded.add(e.name);
          this.#log.info("exit now held by another instance", { exit: e.name });
        }
      }
      for (const name of this.#claims) if (!names.has(name)) this.#claims.delete(name);
      for (const name of this.#ceded) if (!names.has(name)) this.#ceded.delete(name);
      for (const name of this.#written) {
        if (names.has(name)) continue;
        // Only our own lease: the exit may have reconnected to another instance since.
        const cur = await this.#redis.get(this.#key(name));
        if (cur && (JSON.parse(cur) as ExitLease).instance === this.instance) {
          await this.#redis.del(this.#key(name));
        }
      }
      this.#written = names;
      const remote = new Map<string, ExitLease>();
      for (const [name, v] of await this.#scan(this.#key(""))) {
        const lease = JSON.parse(v) as ExitLease;
        if (lease.instance !== this.instance) remote.set(name, lease);
      }
      const instances = new Map<string, InstanceLease>();
      for (const [name, v] of await this.#scan(this.#instanceKey(""))) {
        instances.set(name, JSON.parse(v) as InstanceLease);
      }
      if (!instances.has(this.instance)) {
        // Lost inside this beat (after our lease was written): write back in another, now.
        this.#lost(nudge);
        this.#schedule();
      }
      if (performance.now() < this.#settleUntil) {
        // Exits not back yet: their holders write back within the window.
        for (const [name, l] of this.#beforeLoss) {
          if (!remote.has(name) && !names.has(name)) remote.set(name, l);
        }
      } else {
        this.#beforeLoss.clear();
      }
      this.#instances = instances;
      const seen = (m: Map<string, ExitLease>) =>
        [...m].map(([name, l]) => `${name}@${l.instance}`).sort().join(",");
      if (seen(remote) !== seen(this.#remote)) {
        this.#log.info("exits held elsewhere", { exits: seen(remote) || "none" });
      }
      this.#remote = remote;
      if (!this.#redisUp) this.#log.info("registry reachable again");
      this.#redisUp = true;
    } catch (err) {
      // Logged once per outage by the client's error handler; what was read last stays.
      this.#log.debug("heartbeat failed", { error: errorMessage(err) });
    }
  }

  /**
   * Redis lost its records: keep what was read before for the settle window, and (`nudge`,
   * unless a peer's nudge told us) tell the others to write back.
   */
  #lost(nudge: boolean): void {
    if (performance.now() >= this.#settleUntil) this.#beforeLoss = new Map(this.#remote);
    this.#settleUntil = performance.now() + this.#heartbeatMs * 3 +
      redisLimits.maxReconnectDelayMs;
    this.#log.info("registry lost its records: writing back", {
      keptMs: this.#settleUntil - performance.now(),
    });
    if (nudge && this.#opts.nudgeOnLoss !== false) this.#nudgePeers();
  }

  /**
   * Tell every instance known before the loss (the live ones and the exits' holders, as last
   * read) that Redis lost its records: one `{lost: 1}` stream each over its link, no answer.
   */
  #nudgePeers(): void {
    const peers = new Set<string>();
    for (const [name, i] of this.#instances) if (name !== this.instance) peers.add(i.advertise);
    for (const l of this.#beforeLoss.values()) peers.add(l.advertise);
    for (const addr of peers) {
      void (async () => {
        const s = await (await this.#links.link(addr)).open({ data: encodeFrame({ lost: 1 }) });
        await s.close();
      })().catch((err) => {
        // That peer's own next beat finds the loss: the nudge only makes it sooner.
        this.#log.debug("cluster peer not nudged", { peer: addr, error: errorMessage(err) });
      });
    }
  }

  /** A peer said Redis lost its records: beat now (once for any number of nudges meanwhile). */
  #nudgedByPeer(): void {
    if (this.#nudged || this.#closed) return;
    this.#nudged = true;
    this.#beat = this.#beat.then(async () => {
      this.#nudged = false;
      if (!this.#closed) await bounded(this.#heartbeat(false), this.#heartbeatMs * 3);
    });
  }

  #remoteExit(name: string): RemoteExit | undefined {
    const lease = this.#remote.get(name);
    if (!lease) return undefined;
    return {
      needsPassword: lease.auth !== "",
      checkPassword: (password) =>
        lease.auth === "" || timingSafeEqual(this.#digest(password), lease.auth),
      carriesUdp: lease.udp === true,
      connect: (host, port) => this.#connect(lease, { exit: name, host, port }),
      associate: () => this.#connect(lease, { exit: name, udp: true }),
    };
  }

  /** Ask the instance holding the exit to connect (or associate) through it. */
  async #connect(lease: ExitLease, request: Record<string, unknown>): Promise<Outcome> {
    let s: Stream;
    try {
      const session = await this.#links.link(lease.advertise);
      s = await session.open({ data: encodeFrame(request) });
    } catch (err) {
      this.#log.warn("cluster link failed", { peer: lease.advertise, error: errorMessage(err) });
      return {
        ok: false,
        reason: "network-unreachable",
        message: "instance holding the exit unreachable",
      };
    }
    const reader = new BufferedReader(s);
    // The holder answers once its exit did (its own pending timeout bounds that); a frozen
    // holder's link dies within the links' keepalive (linkKeepalive), which ends this read.
    const answer = await readAnswer(reader);
    if (answer?.ok !== true) {
      s.reset();
      return {
        ok: false,
        reason: (answer?.reason as NetFailureReason | undefined) ?? "other",
        message: String(answer?.message ?? "no answer from the instance holding the exit"),
      };
    }
    const bound = answer.bound as { host: string; port: number } | undefined;
    return { ok: true, conn: withPrefix(s, reader.takeBuffered()), bound, done: () => {} };
  }

  /** A request from another instance for an exit held here. */
  async #serveStream(s: Stream): Promise<void> {
    const reader = new BufferedReader(s);
    let out: Awaited<ReturnType<DepotServer["connectHere"]>> | undefined;
    try {
      const h = await readLinkHeader(reader);
      if (h?.lost === 1) {
        this.#log.info("a peer says the registry lost its records: beating now");
        this.#nudgedByPeer();
        await s.close();
        return;
      }
      const ask = hereRequest(h);
      const name = typeof h?.exit === "string" ? h.exit : "";
      if (!name || !ask) {
        this.#log.warn("cluster stream refused: malformed request");
        s.reset();
        return;
      }
      out = await this.#server.connectHere(name, ask);
      if (!out.ok) {
        await writeAll(s, encodeFrame({ ok: false, reason: out.reason, message: out.message }));
        await s.close();
        return;
      }
      await writeAll(s, encodeFrame({ ok: true, bound: out.bound }));
      const link = withPrefix(s, reader.takeBuffered());
      if (ask.type === "associate") {
        await this.#passAssociation(name, link, out.conn, out.signal);
        return;
      }
      // Ended with the exit's control connection, as the exit's own relays are: its tunnel
      // may stay open (a local gone silent), and the instance the client reached cannot
      // tell.
      const r = await relay(link, out.conn, { signal: out.signal });
      this.#log.info("cluster connection closed", {
        exit: name,
        dest: `${ask.host}:${ask.port}`,
        end: r.end,
        up: r.aToB,
        down: r.bToA,
      });
    } catch (err) {
      this.#log.debug("cluster stream failed", { error: errorMessage(err) });
      s.reset();
      if (out?.ok) closeQuietly(out.conn);
    } finally {
      if (out?.ok) out.done();
    }
  }

  /** Relay a handed-over association between the link stream and the exit's tunnel. */
  async #passAssociation(
    name: string,
    link: Duplex,
    tunnel: Duplex,
    signal: AbortSignal,
  ): Promise<void> {
    const log = this.#log.child({ exit: name, dest: "udp" });
    const table = new FlowTable<Flow>(this.#server.udp, new UdpDrops(log, "depot-cluster"));
    const tally = new UdpTally("depot-cluster");
    const r = await passAssociation(link, tunnel, table, tally, signal);
    logHandedAssociationEnd(log, r, tally, table.drops);
  }

  /**
   * Stop the heartbeat, delete this instance's leases, close the links and Redis. A beat under
   * way is waited for; one queued (a tick, a peer's nudge), or asked for from now on (a nudge
   * still arriving over the links), never runs: it would write the leases back.
   */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    this.#server.cluster = undefined;
    await bounded(this.#beat, closeWaitMs);
    const release = async () => {
      for (const name of this.#written) {
        const cur = await this.#redis.get(this.#key(name));
        if (cur && (JSON.parse(cur) as ExitLease).instance === this.instance) {
          await this.#redis.del(this.#key(name));
        }
      }
      await this.#redis.del(this.#instanceKey(this.instance));
      await this.#redis.close();
    };
    try {
      if (!this.#redisUp) throw new Error("registry unreachable");
      if (await bounded(release(), closeWaitMs) === timedOut) throw new Error("registry too slow");
    } catch (err) {
      // Redis is away: the leases expire on their own within 3 heartbeats.
      this.#log.debug("leases not removed", { error: errorMessage(err) });
      this.#redis.destroy();
    }
    await this.#links.close();
    // Destroyed while it waited to reconnect (Redis down), the client still has that timer.
    await this.#pauses.settled();
  }
}

/** SET with PX that answers whether the key existed before (1) or not (0). */
const setReportingScript = `local had = redis.call('EXISTS', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return had`;

/** How long shutdown waits for Redis (a beat in progress, removing the leases). */
const closeWaitMs = 1_000;

const timedOut = Symbol("timed out");

/** `p`, or {@linkcode timedOut} after `ms` (`p` is then left to settle on its own). */
async function bounded<T>(p: Promise<T>, ms: number): Promise<T | typeof timedOut> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<typeof timedOut>((r) => timer = setTimeout(() => r(timedOut), ms)),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** The request of a stream's header frame (`{host, port}` or `{udp: true}`), or null. */
function hereRequest(h: Record<string, unknown> | null): HereRequest | null {
  if (h?.udp === true) return { type: "associate" };
  const host = typeof h?.host === "string" ? h.host : "";
  const port = typeof h?.port === "number" ? h.port : 0;
  if (!host || !Number.isInteger(port) || port < 1 || port > 65535) return null;
  return { type: "connect", host, port };
}

/**
 * The holder's one-frame answer, or null (EOF, malformed, the link gone). No timer: the holder
 * bounds it, and the link's keepalive a holder that stopped answering.
 */
async function readAnswer(r: BufferedReader): Promise<Record<string, unknown> | null> {
  const f = await readFrameJson(r, linkMaxHeaderBytes).catch(() => null);
  return f && typeof f.json === "object" && f.json !== null
    ? f.json as Record<string, unknown>
    : null;
}

/**
 * The holder's closing line of a handed-over UDP association: info for an end either side
 * asked for, warn with the reason when it ended in error (a malformed frame from the other
 * instance or the exit, a stream cut short), which points at a peer that is broken or hostile.
 */
export function logHandedAssociationEnd(
  log: Logger,
  r: HandedAssociationEnd,
  tally: UdpTally,
  drops: UdpDrops,
): void {
  const n = drops.total;
  log[r.end === "error" ? "warn" : "info"]("cluster connection closed", {
    end: r.end,
    endedBy: r.by,
    error: r.message,
    up: tally.bytesUp,
    down: tally.bytesDown,
    datagramsUp: tally.datagramsUp,
    datagramsDown: tally.datagramsDown,
    ...(n > 0 ? { drops: n, dropped: JSON.stringify(drops.snapshot()) } : {}),
  });
}
