/**
 * TCP_NODELAY read off a socket of this very process through libc's getsockopt (the test's own
 * FFI, not the code under test): how tests check that accepted and dialled sockets have Nagle
 * off without timing anything.
 * @module
 */

import { assertEquals } from "./_assert.ts";
import { libcPath } from "../lib/net/libc.ts";

/** TCP_NODELAY (0/1) of this process's TCP socket whose ends are `localPort`/`remotePort`. */
export function noDelayOf(localPort: number, remotePort: number): number {
  const path = libcPath();
  if (path === null) throw new Error("this test needs Linux, glibc and -A");
  const lib = Deno.dlopen(path, {
    getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
    getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
    getpeername: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  });
  try {
    const port = (call: typeof lib.symbols.getsockname, fd: number): number => {
      const a = new Uint8Array(128);
      const len = new Uint8Array(new Uint32Array([a.length]).buffer);
      return call(fd, a, len) === 0 ? (a[2] << 8) | a[3] : -1;
    };
    for (const e of Deno.readDirSync("/proc/self/fd")) {
      const fd = Number(e.name);
      if (port(lib.symbols.getsockname, fd) !== localPort) continue;
      if (port(lib.symbols.getpeername, fd) !== remotePort) continue;
      const v = new Uint8Array(4);
      const len = new Uint8Array(new Uint32Array([4]).buffer);
      assertEquals(lib.symbols.getsockopt(fd, 6, 1, v, len), 0); // IPPROTO_TCP, TCP_NODELAY
      return new Int32Array(v.buffer)[0];
    }
    throw new Error(`no socket ${localPort}/${remotePort} in this process`);
  } finally {
    lib.close();
  }
}
