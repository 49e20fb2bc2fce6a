/**
 * `--allow` / `--deny` (seaprox, depot-local) into an Acl, a bad rule named as before.
 * @module
 */

import { FlagError } from "../../lib/config/mod.ts";
import { Acl, AclError } from "../../lib/net/mod.ts";

/** The destination rules of `--allow` / `--deny`; throws FlagError on a bad rule. */
export function aclFromFlags(f: { allow: string[]; deny: string[] }): Acl {
  try {
    return new Acl({ allow: f.allow, deny: f.deny });
  } catch (err) {
    if (err instanceof AclError) throw new FlagError("allow", `--allow/--deny: ${err.message}`);
    throw err;
  }
}
