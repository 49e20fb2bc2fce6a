/**
 * LinkWait (lib/proxy/link_wait.ts): the dials of a link client (TCP mux or QUIC) waiting for
 * its link take it once it is up, fail with the last connect failure's reason, with "aborted"
 * on their own signal, and with "link down" / "link closed" otherwise.
 */

import { assertEquals, assertRejects } from "./_assert.ts";
import { NetError } from "../lib/net/mod.ts";
import { LinkWait } from "../lib/proxy/link_wait.ts";
import { within } from "./_util.ts";

const never = new AbortController().signal;

Deno.test("link wait: waiting dials take the link once it is up; an up link is taken at once", async () => {
  let link: string | null = null;
  const w = new LinkWait(() => link, never, 60_000);
  const waiting = [w.get(never), w.get(never)];
  link = "session";
  w.up();
  assertEquals(await within(Promise.all(waiting), "the waiting dials"), ["session", "session"]);
  assertEquals(await w.get(never), "session");
});

Deno.test("link wait: a failed connect fails the waiting dials with its reason", async () => {
  const w = new LinkWait<string>(() => null, never, 60_000);
  const waiting = w.get(never);
  const e = w.failed(new NetError("refused", "connection refused"));
  assertEquals(e.reason, "refused");
  const err = await within(waiting.catch((x) => x), "the failed dial");
  assertEquals([err instanceof NetError, err.reason, err.message], [
    true,
    "refused",
    "link down: connection refused",
  ]);
  // Not a NetError: "other", with its message.
  const next = w.get(never);
  assertEquals(w.failed(new Error("boom")).reason, "other");
  assertEquals((await within(next.catch((x) => x), "the next dial")).message, "link down: boom");
});

Deno.test("link wait: a dial's own abort, the wait's bound and the client's stop", async () => {
  const stop = new AbortController();
  const w = new LinkWait<string>(() => null, stop.signal, 20);
  const ac = new AbortController();
  const aborted = w.get(ac.signal);
  ac.abort();
  const a = await within(aborted.catch((x) => x), "the aborted dial");
  assertEquals([a.reason, a.message], ["aborted", "dial aborted"]);
  const b = await within(w.get(never).catch((x) => x), "the dial past waitMs");
  assertEquals([b.reason, b.message], ["other", "link down"]);
  stop.abort();
  assertEquals((await assertRejects(() => w.get(never))).message, "link closed");
});

Deno.test("link wait: the client's stop ends the dials already waiting ('link closed'), not waitMs later", async () => {
  const stop = new AbortController();
  const w = new LinkWait<string>(() => null, stop.signal, 600_000);
  const waiting = w.get(never).catch((x) => x);
  stop.abort();
  // Bounded far below waitMs: the old wait ran its whole waitMs, keeping a timer and the
  // dial's client connection after the client was closed.
  const e = await within(waiting, "the waiting dial after the client's stop", 30_000);
  assertEquals([e instanceof NetError, e.reason, e.message], [true, "other", "link closed"]);
});
