/** Minimal assertions (JSR's @std/assert is not reachable here). */
import { deepStrictEqual } from "node:assert";

export class AssertionError extends Error {
  override name = "AssertionError";
}

export function assert(cond: unknown, msg = "assertion failed"): asserts cond {
  if (!cond) throw new AssertionError(msg);
}

export function assertEquals<T>(actual: T, expected: T, msg?: string): void {
  try {
    deepStrictEqual(actual, expected);
  } catch (e) {
    throw new AssertionError(`${msg ? msg + ": " : ""}${(e as Error).message}`);
  }
}

export function assertMatch(s: string, re: RegExp, msg?: string): void {
  if (!re.test(s)) throw new AssertionError(msg ?? `${JSON.stringify(s)} does not match ${re}`);
}

/** Await `p` and assert it rejects; returns the error for further checks. */
export async function assertRejects(
  p: Promise<unknown> | (() => Promise<unknown>),
  msg?: string,
): Promise<Error> {
  try {
    await (typeof p === "function" ? p() : p);
  } catch (e) {
    return e as Error;
  }
  throw new AssertionError(msg ?? "expected a rejection");
}

export function assertThrows(fn: () => unknown, msg?: string): Error {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  throw new AssertionError(msg ?? "expected a throw");
}
