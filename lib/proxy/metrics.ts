/**
 * seaprox's counters (lib/stats, exported as Prometheus text by lib/metrics): connections by
 * listener, open now, bytes each way, failures by reason, set-up time; and the bytes of
 * finished connections the status page adds to the live ones. The `seaprox_*` names of the
 * first release stay for one more (see the README's deprecation note).
 * @module
 */

import { counter, gauge, histogram } from "../stats.ts";
import type { ProxyHooks } from "./server.ts";

/** Connection ends that are not errors. */
const okEnds: ReadonlySet<string> = new Set(["done", "idle", "closed"]);

/** seaprox's stats: pass `hooks` to `startSeaprox`, read `closedBytes` for byte rates. */
export class SeaproxStats {
  /** Bytes of finished connections (live ones come from their snapshots). */
  readonly closedBytes = { up: 0, down: 0 };
  /** Connections that ended badly, by `end` or `end:failure` (the page's failure table). */
  readonly failures: Map<string, number> = new Map();
  /** Connections that ended well (done, idle, closed), beside `failures` on the page. */
  closedOk = 0;
  readonly #total = counter(
    "warren_seaprox_connections_total",
    "Connections accepted, by listener",
    ["listener"],
    undefined,
    { deprecatedName: "seaprox_connections_total" },
  );
  readonly #active = gauge(
    "warren_seaprox_connections_active",
    "Connections open now",
    [],
    undefined,
    { deprecatedName: "seaprox_connections_active" },
  );
  readonly #bytes = counter(
    "warren_seaprox_bytes_total",
    "Bytes relayed, by direction (up = client to destination)",
    ["direction"],
  );
  readonly #oldIn = counter("seaprox_bytes_in_total", "Deprecated: warren_seaprox_bytes_total");
  readonly #oldOut = counter("seaprox_bytes_out_total", "Deprecated: warren_seaprox_bytes_total");
  readonly #errors = counter(
    "warren_seaprox_errors_total",
    "Connections that ended badly, by reason (end, or end:failure)",
    ["reason"],
    undefined,
    { deprecatedName: "seaprox_errors_total" },
  );
  readonly #setup = histogram(
    "warren_seaprox_connect_seconds",
    "From accept to the destination connected (observed when the connection closes)",
    ["listener"],
  );

  // Series bound once (lib/stats `series`): every connection counts into them.
  readonly #bytesUp = this.#bytes.series({ direction: "up" });
  readonly #bytesDown = this.#bytes.series({ direction: "down" });
  // Label-less ones too: an unbound inc() builds its label key (and an array, an object) per
  // call, four calls per connection.
  readonly #activeNow = this.#active.series({});
  readonly #oldInAll = this.#oldIn.series({});
  readonly #oldOutAll = this.#oldOut.series({});
  readonly #perListener = new Map<
    string,
    { total: { inc(): void }; setup: { observe(seconds: number): void } }
  >();

  /** The series of `listener`'s connections. */
  #of(listener: string) {
    let s = this.#perListener.get(listener);
    if (!s) {
      s = { total: this.#total.series({ listener }), setup: this.#setup.series({ listener }) };
      this.#perListener.set(listener, s);
    }
    return s;
  }

  /** The hooks that count (a connection refused by the limit is counted, never active). */
  readonly hooks: ProxyHooks = {
    onOpen: (c) => {
      this.#of(c.listener).total.inc();
      this.#activeNow.inc();
    },
    onClose: (r) => {
      if (r.end === "limit") this.#of(r.listener).total.inc();
      else this.#activeNow.dec();
      this.#bytesUp.inc(r.bytesUp);
      this.#bytesDown.inc(r.bytesDown);
      this.#oldInAll.inc(r.bytesUp);
      this.#oldOutAll.inc(r.bytesDown);
      this.closedBytes.up += r.bytesUp;
      this.closedBytes.down += r.bytesDown;
      if (r.setupMs !== undefined) this.#of(r.listener).setup.observe(r.setupMs / 1000);
      if (okEnds.has(r.end)) this.closedOk++;
      else {
        const reason = r.failure ? `${r.end}:${r.failure}` : r.end;
        this.#errors.inc({ reason });
        this.failures.set(reason, (this.failures.get(reason) ?? 0) + 1);
      }
    },
  };
}
