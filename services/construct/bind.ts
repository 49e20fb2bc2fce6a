/**
 * What the services' constructors (services/construct/) share: how a listener is bound --
 * a service passes the kit's `bindOrExit` (a busy port ends the process with one line),
 * the demo {@linkcode bindOrThrow} (the error goes to its caller) -- and the optional
 * `--metrics` / `--status` listener.
 * @module
 */

import { type HostPort, sharedPortOptions } from "../../lib/net/mod.ts";
import {
  type ObservabilityOptions,
  type ObservabilityServer,
  serveObservability,
} from "../../lib/status/serve.ts";

/** Run `start`, which binds `addr` for `what`; the caller decides what a failure does. */
export type Bind = <T>(what: string, addr: HostPort, start: () => T | Promise<T>) => Promise<T>;

/** A {@linkcode Bind} that lets the error reach the caller (an embedding, the demo). */
export const bindOrThrow: Bind = async (_what, _addr, start) => await start();

/** Serve `opts` on `addr` (a `--metrics` or `--status` value) when it is set. */
export async function observeAt(
  bind: Bind,
  what: "metrics" | "status",
  addr: HostPort | undefined,
  opts: ObservabilityOptions,
): Promise<ObservabilityServer | undefined> {
  if (!addr) return undefined;
  const named = what === "metrics" ? opts : { ...opts, name: what };
  return await bind(what, addr, () => serveObservability(addr, named));
}

/** Deno.listen on `addr` through `bind` (shared with the fellow workers, `--workers`). */
export function listenAt(bind: Bind, what: string, addr: HostPort): Promise<Deno.TcpListener> {
  return bind(
    what,
    addr,
    () => Deno.listen({ hostname: addr.host, port: addr.port, ...sharedPortOptions() }),
  );
}
