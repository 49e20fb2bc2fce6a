/** Helpers for the control and depot tests: loopback TCP pairs and frame builders. */
import { listenLocal } from "./_util.ts";

/** A connected pair of loopback TCP connections. */
export async function tcpPair(): Promise<[Deno.TcpConn, Deno.TcpConn]> {
  const l = listenLocal();
  try {
    const [a, b] = await Promise.all([
      Deno.connect({ hostname: "127.0.0.1", port: l.addr.port }),
      l.accept(),
    ]);
    return [a, b];
  } finally {
    l.close();
  }
}

/** A raw frame: u32 BE length + bytes (for hand-made, possibly invalid, messages). */
export function rawFrame(body: string | Uint8Array, lengthOverride?: number): Uint8Array {
  const b = typeof body === "string" ? new TextEncoder().encode(body) : body;
  const out = new Uint8Array(4 + b.length);
  new DataView(out.buffer).setUint32(0, lengthOverride ?? b.length);
  out.set(b, 4);
  return out;
}

/** Concatenate byte arrays. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) (out.set(p, o), o += p.length);
  return out;
}
