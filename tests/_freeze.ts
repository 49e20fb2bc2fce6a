/** A relay the cluster tests freeze: a peer that stops answering while TCP stays open. */

import { writeAll } from "../lib/net/mod.ts";
import { listenLocal } from "./_util.ts";

/** Close `c` unless it is closed already. */
function shut(c: Deno.Conn): void {
  try {
    c.close();
  } catch {
    // Closed already (by the other direction's pump, or the relay's close).
  }
}

/** A running {@linkcode freezableRelay}. */
export interface FreezableRelay {
  /** Where it listens (127.0.0.1). */
  port: number;
  /** Stop passing bytes, both ways, on every connection (new ones too). */
  freeze(): void;
  /** Pass them again (what was held first). */
  thaw(): void;
  /** Close the listener and every connection. */
  close(): Promise<void>;
}

/**
 * A TCP relay to `port` on loopback that passes nothing while frozen: the connections stay
 * open, what comes in is held (a peer stopped, swapped out, or behind a network that drops).
 */
export function freezableRelay(port: number): FreezableRelay {
  const l = listenLocal();
  let frozen: PromiseWithResolvers<void> | undefined;
  const conns = new Set<Deno.Conn>();
  const pumps = new Set<Promise<void>>();
  const pump = async (from: Deno.Conn, to: Deno.Conn) => {
    const buf = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const n = await from.read(buf);
        if (n === null) break;
        if (frozen) await frozen.promise;
        await writeAll(to, buf.subarray(0, n));
      }
      await to.closeWrite();
    } catch {
      // One side closed or reset its connection: the other is closed below.
    }
    shut(from);
    shut(to);
  };
  const track = (p: Promise<void>) => {
    pumps.add(p);
    p.finally(() => pumps.delete(p));
  };
  const accepting = (async () => {
    for await (const c of l) {
      conns.add(c);
      track(
        (async () => {
          const up = await Deno.connect({ hostname: "127.0.0.1", port });
          conns.add(up);
          await Promise.all([pump(c, up), pump(up, c)]);
          conns.delete(c);
          conns.delete(up);
        })().catch(() => c.close()),
      );
    }
  })();
  return {
    port: l.addr.port,
    freeze() {
      frozen = Promise.withResolvers<void>();
    },
    thaw() {
      frozen?.resolve();
      frozen = undefined;
    },
    async close() {
      this.thaw();
      l.close();
      await accepting.catch(() => {/* the listener closed */});
      for (const c of conns) shut(c);
      await Promise.allSettled([...pumps]);
    },
  };
}
