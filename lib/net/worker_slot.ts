/**
 * This process's place among the worker processes that share its public ports
 * (`--workers N`, issue 19). The service kit sets it once, before anything binds; every
 * public listener spreads {@linkcode sharedPortOptions} into its `Deno.listen` options, so
 * the N workers each bind the same ports with `SO_REUSEPORT` and Linux spreads the
 * connections over them. One process alone (the default) binds exactly as before.
 * @module
 */

/** Which worker this process is: `index` in 1..`count`. */
export interface WorkerSlot {
  readonly index: number;
  readonly count: number;
}

let slot: WorkerSlot | undefined;

/** Record that this process is worker `s.index` of `s.count` (undefined: a process alone). */
export function setWorkerSlot(s: WorkerSlot | undefined): void {
  slot = s;
}

/** This process's worker slot, or undefined when it runs alone. */
export function workerSlot(): WorkerSlot | undefined {
  return slot;
}

/**
 * Options to spread into `Deno.listen`/`Deno.listenTls` for a port every worker serves:
 * `reusePort` when this process is one of several workers (needs Deno's `--unstable-net`).
 */
export function sharedPortOptions(): { reusePort?: true } {
  return slot && slot.count > 1 ? { reusePort: true } : {};
}

/**
 * Options for a UDP port every worker serves (lib/udp `UdpSocket.bind`): `reuseAddr` when this
 * process is one of several workers. Deno 2.9.6 gives UDP sockets no SO_REUSEPORT (neither
 * `Deno.listenDatagram` nor node:dgram's `reusePort`), so the workers bind with SO_REUSEADDR:
 * Linux then hands each datagram to the socket bound last (one worker serves the port, not
 * spread like TCP), and to the next one the moment that socket closes. Caveat: with
 * SO_REUSEADDR another local program that sets it too may bind the port (of any user; TCP's
 * SO_REUSEPORT asks for the same user), so it is set only under `--workers`.
 */
export function sharedUdpPortOptions(): { reuseAddr?: true } {
  return slot && slot.count > 1 ? { reuseAddr: true } : {};
}

/**
 * Whether this process may share ports: Linux, and Deno started with `--unstable-net`
 * (`reusePort` is unstable in Deno 2.9.6, and using it without the flag ends the process
 * instead of throwing; the flag's other APIs show whether it was given).
 */
export function portSharingAvailable(): boolean {
  return Deno.build.os === "linux" && typeof Deno.QuicEndpoint === "function";
}

/**
 * Worker i's own port of a port given for all workers (`port + i - 1`), for what each worker
 * must serve apart (its metrics, its cluster link, its depot tunnel port). Port 0 (any) and a
 * process alone keep the port as given.
 */
export function workerOwnPort(port: number, s: WorkerSlot | undefined = slot): number {
  return !s || s.count < 2 || port === 0 ? port : port + s.index - 1;
}
