/**
 * lib/depot/tunnel_end.ts: a plain tunnel's FIN counts only once its `end` is confirmed; an
 * unconfirmed one fails when the control connection ends, when the wait runs out, or when the
 * tunnel is closed first.
 */

import { assert, assertEquals, assertMatch, assertRejects } from "./_assert.ts";
import { ConfirmedEnd, ReportedEnd, UnconfirmedEndError } from "../lib/depot/tunnel_end.ts";
import type { Duplex } from "../lib/net/mod.ts";
import { within } from "./_util.ts";

/** A tunnel that yields `data` once, then EOF. */
function tunnel(data: Uint8Array): Duplex & { closed: boolean } {
  let sent = false;
  const t = {
    closed: false,
    read: (p: Uint8Array) => {
      if (sent) return Promise.resolve(null);
      sent = true;
      p.set(data);
      return Promise.resolve(data.length);
    },
    write: (p: Uint8Array) => Promise.resolve(p.length),
    closeWrite: () => Promise.resolve(),
    close: () => {
      t.closed = true;
    },
  };
  return t;
}

const buf = new Uint8Array(16);

/** The gate's answer to a read waiting on it (bounded: a gate that never answers fails). */
function gated<T>(read: Promise<T>, what: string): Promise<T> {
  return within(read, `the gate's answer: ${what}`);
}

/** `err` is the gate's refusal, saying `why`. */
function assertUnconfirmed(err: Error, why: string): void {
  assert(err instanceof UnconfirmedEndError, String(err));
  assertMatch(err.message, new RegExp(why));
}

Deno.test("tunnel end: a FIN confirmed before or after it arrives is an EOF", async () => {
  const early = new ConfirmedEnd(tunnel(Uint8Array.of(1, 2)), 60_000);
  early.confirm();
  assertEquals(await early.read(buf), 2);
  assertEquals(await gated(early.read(buf), "EOF, confirmed before"), null);
  const late = new ConfirmedEnd(tunnel(Uint8Array.of(1)), 60_000);
  assertEquals(await late.read(buf), 1);
  const eof = late.read(buf);
  await new Promise((r) => setTimeout(r, 0));
  late.confirm();
  assertEquals(await gated(eof, "EOF, confirmed after"), null);
});

Deno.test("tunnel end: the control connection's end fails a FIN, waiting or to come", async () => {
  const waiting = new ConfirmedEnd(tunnel(Uint8Array.of(1)), 60_000);
  assertEquals(await waiting.read(buf), 1);
  const eof = waiting.read(buf);
  await new Promise((r) => setTimeout(r, 0));
  waiting.fail();
  assertUnconfirmed(
    await assertRejects(gated(eof, "a failed FIN, waiting")),
    "control connection ended",
  );
  const before = new ConfirmedEnd(tunnel(Uint8Array.of(1)), 60_000);
  before.fail();
  before.confirm(); // too late: the failure stands
  assertEquals(await before.read(buf), 1);
  assertUnconfirmed(
    await assertRejects(gated(before.read(buf), "a failed FIN, to come")),
    "control connection ended",
  );
});

Deno.test("tunnel end: no confirmation in time, or a close first, fails the FIN", async () => {
  const slow = new ConfirmedEnd(tunnel(Uint8Array.of(1)), 30);
  assertEquals(await slow.read(buf), 1);
  // The wait is on the shared deadline wheel, which does not keep a process alive.
  const alive = setTimeout(() => {}, 60_000);
  assertUnconfirmed(
    await assertRejects(gated(slow.read(buf), "a FIN past its wait")),
    "no end confirmation within",
  );
  clearTimeout(alive);
  const inner = tunnel(Uint8Array.of(1));
  const closed = new ConfirmedEnd(inner, 60_000);
  assertEquals(await closed.read(buf), 1);
  const eof = closed.read(buf);
  await new Promise((r) => setTimeout(r, 0));
  closed.close();
  assertUnconfirmed(
    await assertRejects(gated(eof, "a FIN of a closed tunnel")),
    "tunnel closed before the end",
  );
  assertEquals(inner.closed, true);
});

Deno.test("tunnel end: the local reports the end before its FIN goes; a lost control connection does not fail the FIN", async () => {
  const order: string[] = [];
  const inner: Duplex = {
    ...tunnel(new Uint8Array(0)),
    closeWrite: () => {
      order.push("fin");
      return Promise.resolve();
    },
  };
  const ctl = {
    send: (m: { type: "end"; id: number }) => {
      order.push(`${m.type} ${m.id}`);
      return Promise.resolve();
    },
  };
  // Everything before the FIN is written when the relay calls closeWrite: the report may go
  // first, and so is usually at the server before the FIN (which then passes at once).
  await new ReportedEnd(inner, ctl, 7).closeWrite();
  assertEquals(order, ["end 7", "fin"]);
  const gone = { send: () => Promise.reject(new Error("control connection closed")) };
  await new ReportedEnd(inner, gone, 8).closeWrite(); // the server resets the client itself
  assertEquals(order, ["end 7", "fin", "fin"]);
  const failing: Duplex = { ...inner, closeWrite: () => Promise.reject(new Error("reset")) };
  const err = await assertRejects(() => new ReportedEnd(failing, ctl, 9).closeWrite());
  assertMatch(err.message, /reset/);
});
