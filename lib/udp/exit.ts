/**
 * `UdpExit`: the destination half of a UDP association -- where a client's datagrams leave
 * for their destinations and the answers come back. Each datagram's destination is checked
 * against the ACL (by name, then every resolved address; only an allowed address is used),
 * sent from one outbound socket per address family, and remembered as a flow: only
 * destinations the client sent to may answer. Datagrams leave in the order they were handed
 * in (a name to resolve holds the ones behind it, within the queued-byte bound). seaprox runs
 * it beside the client half (lib/udp `UdpAssociation`); a depot-local runs it at the far end
 * of a tunnel.
 * @module
 */

import type { Acl } from "../net/acl.ts";
import { type HostPort, joinHostPort } from "../net/addr.ts";
import { resolveHost } from "../net/dial.ts";
import { errorMessage } from "../net/errors.ts";
import { unmappedIp } from "./associate.ts";
import type { Flow, FlowTable } from "./flows.ts";
import type { UdpTally } from "./metrics.ts";
import { sendCounted } from "./send.ts";
import { UdpSocket } from "./socket.ts";

/** Where datagrams may go and how names resolve. */
export interface UdpExitOptions {
  /** Checked on every datagram's destination, by name and by each resolved address. */
  acl?: Acl;
  /** Address family tried first when a destination name resolves to both. @default "ipv6" */
  prefer?: "ipv6" | "ipv4";
}

/** An answer from `src` for the client. */
export type UdpAnswerHandler = (src: HostPort, payload: Uint8Array) => void;

/** The destination half of an association; `close` it when the association ends. */
export class UdpExit {
  readonly #table: FlowTable<Flow>;
  readonly #tally: Pick<UdpTally, "up">;
  readonly #opts: UdpExitOptions;
  readonly #onAnswer: UdpAnswerHandler;
  readonly #out = new Map<4 | 6, Promise<UdpSocket>>();
  /** Datagrams are sent one after another, so they leave in the order they came. */
  #chain: Promise<void> = Promise.resolve();
  #closed = false;

  /**
   * An exit counting drops in `table.drops` and destinations as `table`'s flows (their idle
   * timeout and bound apply); answers go to `onAnswer`.
   */
  constructor(
    table: FlowTable<Flow>,
    tally: Pick<UdpTally, "up">,
    opts: UdpExitOptions,
    onAnswer: UdpAnswerHandler,
  ) {
    this.#table = table;
    this.#tally = tally;
    this.#opts = opts;
    this.#onAnswer = onAnswer;
  }

  /**
   * Send `payload` to `dest` after the datagrams before it. Never throws: a refusal, a name
   * that does not resolve or a failed send is a counted drop. `payload` must stay unchanged
   * until it is sent.
   */
  send(dest: HostPort, payload: Uint8Array): void {
    if (this.#closed) return;
    // Held in the queue budget while it waits behind earlier datagrams (a name to resolve).
    if (!this.#table.reserve(payload.length)) return;
    this.#chain = this.#chain.then(async () => {
      try {
        await this.#send(dest, payload);
      } finally {
        this.#table.release(payload.length);
      }
    });
  }

  /** Close the outbound sockets and the flow table (idempotent). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#table.close();
    for (const p of this.#out.values()) {
      // A socket still binding is closed when it is ready; a failed bind left nothing.
      p.then((s) => s.close(), () => {});
    }
  }

  async #send(dest: HostPort, payload: Uint8Array): Promise<void> {
    const drops = this.#table.drops;
    const target = joinHostPort(dest.host, dest.port);
    const acl = this.#opts.acl && !this.#opts.acl.empty ? this.#opts.acl : undefined;
    const byName = acl?.refusesName(dest);
    if (byName) return drops.drop("not-allowed", `${target} refused by ${byName.rule}`);
    let addrs: string[];
    try {
      addrs = await resolveHost(dest.host, this.#opts.prefer ?? "ipv6");
    } catch (err) {
      return drops.drop("resolve", errorMessage(err));
    }
    const ip = acl ? addrs.find((a) => acl.check(dest, a).allowed) : addrs[0];
    if (ip === undefined) return drops.drop("not-allowed", `${target} refused by the ACL`);
    if (this.#closed) return;
    const to = { host: unmappedIp(ip), port: dest.port };
    this.#table.getOrOpen(joinHostPort(to.host, to.port), () => ({ close: () => {} }));
    const out = await this.#outbound(to.host.includes(":") ? 6 : 4);
    if (!out || this.#closed || !sendCounted(out, payload, to, this.#table)) return;
    this.#tally.up(payload.length);
  }

  /** The outbound socket of one family, bound on first use (undefined if it cannot be). */
  async #outbound(family: 4 | 6): Promise<UdpSocket | undefined> {
    let p = this.#out.get(family);
    if (!p) {
      p = UdpSocket.bind(family === 6 ? "::" : "0.0.0.0", 0);
      this.#out.set(family, p);
      p.then(
        (s) => s.onMessage = this.#table.drops.guard((data, from) => this.#fromDest(data, from)),
        () => {}, // a failed bind is reported where it is awaited, below
      );
    }
    try {
      return await p;
    } catch (err) {
      this.#table.drops.drop("send-failed", `no IPv${family} socket: ${errorMessage(err)}`);
      return undefined;
    }
  }

  #fromDest(data: Uint8Array, from: HostPort): void {
    const src = { host: unmappedIp(from.host), port: from.port };
    const key = joinHostPort(src.host, src.port);
    if (!this.#table.get(key)) return this.#table.drops.drop("wrong-source", `answer from ${key}`);
    this.#onAnswer(src, data);
  }
}
