/**
 * Client side of fusion: for each accepted connection a session with a fresh random
 * 128-bit id and one redialling loop per configured path.
 * @module
 */

import type { ProxySettings } from "../transport/mod.ts";
import { type Logger, silentLogger } from "../log.ts";
import { AddressError, parseHostPort } from "../net/addr.ts";
import { Backoff, type BackoffOptions, sleep } from "../net/backoff.ts";
import { closeQuietly, type Duplex } from "../net/duplex.ts";
import { errorMessage } from "../net/errors.ts";
import { relay } from "../net/relay.ts";
import { type TlsClientConfig, TlsError, type TransportName } from "../transport/mod.ts";
import type { ConnContext } from "../net/serve.ts";
import { sessionIdBytes } from "../sequencer/frame.ts";
import { dialPath, formatPathSpec, type PathSpec } from "./dial_path.ts";
import { clientHandshake, PathRefusedError } from "./handshake.ts";
import { FusionSession, type FusionSessionOptions, type SessionSummary } from "./session.ts";

/** A path that lived at least this long resets its redial backoff. */
const stablePathMs = 2_000;
/** Ended-session summaries kept in `recent`. */
const recentSummaries = 16;

/** Options of {@linkcode FusionClient}. */
export interface FusionClientOptions extends FusionSessionOptions {
  /** The paths every session opens (one connection each). */
  paths: PathSpec[];
  /**
   * Leave through an HTTP CONNECT or SOCKS5 proxy to reach the server (`--proxy`,
   * `HTTPS_PROXY`/`ALL_PROXY`, `NO_PROXY`; lib/transport `proxySettings`).
   */
  proxy?: ProxySettings;
  /** Shared secret sent in every hello. */
  token: string;
  /** Dial every path with TLS (server certificate verified; client certificate for mTLS). */
  tls?: TlsClientConfig;
  /** What carries a path that names none (`ws://` in its spec). @default "tcp" */
  transport?: TransportName;
  /** Per-dial timeout. @default 5000 */
  dialTimeoutMs?: number;
  /** Hello/welcome timeout. @default 5000 */
  handshakeTimeoutMs?: number;
  /** Redial backoff of a path. @default 200 ms doubling to 5 s */
  backoff?: BackoffOptions;
  /** Close the relay when no byte moved for this long; 0 = never. @default 0 */
  idleTimeoutMs?: number;
  /** Where sessions and paths log; silent by default. */
  log?: Logger;
}

/**
 * Parse `--path` syntax: `host:port` or `local_ip>host:port` (local address to bind); the
 * remote may name its carrier, `tcp://host:port` or `ws://host:port`. Throws AddressError.
 */
export function parsePathSpec(s: string): PathSpec {
  const i = s.indexOf(">");
  const local = i < 0 ? undefined : s.slice(0, i).trim().replace(/^\[(.*)\]$/, "$1");
  if (local === "") throw new AddressError(`empty local address in ${JSON.stringify(s)}`);
  let remote = i < 0 ? s.trim() : s.slice(i + 1).trim();
  let transport: TransportName | undefined;
  const scheme = /^(tcp|ws):\/\//i.exec(remote);
  if (scheme) {
    transport = scheme[1].toLowerCase() as TransportName;
    remote = remote.slice(scheme[0].length).replace(/\/$/, "");
  }
  return {
    ...parseHostPort(remote),
    ...(local !== undefined ? { localAddress: local } : {}),
    ...(transport ? { transport } : {}),
  };
}

/** Opens fusion sessions to a server over several paths. */
export class FusionClient {
  readonly #o: FusionClientOptions;
  readonly #log: Logger;
  readonly #token: Uint8Array;
  readonly #sessions = new Set<FusionSession>();
  readonly #loops = new Set<Promise<void>>();
  /** Summaries of the last sessions that ended (newest last), for status and tests. */
  readonly recent: SessionSummary[] = [];

  /** Check the options; sessions open on `open()` or `handle`. */
  constructor(opts: FusionClientOptions) {
    if (opts.paths.length === 0) throw new RangeError("fusion client needs at least one path");
    this.#o = opts;
    this.#log = opts.log ?? silentLogger;
    this.#token = new TextEncoder().encode(opts.token);
  }

  /** Sessions open now. */
  get sessions(): ReadonlySet<FusionSession> {
    return this.#sessions;
  }

