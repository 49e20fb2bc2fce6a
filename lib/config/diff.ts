/**
 * What changed between two resolved configs, for reloads: the keys whose values differ.
 * @module
 */

/** Keys of `next` whose value differs from `prev` (deep, by JSON), in `next`'s order. */
export function changedKeys(
  prev: Readonly<Record<string, unknown>>,
  next: Readonly<Record<string, unknown>>,
): string[] {
  return Object.keys(next).filter((k) => JSON.stringify(prev[k]) !== JSON.stringify(next[k]));
}
