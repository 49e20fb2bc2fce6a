/**
 * What a dial or a relay can be cut by: an `AbortSignal`, or an {@linkcode AbortSource} such as
 * serve()'s connection context, which keeps its listeners in a plain array. An AbortSignal per
 * connection (its controller, its EventTarget) and an `addEventListener`/`removeEventListener`
 * pair for each of the dial and the relay cost a seaprox connection about 28 µs of profiled
 * JS (issue 20); a connection is almost never aborted, yet every one paid for the means.
 * @module
 */

/** A listener of an abort: called once, with no event (our dial and relay take none). */
export interface AbortListener {
  handleEvent(): void;
}

/**
 * An abort that is not an EventTarget: `onAbort` listeners are called once, in order, when it
 * aborts (not when added after). `signal` is a real AbortSignal made on demand, aborted with
 * it, for APIs that need one.
 */
export interface AbortSource {
  readonly aborted: boolean;
  /** Why it aborted (undefined before). */
  readonly reason: unknown;
  /** The same abort as an AbortSignal (made when first read). */
  readonly signal: AbortSignal;
  onAbort(l: AbortListener): void;
  offAbort(l: AbortListener): void;
}

/** Either kind of abort lib/net's dial and relay listen to. */
export type Abortable = AbortSignal | AbortSource;

/** Call `l.handleEvent()` when `a` aborts (not if it has already: check `aborted` first). */
export function listenAbort(a: Abortable, l: AbortListener): void {
  // No `once`: an abort fires once anyway, callers remove the listener when done, and an
  // options object costs a WebIDL dictionary conversion per call.
  if (a instanceof AbortSignal) a.addEventListener("abort", l);
  else a.onAbort(l);
}

/** Remove what {@linkcode listenAbort} added (nothing if it is not there). */
export function unlistenAbort(a: Abortable, l: AbortListener): void {
  if (a instanceof AbortSignal) a.removeEventListener("abort", l);
  else a.offAbort(l);
}

/** `a` as an AbortSignal, for an API that takes only those (made on demand for a source). */
export function abortSignalOf(a: Abortable): AbortSignal {
  return a instanceof AbortSignal ? a : a.signal;
}

/** Remove one entry of `l` from `list` (a source's listeners: one or two at a time). */
export function removeListener(list: AbortListener[] | undefined, l: AbortListener): void {
  if (!list) return;
  const i = list.lastIndexOf(l);
  if (i === list.length - 1) list.pop(); // the usual case, without splice's array
  else if (i >= 0) list.splice(i, 1);
}

/**
 * Call every listener of `list` once (a source aborting; it forgets them first). One that
 * throws does not stop the others, as an EventTarget's dispatch would not: its error is
 * reported as dispatch reports it.
 */
export function fireListeners(list: AbortListener[] | undefined): void {
  if (!list) return;
  for (const l of list) {
    try {
      l.handleEvent();
    } catch (err) {
      reportError(err);
    }
  }
}

/**
 * An {@linkcode AbortSource} to own and abort: serve()'s connection context and depot's
 * requests and relays build on it. Its AbortSignal is made only when `signal` is read (an
 * abort before that is kept for it).
 */
export class AbortHub implements AbortSource {
  /** Aborted (the first `abort()` call). */
  aborted = false;
  /** Why it aborted. */
  reason: unknown = undefined;
  #ac: AbortController | undefined;
  /** Listeners added through `onAbort` (a dial's, a relay's): no EventTarget. */
  #listeners: AbortListener[] | undefined;

  get signal(): AbortSignal {
    if (this.#ac === undefined) {
      this.#ac = new AbortController();
      if (this.aborted) this.#ac.abort(this.reason);
    }
    return this.#ac.signal;
  }

  onAbort(l: AbortListener): void {
    (this.#listeners ??= []).push(l);
  }

  offAbort(l: AbortListener): void {
    removeListener(this.#listeners, l);
  }

  /** Abort once (the first reason stays): its signal, if made, and its listeners. */
  abort(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    this.#ac?.abort(reason);
    const listeners = this.#listeners;
    this.#listeners = undefined;
    fireListeners(listeners);
  }
}
