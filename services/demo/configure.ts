/**
 * A service's config the way its process gets it, without a process: the service's own
 * command definition (flags, defaults, units) and `validate` (services/config/<name>.ts),
 * given argv and an environment of generated secrets. What the demo starts is therefore
 * configured and checked exactly like the service it stands for.
 * @module
 */

import type { Logger } from "../../lib/log.ts";
import {
  allFlags,
  describeSource,
  type FlagDefs,
  parseArgv,
  resolveFlags,
  type ServiceCommand,
} from "../../lib/config/mod.ts";
import type { ServiceFlags, Validate } from "../_kit.ts";

/** A service's flags and validated config. */
export interface Configured<S extends FlagDefs, C> {
  flags: ServiceFlags<S>;
  cfg: C;
}

/**
 * Resolve `args` and `env` (nothing of the real environment: the demo is the same on every
 * machine) against `cmd`, then run the service's `validate`. Throws what they throw.
 */
export async function configure<S extends FlagDefs, C>(
  cmd: ServiceCommand<S>,
  validate: Validate<S, C>,
  args: string[],
  env: Record<string, string>,
  log: Logger,
): Promise<Configured<S, C>> {
  const defs = allFlags(cmd);
  const r = resolveFlags(defs, { argv: parseArgv(defs, args), env: (name) => env[name] });
  const flags = r.values as ServiceFlags<S>;
  const where = (name: string) => describeSource(r.sources[name] ?? { kind: "default" }, name);
  return { flags, cfg: await validate(flags, { log, where }) };
}
