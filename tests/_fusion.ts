/** Helpers of the fusion tests: a fault-injecting TCP link and a hashing target server. */
import { closeQuietly, type Duplex, writeAll } from "../lib/net/mod.ts";
import { drainHash, listenLocal, sendBlocks } from "./_util.ts";

/**
 * A TCP forwarder standing in for one network path: `cut()` closes its live connections
 * (link down), `down` refuses new ones, `silence()` stops moving bytes without closing
 * anything (a blackhole), `restore()` undoes both.
 */
export class FaultyLink {
  readonly listener: Deno.TcpListener;
  readonly port: number;
  down = false;
  #silent = false;
  #unsilence: (() => void)[] = [];
  #conns = new Set<Duplex>();
  #loops = new Set<Promise<void>>();
  #accepting: Promise<void>;
  bytes = 0;

  /** `rateBytesPerSec`: pace each direction of each connection (0 = unpaced). */
  constructor(readonly upstreamPort: number, readonly rateBytesPerSec = 0) {
    this.listener = listenLocal();
    this.port = this.listener.addr.port;
    this.#accepting = this.#accept();
  }

  async #accept(): Promise<void> {
    for await (const c of this.listener) {
      if (this.down) {
        closeQuietly(c);
        continue;
      }
      const p = this.#serve(c);
      this.#loops.add(p);
      p.finally(() => this.#loops.delete(p));
    }
  }

  async #serve(a: Deno.TcpConn): Promise<void> {
    let b: Deno.TcpConn;
    try {
      b = await Deno.connect({ hostname: "127.0.0.1", port: this.upstreamPort });
    } catch {
      closeQuietly(a);
      return;
    }
    this.#conns.add(a);
    this.#conns.add(b);
    const pump = async (src: Duplex, dst: Duplex) => {
      const buf = new Uint8Array(64 * 1024);
      const started = Date.now();
      let moved = 0;
      try {
        while (true) {
          while (this.#silent) await new Promise<void>((r) => this.#unsilence.push(r));
          const n = await src.read(buf);
          if (n === null) break;
          while (this.#silent) await new Promise<void>((r) => this.#unsilence.push(r));
          await writeAll(dst, buf.subarray(0, n));
          this.bytes += n;
          moved += n;
          if (this.rateBytesPerSec > 0) {
            const due = started + moved / this.rateBytesPerSec * 1000 - Date.now();
            if (due > 1) await new Promise((r) => setTimeout(r, due));
          }
        }
        await dst.closeWrite();
      } catch {
        // cut or reset: the other pump notices through the closed sockets
      }
    };
    await Promise.all([pump(a, b), pump(b, a)]);
    closeQuietly(a);
    closeQuietly(b);
    this.#conns.delete(a);
    this.#conns.delete(b);
  }

  /** Close every live connection through this link. */
  cut(): void {
    for (const c of this.#conns) closeQuietly(c);
  }

  /** Stop forwarding bytes (connections stay open). */
  silence(): void {
    this.#silent = true;
  }

  /** Forward again and accept again. */
  restore(): void {
    this.down = false;
    this.#silent = false;
    for (const r of this.#unsilence.splice(0)) r();
  }

  async close(): Promise<void> {
    this.restore();
    closeQuietly(this.listener);
    this.cut();
    await this.#accepting;
    await Promise.all([...this.#loops]);
  }
}

/**
 * A target that, per connection, hashes what it receives and sends `sendBytes` of the block
 * stream (seed 2) back. `results` get one entry per finished connection.
 */
export function startHashTarget(sendBytes: number): {
  port: number;
  results: { bytes: number; sha256: string }[];
  close(): Promise<void>;
} {
  const listener = listenLocal();
  const results: { bytes: number; sha256: string }[] = [];
  const live = new Set<Promise<void>>();
  const loop = (async () => {
    for await (const c of listener) {
      const p = (async () => {
        try {
          const [got] = await Promise.all([
            drainHash(c),
            sendBlocks(c, sendBytes, 2).then(() => c.closeWrite()),
          ]);
          results.push(got);
        } catch {
          // a test that aborts mid-transfer: the result stays missing
        } finally {
          closeQuietly(c);
        }
      })();
      live.add(p);
      p.finally(() => live.delete(p));
    }
  })();
  return {
    port: listener.addr.port,
    results,
    close: async () => {
      closeQuietly(listener);
      await loop;
      await Promise.all([...live]);
    },
  };
}
