/**
 * The links between the instances of a cluster (issue 19): one long-lived lib/mux session per
 * pair of instances, opened with a token-checked hello (`{token, from}` -> `{ok}`, control
 * frames, constant-time compare, within a handshake time), optionally inside TLS. A service
 * puts its own header frame at the start of each stream; this module only carries them:
 * `serve()` hands every stream a peer opens to `onStream`, `link(addr)` gives the (shared,
 * redialled when gone) session to the instance at `addr`.
 * @module
 */

import { Session, type SessionOptions, type Stream } from "../mux/mod.ts";
import { type Logger, silentLogger } from "../log.ts";
import {
  BufferedReader,
  closeQuietly,
  type ConnHandler,
  type Duplex,
  errorMessage,
  serve,
  type Server,
  timingSafeEqual,
  withPrefix,
  writeAll,
} from "../net/mod.ts";
import { encodeFrame, readFrameJson } from "../control/mod.ts";
import { dialTransport, type TlsClientConfig } from "../transport/mod.ts";

/** Time a peer has to send its hello (and to answer ours). */
export const linkHandshakeTimeoutMs = 5_000;
/** Time to connect to a peer (TCP and TLS handshake). */
export const linkDialTimeoutMs = 5_000;
/** Largest hello or stream header frame. */
export const linkMaxHeaderBytes = 4096;

/** The shortest silence after which a link is dead, whatever the lease. */
export const minLinkDeadMs = 5_000;

/**
 * The links' keepalive in a cluster whose leases live `leaseMs`: a ping every heartbeat (a
 * third of the lease), and a peer silent for a lease time is dead, as its leases are, but
 * never sooner than {@linkcode minLinkDeadMs}. A dead link resets its streams, so requests
 * waiting on a frozen holder (stopped, swapped out, or cut off by a network that drops while
 * TCP still looks open) fail within that time (tunnel: 502; depot: a SOCKS failure reply), as
 * requests to a frozen client or exit do within its heartbeat timeout; the mux default (30 s
 * pings, 30 s to answer) kept them waiting 30 to 60 s. The floor spares the requests a link
 * carries from a stall of either process under load when the heartbeat is short.
 */
export function linkKeepalive(leaseMs: number): SessionOptions {
  return {
    keepaliveIntervalMs: Math.max(1, Math.floor(leaseMs / 3)),
    keepaliveTimeoutMs: Math.max(leaseMs, minLinkDeadMs),
  };
}

/** Options of {@linkcode PeerLinks}. */
export interface PeerLinksOptions {
  /** The shared secret every instance presents on its links. */
  token: string;
  /** This instance's name, told to the peers it dials (for their logs). */
  from: string;
  /** A stream a peer opened (its header frame first). */
  onStream: (s: Stream) => void;
  /** Trust (and identity) when dialling: TLS links; the listener given to serve() is then TLS. */
  tls?: TlsClientConfig;
  /** Mux options of the links (keepalive: see {@linkcode linkKeepalive}). */
  mux?: SessionOptions;
  log?: Logger;
}

/** Read one JSON object frame within the handshake time; null on EOF, timeout or not an object. */
export async function readLinkHeader(r: BufferedReader): Promise<Record<string, unknown> | null> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<null>((res) =>
    timer = setTimeout(() => res(null), linkHandshakeTimeoutMs)
  );
  try {
    const f = await Promise.race([readFrameJson(r, linkMaxHeaderBytes), timeout]);
    return f && typeof f.json === "object" && f.json !== null
      ? f.json as Record<string, unknown>
      : null;
  } finally {
    clearTimeout(timer);
  }
}

/** The links of one instance; see the module doc. */
export class PeerLinks {
  readonly #opts: PeerLinksOptions;
  readonly #log: Logger;
  /** Live links by address (one dial shared by concurrent requests). */
  #links = new Map<string, Promise<Session>>();
  #accepted = new Set<Session>();
  #listener?: Server;

  constructor(opts: PeerLinksOptions) {
    this.#opts = opts;
    this.#log = opts.log ?? silentLogger;
  }

  /** Take the peers' links on `listener` (TLS when the peers dial with TLS). */
  serve(listener: Deno.Listener<Deno.Conn, Deno.NetAddr>): Server {
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
      hello = await readLinkHeader(reader);
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
    this.#accepted.add(session);
    this.#log.info("cluster link up", { remote, peer: String(hello.from ?? "?") });
    while (true) {
      // A failed accept means the link is over.
      const s = await session.accept().catch(() => null);
      if (s === null) break;
      this.#opts.onStream(s);
    }
    this.#accepted.delete(session);
    void session.closed.then(({ reason }) =>
      this.#log.info("cluster link down", { remote, end: reason })
    );
  }

  /** The session to the instance at `addr` (`host:port`), dialled when there is none. */
  link(addr: string): Promise<Session> {
    let p = this.#links.get(addr);
    if (!p) {
      p = this.#dial(addr);
      this.#links.set(addr, p);
      const forget = () => {
        if (this.#links.get(addr) === p) this.#links.delete(addr);
      };
      p.then((s) =>
        s.closed.then(({ reason }) => {
          forget();
          // A peer that stopped answering is worth a warning: its requests failed.
          this.#log[reason === "keepalive-timeout" ? "warn" : "info"]("cluster link down", {
            peer: addr,
            end: reason,
          });
        }), forget);
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
    }, { timeoutMs: linkDialTimeoutMs, ...(tls ? { tls } : {}) });
    try {
      await writeAll(conn, encodeFrame({ token: this.#opts.token, from: this.#opts.from }));
      const reader = new BufferedReader(conn);
      const answer = await readLinkHeader(reader);
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

  /** Close every link and the listener. */
  async close(): Promise<void> {
    const links = [...this.#links.values()];
    this.#links.clear();
    for (const p of links) {
      await p.then((s) => s.close(), () => {
        // That link never came up: nothing to close.
      });
    }
    for (const s of this.#accepted) await s.close();
    await this.#listener?.stop(0);
  }
}