  /** Open a session and start its paths; the session is usable (buffers) at once. */
  open(): FusionSession {
    const id = crypto.getRandomValues(new Uint8Array(sessionIdBytes));
    const s = new FusionSession(id, { ...this.#o, log: this.#log });
    this.#sessions.add(s);
    s.closed.then((sum) => {
      this.#sessions.delete(s);
      this.recent.push(sum);
      if (this.recent.length > recentSummaries) this.recent.shift();
    });
    let nextPathId = 1;
    const newPathId = () => nextPathId++;
    for (const spec of this.#o.paths) {
      const loop = this.#pathLoop(s, spec, newPathId);
      this.#loops.add(loop);
      loop.finally(() => this.#loops.delete(loop));
    }
    return s;
  }

  /**
   * `serve()` handler: relay an accepted connection through a new session, then wait for
   * the session to end (its summary is logged by the session).
   */
  handle = async (conn: Duplex, ctx: ConnContext): Promise<void> => {
    ctx.handshakeDone();
    const s = this.open();
    ctx.log.info("session opened", { session: s.idHex.slice(0, 12), remote: ctx.remote });
    // ctx.signal: serve()'s drain deadline must end a relay even while it is blocked writing
    // into a session whose target stopped reading (else the process cannot exit).
    const r = await relay(conn, s, {
      idleTimeoutMs: this.#o.idleTimeoutMs ?? 0,
      signal: ctx.signal,
    });
    if (r.end === "error" && r.error) {
      ctx.log.debug("relay ended with error", { error: errorMessage(r.error) });
    }
    await s.closed;
  };

  /** Abort every session and wait for them (and their redial loops) to end. */
  async close(): Promise<SessionSummary[]> {
    const all = [...this.#sessions];
    for (const s of all) s.close();
    const out = await Promise.all(all.map((s) => s.closed));
    await Promise.all([...this.#loops]);
    return out;
  }

  async #pathLoop(s: FusionSession, spec: PathSpec, newPathId: () => number): Promise<void> {
    const backoff = new Backoff({ initialMs: 200, maxMs: 5_000, ...this.#o.backoff });
    const label = formatPathSpec(spec);
    const log = this.#log.child({ session: s.idHex.slice(0, 12), via: label });
    while (s.state === "open") {
      let conn: Duplex | undefined;
      try {
        const pathId = newPathId();
        conn = await dialPath(spec, {
          timeoutMs: this.#o.dialTimeoutMs,
          signal: s.signal,
          tls: this.#o.tls,
          transport: this.#o.transport,
          proxy: this.#o.proxy,
        });
        // The session may end during the handshake: closing the conn ends the wait.
        const dialled = conn;
        const cut = () => closeQuietly(dialled);
        s.signal.addEventListener("abort", cut, { once: true });
        let hs: Awaited<ReturnType<typeof clientHandshake>>;
        try {
          hs = await clientHandshake(conn, {
            sessionId: s.id,
            pathId,
            token: this.#token,
            rejoin: s.everHadPath,
            receiveBound: s.receiveBound,
            timeoutMs: this.#o.handshakeTimeoutMs,
            maxDataBytes: Math.max(1 << 20, this.#o.maxFrameDataBytes ?? 0),
          });
        } finally {
          s.signal.removeEventListener("abort", cut);
        }
        const { decoder, peerReceiveBound } = hs;
        s.limitPeerWindow(peerReceiveBound);
        const started = Date.now();
        const why = await s.addPath(conn, { id: pathId, decoder, label });
        conn = undefined;
        if (Date.now() - started >= stablePathMs) backoff.reset();
        if (s.state === "open") log.debug("path ended, redialling", { end: why });
      } catch (err) {
        closeQuietly(conn);
        if (err instanceof PathRefusedError && err.reason === "unknown-session") {
          // The server ended the session. If other paths live, they carry its last acks
          // (or die too, and the last one to redial ends it here).
          if (s.state === "open" && s.pathCount === 0) {
            log.warn("server no longer knows the session", {});
            s.abort("peer-reset", err.message);
          }
          return;
        }
        if (err instanceof PathRefusedError && err.reason !== "limit") {
          log.error("server refused the path", { failure: err.reason });
          s.abort("peer-reset", err.message);
          return;
        }
        if (s.state !== "open") return;
        if (err instanceof TlsError) {
          // Certificate trouble does not fix itself by redialling fast: say why, loudly.
          log.warn("path TLS handshake failed", { failure: err.reason, error: err.message });
        } else {
          log.debug("path dial failed", { error: errorMessage(err) });
        }
      }
      try {
        await sleep(backoff.next(), s.signal);
      } catch {
        return; // the session ended while waiting
      }
    }
  }
}
