/**
 * fast-check for the property tests, pinned here: a test-only package stays out of deno.json's
 * imports, so the image and a service install never fetch it.
 * @module
 */
// deno-lint-ignore no-import-prefix
import fc from "npm:fast-check@4.10.2";

export default fc;
