/**
 * seaprox's counters (lib/stats, exported as Prometheus text by lib/metrics): connections by
 * listener, open now, bytes each way, bad ends by reason; and the bytes of finished
 * connections the status page adds to the live ones.
 * @module
 */

import { counter, gauge } from "../stats.ts";
import type { ProxyHooks } from "./server.ts";

/** Connection ends that are not errors. */
const okEnds: ReadonlySet<string> = new Set(["done", "idle", "closed"]);

/** seaprox's stats: pass `hooks` to `startSeaprox`, read `closedBytes` for byte rates. */
export class SeaproxStats {
  /** Bytes of finished connections (live ones come from their snapshots). */
  readonly closedBytes = { up: 0, down: 0 };
  readonly #total = counter("seaprox_connections_total", "connections accepted", ["listener"]);
  readonly #active = gauge("seaprox_connections_active", "connections open now");
  readonly #in = counter("seaprox_bytes_in_total", "bytes from clients to destinations");
  readonly #out = counter("seaprox_bytes_out_total", "bytes from destinations to clients");
  readonly #errors = counter("seaprox_errors_total", "connections that ended badly", ["reason"]);

  /** The hooks that count (a connection refused by the limit is counted, never active). */
  readonly hooks: ProxyHooks = {
    onOpen: (c) => {
      this.#total.inc({ listener: c.scheme });
      this.#active.inc();
    },
    onClose: (r) => {
      if (r.end === "limit") this.#total.inc({ listener: r.scheme });
      else this.#active.dec();
      this.#in.inc(r.bytesUp);
      this.#out.inc(r.bytesDown);
      this.closedBytes.up += r.bytesUp;
      this.closedBytes.down += r.bytesDown;
      if (!okEnds.has(r.end)) {
        this.#errors.inc({ reason: r.failure ? `${r.end}:${r.failure}` : r.end });
      }
    },
  };
}
