/**
 * The exposure check of a depot-server, before it binds anything: like seaprox's open-proxy
 * guard, a depot that anyone can join as an exit (no token) or whose SOCKS listener anyone on
 * the network can use (depot SOCKS has no credential of its own: only exits with a password
 * ask for one) must be asked for explicitly with `--allow-open`.
 * @module
 */

import { type HostPort, isLoopbackHost, joinHostPort } from "../net/addr.ts";

/** What a depot-server is about to expose. */
export interface DepotExposure {
  /** The shared control token ("" = none). */
  token: string;
  /** The SOCKS listener address. */
  socks: HostPort;
  /** `--allow-open`: the operator wants it so. */
  allowOpen: boolean;
}

/** Why this depot-server must not start (one line), or undefined when it may. */
export function depotOpenProblem(o: DepotExposure): string | undefined {
  if (o.allowOpen) return undefined;
  if (o.token === "") {
    return "refusing to run without --token / DEPOT_TOKEN: any program reaching the control " +
      "port could become an exit (--allow-open if that is really intended)";
  }
  if (!isLoopbackHost(o.socks.host)) {
    return `refusing an open SOCKS5 listener on ${joinHostPort(o.socks.host, o.socks.port)} ` +
      "(depot SOCKS has no password of its own; bind it to loopback, or --allow-open if that " +
      "is really intended)";
  }
  return undefined;
}
