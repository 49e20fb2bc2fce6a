/**
 * Server side of fusion: joins paths into sessions by session id (a session is created by
 * its first path), checks the token in constant time, enforces limits, and relays each
 * session to one connection to the target.
 * @module
 */

import { type Logger, silentLogger } from "../log.ts";
import type { HostPort } from "../net/addr.ts";
import { dial } from "../net/dial.ts";
import { type Duplex, writeAll, writeQuietly } from "../net/duplex.ts";
import { errorMessage } from "../net/errors.ts";
import { relay } from "../net/relay.ts";
import { type AuthFailureLimiter, verifySecret } from "../net/ratelimit.ts";
import { timingSafeEqual } from "../net/secret.ts";
import type { ConnContext } from "../net/serve.ts";
import { transportKind, type TransportName, withTransport } from "../transport/mod.ts";
import { encodeWelcome, sequencerVersion, WelcomeStatus } from "../sequencer/frame.ts";
import { readHello } from "./handshake.ts";
import { FusionSession, type FusionSessionOptions, type SessionSummary } from "./session.ts";

/** Default cap on sessions at once. */
export const defaultMaxSessions = 256;
/** Default cap on paths per session. */
export const defaultMaxPathsPerSession = 8;

/** Options of {@linkcode FusionServer}. */
export interface FusionServerOptions extends FusionSessionOptions {
  /** Shared secret every hello must carry. */
  token: string;
  /** Limits failed token attempts per source address (refused before the check). */
  authLimiter?: AuthFailureLimiter;
  /** Where each session's connection goes. @default localhost:22 */
  target?: HostPort;
  /** Replace the target dial (tests, other transports). */
  dialTarget?: () => Promise<Duplex>;
  /** Sessions at once; more are refused with status limit. @default 256 */
  maxSessions?: number;
  /** Paths per session; more are refused with status limit. @default 8 */
  maxPathsPerSession?: number;
  /** Hello timeout. @default 5000 */
  handshakeTimeoutMs?: number;
  /** Target dial timeout. @default 10000 */
  dialTimeoutMs?: number;
  /** Close a session's relay when no byte moved for this long; 0 = never. @default 0 */
  idleTimeoutMs?: number;
  /** What carries the paths ("ws": a WebSocket upgrade on each). @default "tcp" */
  transport?: TransportName;
  /** Where sessions and paths log; silent by default. */
  log?: Logger;
}

const hex = (b: Uint8Array): string =>
  Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

/** Accepts fusion paths (use `handle` as a `serve()` handler). */
export class FusionServer {
  readonly #o: FusionServerOptions;
  readonly #log: Logger;
  readonly #sessions = new Map<string, FusionSession>();
  readonly #runs = new Set<Promise<void>>();
  /** Paths welcomed but not attached yet, per session (so racing joins respect limits). */
  readonly #joining = new Map<FusionSession, number>();
  /** Summaries of the last sessions that ended (newest last), for status and tests. */
  readonly recent: SessionSummary[] = [];

