import { assert, assertEquals } from "./_assert.ts";
import { holdResets, resetDenoSocket, resetSupport } from "../lib/net/reset.ts";
import { acceptWithin, countDlopens, listenLocal, readWithin } from "./_util.ts";

/**
 * lib/net/reset.ts holdResets(): a service holding libc for its resets opens it once for a
 * burst of them, not once per reset (~2 ms each; a storm of given-up depot requests paid 212 ms
 * of `op_ffi_load` in one profile round), and closes it when the last holder lets go (the
 * resource sanitizer checks that). Each reset still reaches the peer as a RST.
 */

const resets = resetSupport().available; // also looks the libc path up, once per process

/** `n` accepted connections reset one after another, each peer reading the RST. */
async function resetBurst(n: number): Promise<void> {
  const listener = listenLocal();
  try {
    for (let i = 0; i < n; i++) {
      const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
      const accepted = await acceptWithin(listener, `connection ${i}`);
      try {
        assertEquals(resetDenoSocket(accepted), true, `reset ${i}`);
        const got = await readWithin(client, new Uint8Array(1), `connection ${i}'s reset`).then(
          (r) => r,
          (e: unknown) => e,
        );
        assert(got instanceof Deno.errors.ConnectionReset, `connection ${i} read ${got}`);
      } finally {
        accepted.close();
        client.close();
      }
    }
  } finally {
    listener.close();
  }
}

Deno.test({
  name: "holdResets: a burst of resets while held opens libc once, and the release closes it",
  ignore: !resets,
  async fn() {
    const release = holdResets();
    let opens: number;
    try {
      opens = await countDlopens(() => resetBurst(5));
    } finally {
      release();
    }
    assertEquals(opens, 1);
    release(); // idempotent: a second call must not release another holder's hold
    const other = holdResets();
    const release2 = holdResets();
    release2();
    release2();
    try {
      assertEquals(await countDlopens(() => resetBurst(2)), 1, "still held by `other`");
    } finally {
      other();
    }
  },
});

Deno.test({
  name: "holdResets: without a holder each reset opens and closes libc itself",
  ignore: !resets,
  async fn() {
    assertEquals(await countDlopens(() => resetBurst(3)), 3);
  },
});

/** The next read of `c` rejects with a connection reset (not EOF, not data). */
async function assertReset(c: Deno.Conn, what: string): Promise<void> {
  const got = await readWithin(c, new Uint8Array(1), `${what}'s reset`).then(
    (n) => n,
    (e: unknown) => e,
  );
  assert(got instanceof Deno.errors.ConnectionReset, `${what} read ${got}`);
}

Deno.test({
  name:
    "resetDenoSocket: dialled conns made after the last descriptor scan are found and reset, no other",
  ignore: !resets,
  async fn() {
    const release = holdResets();
    const listener = listenLocal();
    const pairs: [Deno.TcpConn, Deno.Conn][] = [];
    const cut = [0, 5, 6, 99]; // reset or closed below
    const pair = async (what: string): Promise<[Deno.TcpConn, Deno.Conn]> => {
      const dialled = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
      return [dialled, await acceptWithin(listener, what)];
    };
    try {
      for (let i = 0; i < 100; i++) pairs.push(await pair(`pair ${i}`));
      // A dialled conn far past every descriptor known so far: found by listing them all.
      assertEquals(resetDenoSocket(pairs[99][0]), true);
      await assertReset(pairs[99][1], "pair 99");
      assertEquals(resetDenoSocket(pairs[0][0]), true);
      await assertReset(pairs[0][1], "pair 0");
      // Numbers freed and taken again by conns dialled after the scan, and one past them all.
      for (const i of cut) pairs[i].forEach((c) => c.close());
      const fresh = [await pair("fresh 1"), await pair("fresh 2"), await pair("fresh 3")];
      fresh.push(await pair("fresh 4"));
      for (const [i, [dialled, accepted]] of fresh.entries()) {
        assertEquals(resetDenoSocket(dialled), true, `fresh ${i + 1}`);
        await assertReset(accepted, `fresh ${i + 1}`);
        dialled.close();
        accepted.close();
      }
      // Every other conn is untouched: its bytes still go both ways.
      for (const [i, [dialled, accepted]] of pairs.entries()) {
        if (cut.includes(i)) continue;
        await dialled.write(Uint8Array.of(i));
        const buf = new Uint8Array(1);
        assertEquals(await readWithin(accepted, buf, `pair ${i}'s byte`), 1);
        assertEquals(buf[0], i);
        await accepted.write(buf);
        assertEquals(await readWithin(dialled, buf, `pair ${i}'s answer`), 1);
      }
    } finally {
      for (const [i, p] of pairs.entries()) {
        if (!cut.includes(i)) p.forEach((c) => c.close());
      }
      listener.close();
      release();
    }
  },
});
