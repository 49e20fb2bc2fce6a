import { assertEquals } from "./_assert.ts";
import { closeQuietly, type Duplex, resetQuietly } from "../lib/net/mod.ts";

/** A close that counts its calls and throws after the first, as Deno's conns do. */
class Counted {
  closes = 0;
  close(): void {
    if (++this.closes > 1) throw new Deno.errors.BadResource("closed twice");
  }
}

Deno.test("closeQuietly: closes once, a second call does nothing", () => {
  const c = new Counted();
  closeQuietly(c);
  closeQuietly(c);
  assertEquals(c.closes, 1);
  closeQuietly(undefined);
  closeQuietly(null);
});

Deno.test("closeQuietly: a frozen object is closed once as well", () => {
  let closes = 0;
  const c = Object.freeze({ close: () => void closes++ });
  closeQuietly(c);
  closeQuietly(c);
  assertEquals(closes, 1);
});

Deno.test("closeQuietly: a close that throws is swallowed and counts as closed", () => {
  let closes = 0;
  const c = {
    close: () => {
      closes++;
      throw new Error("never opened");
    },
  };
  closeQuietly(c);
  closeQuietly(c);
  assertEquals(closes, 1);
});

Deno.test("resetQuietly: after closeQuietly, nothing is reset or closed again", () => {
  let resets = 0;
  const c = new Counted() as Counted & { reset(): void };
  c.reset = () => void resets++;
  closeQuietly(c);
  resetQuietly(c as unknown as Duplex);
  assertEquals([c.closes, resets], [1, 0]);
});