  /** Check the options; paths arrive through `handle`. */
  constructor(opts: FusionServerOptions) {
    this.#o = opts;
    this.#log = opts.log ?? silentLogger;
    this.handle = withTransport(transportKind(opts.transport ?? "tcp", false), this.#handle);
  }

  /** Sessions open now, by hex id. */
  get sessions(): ReadonlyMap<string, FusionSession> {
    return this.#sessions;
  }

  /**
   * `serve()` handler for one incoming path (after the carrier's handshake); resolves when the
   * path ends.
   */
  readonly handle: (conn: Duplex, ctx: ConnContext) => Promise<void>;

  #handle = async (conn: Duplex, ctx: ConnContext): Promise<void> => {
    let hello;
    let decoder;
    try {
      ({ hello, decoder } = await readHello(conn, {
        timeoutMs: this.#o.handshakeTimeoutMs,
        maxDataBytes: Math.max(1 << 20, this.#o.maxFrameDataBytes ?? 0),
      }));
    } catch (err) {
      ctx.log.info("bad path handshake", { remote: ctx.remote, error: errorMessage(err) });
      return;
    }
    const refuse = async (status: number, why: string) => {
      ctx.log.warn("path refused", { remote: ctx.remote, why });
      await writeQuietly(conn, encodeWelcome(status));
    };
    if (hello.version !== sequencerVersion) {
      return await refuse(WelcomeStatus.badVersion, "version");
    }
    const tokenOk = await verifySecret(
      this.#o.authLimiter,
      ctx.remote,
      () => timingSafeEqual(hello.token, this.#o.token),
      { signal: ctx.signal },
    );
    if (!tokenOk) return await refuse(WelcomeStatus.badToken, "bad token");
    const key = hex(hello.sessionId);
    let s = this.#sessions.get(key);
    if (!s) {
      if (hello.rejoin) return await refuse(WelcomeStatus.unknownSession, "unknown session");
      if (this.#sessions.size >= (this.#o.maxSessions ?? defaultMaxSessions)) {
        return await refuse(WelcomeStatus.limit, "session limit");
      }
      s = new FusionSession(hello.sessionId, { ...this.#o, log: this.#log, side: "server" });
      this.#sessions.set(key, s);
      const run = this.#run(key, s);
      this.#runs.add(run);
      run.finally(() => this.#runs.delete(run));
      this.#log.info("session opened", { session: key.slice(0, 12), remote: ctx.remote });
    } else if (s.state !== "open") {
      return await refuse(WelcomeStatus.unknownSession, "session ending");
    }
    const joining = this.#joining.get(s) ?? 0;
    if (s.pathCount + joining >= (this.#o.maxPathsPerSession ?? defaultMaxPathsPerSession)) {
      return await refuse(WelcomeStatus.limit, "path limit");
    }
    this.#joining.set(s, joining + 1);
    let welcomed = false;
    try {
      s.limitPeerWindow(hello.receiveBound);
      await writeAll(conn, encodeWelcome(WelcomeStatus.ok, s.receiveBound));
      welcomed = true;
    } catch (err) {
      ctx.log.debug("welcome failed", { error: errorMessage(err) });
    } finally {
      const n = (this.#joining.get(s) ?? 1) - 1;
      if (n > 0) this.#joining.set(s, n);
      else this.#joining.delete(s);
    }
    if (!welcomed) return;
    ctx.handshakeDone();
    await s.addPath(conn, { id: hello.pathId, decoder, label: ctx.remote });
  };

  async #run(key: string, s: FusionSession): Promise<void> {
    let target: Duplex;
    try {
      target = this.#o.dialTarget
        ? await this.#o.dialTarget()
        : await dial(this.#o.target?.host ?? "localhost", this.#o.target?.port ?? 22, {
          timeoutMs: this.#o.dialTimeoutMs,
          signal: s.signal,
        });
    } catch (err) {
      this.#log.warn("target dial failed", { session: key.slice(0, 12), error: errorMessage(err) });
      s.abort("target-failed", errorMessage(err));
      await s.closed;
      this.#sessions.delete(key);
      return;
    }
    // A failed (reset, closed, path-less) session cuts the target too, even while the relay
    // is blocked writing to a target that stopped reading; a "done" one finishes its copy.
    const failed = new AbortController();
    s.signal.addEventListener("abort", () => {
      if (s.state === "failed") failed.abort();
    }, { once: true });
    await relay(s, target, { idleTimeoutMs: this.#o.idleTimeoutMs ?? 0, signal: failed.signal });
    this.recent.push(await s.closed);
    if (this.recent.length > 16) this.recent.shift();
    this.#sessions.delete(key);
  }

  /** Abort every session and wait until they ended. */
  async close(): Promise<SessionSummary[]> {
    const all = [...this.#sessions.values()];
    for (const s of all) s.close();
    const out = await Promise.all(all.map((s) => s.closed));
    await Promise.all([...this.#runs]);
    return out;
  }
}
