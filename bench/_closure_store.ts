/**
 * `deno run -A bench/_closure_store.ts [--objects 300] [--rounds 6] [--only REGEX]`: which ways
 * of giving a short-lived object a function make V8's scavenges keep it (issue 20; bench/RESULTS.md,
 * dplain's section). Per variant, a child process (`--expose-gc --trace-gc-nvp`) makes
 * `--objects` objects of ~5 KB (each holds 200 small objects) per round, keeps only the last
 * one, and runs a young-generation GC after each round; printed: the bytes its scavenges
 * promoted in all, per object made. An object that nothing old points to is freed by the
 * scavenge (~0 B); one kept is promoted whole (~5,000 B) and stays until a full GC.
 * No I/O, no lib/ code: the pattern alone (bench/RESULTS.md, mgc's "what keeps finished
 * connections through scavenges": a function literal on the right of a property assignment is
 * allocated old, and keeps its young context through every scavenge until a full GC).
 * @module
 */

import { benchFlags, gcNum, gcTraceLines } from "./_util.ts";

/** A short-lived object's weight: what a kept one adds to the promoted bytes. */
function ballast(): { x: number }[] {
  return Array.from({ length: 200 }, (_, x) => ({ x }));
}

/** Where a function goes that some variants store (a method, the same every time). */
const sink = {
  n: 0,
  del(_o: object): void {
    this.n--;
  },
};

function shared(): void {}

/** `this.f = () => ...` in the constructor: a closure literal stored on the object it made. */
class CtorArrow {
  readonly big = ballast();
  f: () => void;
  constructor() {
    this.f = () => sink.del(this);
  }
}

/** As CtorArrow, the closure capturing nothing. */
class CtorArrowNoCapture {
  readonly big = ballast();
  f: () => number;
  constructor() {
    this.f = () => 1;
  }
}

/** An arrow class field (what LiveConn.handshakeDone was). */
class FieldArrow {
  readonly big = ballast();
  readonly f = (): void => sink.del(this);
}

/**
 * An arrow class field beside a constructor parameter property: TypeScript then emits the
 * field's initializer as an assignment in the constructor (`this.f = () => ...`).
 */
class FieldArrowParam {
  readonly f = (): void => sink.del(this);
  constructor(readonly big: { x: number }[]) {}
}

class Base {
  readonly big = ballast();
}

/** An arrow class field in a subclass (LiveConn extends AbortHub). */
class SubFieldArrow extends Base {
  readonly f = (): void => sink.del(this);
}

/** A private field given the closure in the constructor. */
class CtorPrivate {
  readonly big = ballast();
  readonly #f: () => void;
  constructor() {
    this.#f = () => sink.del(this);
  }
  get f(): () => void {
    return this.#f;
  }
}

/** The method bound in the constructor (what dgc's fix does). */
class CtorBound {
  readonly big = ballast();
  readonly f: () => void;
  constructor() {
    this.f = this.#del.bind(this);
  }
  #del(): void {
    sink.del(this);
  }
}

/** A promise's resolver stored from its executor (DirectRequest, Relay.joined). */
class CtorResolver {
  readonly big = ballast();
  f!: () => void;
  readonly p: Promise<void>;
  constructor() {
    this.p = new Promise<void>((r) => this.f = r);
  }
}

/** The closure made and stored by another function (trackActivity's `conn.read = ...`). */
function attach(o: { f?: () => void }): void {
  o.f = () => sink.del(o);
}
class Attached {
  readonly big = ballast();
  f?: () => void;
  constructor() {
    attach(this);
  }
}

/** A generator started on the object and stored on it (its frame holds the object). */
function* holding(o: object): Generator<object> {
  yield o;
}
class CtorGenerator {
  readonly big = ballast();
  readonly g: Generator<object>;
  constructor() {
    this.g = holding(this);
  }
}

/** A shared function stored (no closure per object). */
class CtorShared {
  readonly big = ballast();
  readonly f = shared;
}

/** A literal, then a closure stored on it in the same function. */
function literalAssign(): object {
  const o: { big: { x: number }[]; f?: () => void } = { big: ballast() };
  o.f = () => sink.del(o);
  return o;
}

/** A literal with the closure among its properties. */
function literalProp(): object {
  const o: { big: { x: number }[]; f: () => void } = { big: ballast(), f: () => sink.del(o) };
  return o;
}

/** The variants, by name: each makes one object. */
const variants: Record<string, () => object> = {
  "ctor this.f = arrow": () => new CtorArrow(),
  "ctor this.f = arrow (no capture)": () => new CtorArrowNoCapture(),
  "class field arrow": () => new FieldArrow(),
  "subclass field arrow": () => new SubFieldArrow(),
  "class field arrow + parameter property": () => new FieldArrowParam(ballast()),
  "ctor this.#f = arrow": () => new CtorPrivate(),
  "ctor this.f = method.bind(this)": () => new CtorBound(),
  "ctor resolver stored": () => new CtorResolver(),
  "o.f = arrow in another function": () => new Attached(),
  "ctor this.g = generator(this)": () => new CtorGenerator(),
  "shared function": () => new CtorShared(),
  "literal, then o.f = arrow": literalAssign,
  "literal { f: arrow }": literalProp,
};

const flags = benchFlags({
  numbers: { objects: 300, rounds: 6 },
  strings: ["only", "variant"],
});

if (flags.variant !== undefined) {
  // The child: the variant alone, after two full GCs (its marker line starts the count).
  const gc = (globalThis as { gc?: (o?: { type: string }) => void }).gc;
  if (!gc) throw new Error("run the child with --v8-flags=--expose-gc");
  const make = variants[flags.variant];
  let keep: object | undefined;
  gc();
  gc();
  console.log("START");
  for (let round = 0; round < flags.rounds; round++) {
    for (let i = 0; i < flags.objects; i++) keep = make();
    gc({ type: "minor" });
  }
  if (!keep) throw new Error("nothing made");
} else {
  const only = flags.only === undefined ? undefined : new RegExp(flags.only);
  console.log(
    `${flags.objects} objects x ${flags.rounds} rounds, a young-generation GC after each round`,
  );
  console.log("variant                               promoted B/object  scavenges");
  for (const name of Object.keys(variants)) {
    if (only && !only.test(name)) continue;
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--v8-flags=--expose-gc,--trace-gc-nvp",
        new URL(import.meta.url).pathname,
        "--variant",
        name,
        "--objects",
        String(flags.objects),
        "--rounds",
        String(flags.rounds),
      ],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    if (!out.success) throw new Error(`variant ${name} failed`);
    const lines = new TextDecoder().decode(out.stdout).split("\n");
    const start = lines.indexOf("START");
    const gcs = gcTraceLines(lines.slice(start + 1)).filter((g) => g.gc === "s");
    const promoted = gcs.reduce((sum, g) => sum + gcNum(g, "promoted"), 0);
    const perObject = Math.round(promoted / (flags.objects * flags.rounds));
    console.log(
      `${name.padEnd(38)}${String(perObject).padStart(17)}  ${String(gcs.length).padStart(9)}`,
    );
  }
}
