/**
 * warren's version (from deno.json, so there is one place to bump it) and the Deno version
 * it runs on: for `--version` and the `warren_build_info` metric.
 * @module
 */

import meta from "../deno.json" with { type: "json" };

/** warren's version, as published in deno.json. */
export const warrenVersion: string = meta.version;

/** The Deno runtime version this process runs on. */
export const denoVersion: string = Deno.version.deno;
