/**
 * Clean ends of plain tunnels, confirmed on the control connection (`end{id}`).
 *
 * A plain tunnel is raw TCP: when depot-local dies, its kernel closes the tunnel with a FIN
 * just as a finished transfer does, and a close-delimited download would look complete at the
 * SOCKS client. So the local reports each clean end of the target->client direction on the
 * control connection as it closes the tunnel's write side, every byte before the FIN written
 * ({@linkcode ReportedEnd}), and the server passes the tunnel's FIN on only once that report
 * arrived ({@linkcode ConfirmedEnd});
 * if the control connection ends or the wait runs out first, the read fails and the relay
 * resets the client. Half-close is kept: a confirmed FIN is passed on as a FIN.
 *
 * Only plain TCP tunnels are wrapped: a `--mux` tunnel is a mux stream, whose FIN and RST are
 * the mux's own frames (no `end`), so these wrappers never hide a stream's `writeFramed` and
 * `readView` from relay() and need not pass them through.
 * @module
 */

import { after, type Duplex } from "../net/mod.ts";

/** A plain tunnel's FIN arrived without its `end` confirmation: the local died mid-stream. */
export class UnconfirmedEndError extends Error {
  override name = "UnconfirmedEndError";
  /** Why the FIN was not taken as a clean end. */
  readonly reason = "unconfirmed-end";
}

/**
 * Server side: the tunnel, whose EOF counts only once `confirm()` ran. `read` returns null
 * after the confirmation; it throws {@linkcode UnconfirmedEndError} when `fail()` runs (the
 * control connection ended), `waitMs` pass after the FIN, or the tunnel is closed first.
 *
 * The local sends `end` as it closes the tunnel's write side, so the `end` usually arrives
 * first; but the two travel on different connections and the FIN can win, so the wait can be on
 * any connection's path: it is a deadline on the shared wheel, and the control connection's end
 * reaches the gates of its exit through one listener there (`fail()`), not one listener and one
 * timer per connection.
 */
export class ConfirmedEnd implements Duplex {
  #confirmed = false;
  #failure: UnconfirmedEndError | undefined;
  #settle: ((err?: Error) => void) | undefined;

  /**
   * @param inner the tunnel connection; the server replaces it once with its prefixed form
   *   (`withPrefix`) when its handshake read bytes past the answer, before the relay starts
   * @param waitMs how long a FIN may wait for its confirmation
   */
  constructor(public inner: Duplex, readonly waitMs: number) {
    // Bound, not an arrow class field (lib/net/serve.ts LiveConn.handshakeDone: such a field
    // kept finished connections through scavenges).
    this.#afterRead = this.#onRead.bind(this);
  }

  /** The local reported a clean end (`end{id}`); may come before or after the FIN. */
  confirm(): void {
    if (this.#failure) return;
    this.#confirmed = true;
    this.#settle?.();
  }

  /** The control connection of the tunnel's local ended: an unconfirmed FIN stays so. */
  fail(): void {
    if (this.#confirmed || this.#failure) return;
    this.#failure = new UnconfirmedEndError("control connection ended before the end");
    this.#settle?.(this.#failure);
  }

  /** The inner read, its EOF held back until confirmed (one `then`, no async frame per read). */
  read(p: Uint8Array): Promise<number | null> {
    return this.inner.read(p).then(this.#afterRead);
  }

  readonly #afterRead: (n: number | null) => number | null | Promise<null>;

  #onRead(n: number | null): number | null | Promise<null> {
    if (n !== null || this.#confirmed) return n;
    if (this.#failure) throw this.#failure;
    return this.#confirmation();
  }

  /** Null once `confirm()` runs; throws when `fail()` does, `waitMs` pass, or `close()` runs. */
  #confirmation(): Promise<null> {
    return new Promise<null>((resolve, reject) => {
      const cancel = after(
        this.waitMs,
        () => done(new UnconfirmedEndError(`no end confirmation within ${this.waitMs} ms`)),
      );
      const done = (err?: Error) => {
        cancel();
        this.#settle = undefined;
        if (err) reject(err);
        else resolve(null);
      };
      this.#settle = done;
    });
  }

  write(p: Uint8Array): Promise<number> {
    return this.inner.write(p);
  }

  closeWrite(): Promise<void> {
    return this.inner.closeWrite();
  }

  close(): void {
    this.#settle?.(new UnconfirmedEndError("tunnel closed before the end"));
    this.inner.close();
  }
}

/** Where a local reports its tunnels' clean ends: its control connection. */
export interface EndReports {
  send(msg: { type: "end"; id: number }): Promise<void>;
}

/**
 * Local side: the tunnel, which reports each clean end of the target->client direction --
 * `end{id}` goes on the control connection as `closeWrite()` (the relay passing the target's
 * FIN on) runs, once everything before the FIN is written.
 */
export class ReportedEnd implements Duplex {
  /**
   * @param inner the tunnel connection
   * @param ctl the control connection the `end` goes on
   * @param id the tunnel's request
   */
  constructor(readonly inner: Duplex, readonly ctl: EndReports, readonly id: number) {}

  read(p: Uint8Array): Promise<number | null> {
    return this.inner.read(p);
  }

  write(p: Uint8Array): Promise<number> {
    return this.inner.write(p);
  }

  /**
   * Report the end, then pass the FIN on. The relay calls this once every byte of the
   * direction is written to the tunnel, so the stream is complete whatever happens to this
   * process next (its kernel still sends what it holds; a FIN that its death sends is a true
   * end then too). Sent first, the report is usually at the server before the FIN, which then
   * passes at once instead of waiting for it: a wait, a wake-up and a deadline less per
   * connection, and the client's EOF sooner.
   */
  async closeWrite(): Promise<void> {
    const reported = this.ctl.send({ type: "end", id: this.id }).catch(ignoreGone);
    await this.inner.closeWrite();
    await reported;
  }

  close(): void {
    this.inner.close();
  }
}

/** The control connection is gone: the server resets the client, as it must (no `end`). */
function ignoreGone(): void {}
