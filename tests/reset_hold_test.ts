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
