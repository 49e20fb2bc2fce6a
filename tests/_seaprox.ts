/**
 * Test helpers of the seaprox area: raw TCP servers (echo-after-EOF, block source) and a
 * socket-level HTTP/SOCKS client toolbox.
 */

import { closeQuietly, type Duplex, writeAll } from "../lib/net/mod.ts";
import { listenLocal, portOf, readAll, sendBlocks, startService, within } from "./_util.ts";

/** A raw TCP server on 127.0.0.1:0 running `onConn` per connection. */
export interface RawServer {
  port: number;
  /** Connections accepted so far. */
  accepted: number;
  /** Stop accepting, close live connections, wait for handlers. */
  close(): Promise<void>;
}

/** Start a raw TCP server; each connection is closed when `onConn` settles. */
export function rawServer(onConn: (c: Deno.TcpConn) => Promise<void>): RawServer {
  const l = listenLocal();
  const live = new Set<Deno.TcpConn>();
  const pending = new Set<Promise<void>>();
  const srv: RawServer = {
    port: l.addr.port,
    accepted: 0,
    close: async () => {
      closeQuietly(l);
      await loop;
      for (const c of live) closeQuietly(c);
      await Promise.allSettled([...pending]);
    },
  };
  const loop = (async () => {
    while (true) {
      let c: Deno.TcpConn;
      try {
        c = await l.accept();
      } catch {
        return; // listener closed
      }
      srv.accepted++;
      live.add(c);
      const p = onConn(c).catch(() => {
        // a test peer vanishing mid-answer is not this helper's failure
      }).finally(() => {
        live.delete(c);
        closeQuietly(c);
      });
      pending.add(p);
      p.finally(() => pending.delete(p));
    }
  })();
  return srv;
}

/** Reads the whole request to EOF, then answers `got <n>: <request>` and closes. */
export function echoAfterEofServer(): RawServer {
  return rawServer(async (c) => {
    const req = await readAll(c, "the request to its EOF");
    // Answer in several pieces after the client's FIN, so a proxy that closed the reply
    // direction at the client's EOF is caught.
    const head = new TextEncoder().encode(`got ${req.length}: `);
    await writeAll(c, head);
    await new Promise((r) => setTimeout(r, 20));
    await writeAll(c, req);
    await c.closeWrite();
  });
}

/** Sends the block stream of `total` bytes (seed `seed`) to every client, then FIN. */
export function blockSourceServer(total: number, seed = 0): RawServer {
  return rawServer(async (c) => {
    await sendBlocks(c, total, seed);
    await c.closeWrite();
    // Wait for the client to finish so our close does not reset unread data.
    await readAll(c, "the client's EOF after the blocks");
  });
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/**
 * Send `text`, shut our write side, read the whole answer (each read bounded: a peer that
 * neither answers nor closes fails, named, after `readIdleMs`).
 */
export async function askAfterEof(c: Duplex, text: string): Promise<string> {
  await within(writeAll(c, enc.encode(text)), `the write of ${text.length} bytes to be taken`);
  await c.closeWrite();
  return dec.decode(await readAll(c, "the answer after our EOF"));
}

/**
 * Read bytes until `\r\n\r\n`; returns the head (no more bytes are consumed). Bounded: a peer
 * that sends no complete head fails, naming what came, after `timeoutMs` (default 60 s).
 */
export async function readHttpHead(c: Duplex, timeoutMs = 60_000): Promise<string> {
  let head = "";
  const one = new Uint8Array(1);
  const read = async () => {
    while (!head.endsWith("\r\n\r\n")) {
      const n = await c.read(one);
      if (n === null) throw new Error(`EOF in HTTP head: ${JSON.stringify(head)}`);
      head += String.fromCharCode(one[0]);
      if (head.length > 16384) throw new Error("HTTP head too long");
    }
    return head;
  };
  return await within(read(), () => `an HTTP head, got ${JSON.stringify(head)}`, timeoutMs);
}

/** Wait until `cond()` holds (polling), or throw after `timeoutMs`. */
export async function waitUntil(cond: () => boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`condition not reached in ${timeoutMs} ms: ${cond}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Start services/seaprox.ts with these listener URLs (port 0) and extra flags. */
export function startSeaproxService(
  listen: string[],
  extra: string[] = [],
): ReturnType<typeof startService> {
  return startService(
    "seaprox.ts",
    [...listen.flatMap((u) => ["--listen", u]), "--prefer-ipv4", ...extra],
    { readyCount: listen.length },
  );
}

/** `host:port` of listener `name` of a started service, as a port number. */
export function portFor(svc: { addrs: Map<string, string> }, name: string): number {
  const a = svc.addrs.get(name);
  if (!a) throw new Error(`no listener ${name} among ${[...svc.addrs.keys()]}`);
  return portOf(a);
}
