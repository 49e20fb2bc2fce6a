/**
 * Strict argv parsing, as node:util's `parseArgs({ strict: true, allowPositionals: false })`
 * does it (same tokens, values and error messages; tests/argv_test.ts holds it to node's on
 * random command lines), written here so a service's start loads no node layer: node:util
 * alone is ~1.1 MB of heap that every full GC marks again (bench/RESULTS.md weight2).
 *
 * What it reads: `--name value`, `--name=value`, `-n value`, `-nvalue`, groups of short
 * booleans (`-ab`, `-abn value`), `--` (what follows is positional, so refused). A string
 * option takes the next argument whatever it is, and refuses one that looks like an option
 * unless written inline (`--name=-x`). `multiple` options collect every value in order; others
 * keep the last. Values are in an object without a prototype (as node's).
 * @module
 */

/** One option: its type, short letter and whether it repeats. */
export interface ArgvOption {
  type: "string" | "boolean";
  short?: string;
  multiple?: boolean;
}

/** Values by option name: a string, `true`, or (multiple) an array of them. */
export type ParsedArgv = Record<string, string | boolean | (string | boolean)[] | undefined>;

/** A command line the options do not allow (unknown option, missing value, positional). */
export class ArgvError extends TypeError {
  override name = "ArgvError";
}

/** One option occurrence: its name, how it was written, and its value if it had one. */
interface OptionToken {
  name: string;
  rawName: string;
  value: string | undefined;
  inlineValue: boolean;
}

const own = (o: object, k: string) => Object.prototype.hasOwnProperty.call(o, k);

/** Parse `args` against `options` (see the module's documentation); throws ArgvError. */
export function parseStrictArgv(
  args: readonly string[],
  options: Readonly<Record<string, ArgvOption>>,
): ParsedArgv {
  const typeOf = (name: string) => own(options, name) ? options[name].type : undefined;
  const longOf = (short: string) =>
    Object.entries(options).find(([, o]) => own(o, "short") && o.short === short)?.[0] ?? short;
  const tokens: (OptionToken | { positional: string })[] = [];
  const rest = [...args];
  for (let arg = rest.shift(); arg !== undefined; arg = rest.shift()) {
    if (arg === "--") {
      for (const p of rest.splice(0)) tokens.push({ positional: p });
    } else if (arg.length === 2 && arg[0] === "-" && arg[1] !== "-") {
      // -f, or -f value for a string option (the next argument, whatever it is)
      const name = longOf(arg[1]);
      const value = typeOf(name) === "string" ? rest.shift() : undefined;
      tokens.push({ name, rawName: arg, value, inlineValue: false });
    } else if (arg.length > 2 && arg[0] === "-" && arg[1] !== "-") {
      const name = longOf(arg[1]);
      if (typeOf(name) === "string") {
        // -fVALUE
        tokens.push({ name, rawName: `-${arg[1]}`, value: arg.slice(2), inlineValue: true });
        continue;
      }
      // -abc: each a short option; a string option in the middle takes the rest (-abfFILE).
      const expanded: string[] = [];
      for (let i = 1; i < arg.length; i++) {
        if (typeOf(longOf(arg[i])) !== "string" || i === arg.length - 1) {
          expanded.push(`-${arg[i]}`);
        } else {
          expanded.push(`-${arg.slice(i)}`);
          break;
        }
      }
      rest.unshift(...expanded);
    } else if (arg.length > 2 && arg.startsWith("--") && !arg.includes("=", 3)) {
      // --name, or --name value for a string option
      const name = arg.slice(2);
      const value = typeOf(name) === "string" ? rest.shift() : undefined;
      tokens.push({ name, rawName: arg, value, inlineValue: false });
    } else if (arg.length > 2 && arg.startsWith("--")) {
      // --name=value
      const eq = arg.indexOf("=");
      tokens.push({
        name: arg.slice(2, eq),
        rawName: arg.slice(0, eq),
        value: arg.slice(eq + 1),
        inlineValue: true,
      });
    } else {
      tokens.push({ positional: arg });
    }
  }
  const values: ParsedArgv = Object.create(null);
  for (const t of tokens) {
    if ("positional" in t) {
      throw new ArgvError(
        `Unexpected argument '${t.positional}'. This command does not take positional arguments`,
      );
    }
    checkUsage(t, options);
    const v = t.value ?? true;
    if (options[t.name].multiple) {
      const list = values[t.name];
      if (Array.isArray(list)) list.push(v);
      else values[t.name] = [v];
    } else {
      values[t.name] = v;
    }
  }
  return values;
}

/** node's strict checks of one option: known, value present or absent by type, unambiguous. */
function checkUsage(t: OptionToken, options: Readonly<Record<string, ArgvOption>>): void {
  if (!own(options, t.name)) throw new ArgvError(`Unknown option '${t.rawName}'`);
  const o = options[t.name];
  const both = `${own(o, "short") && o.short ? `-${o.short}, ` : ""}--${t.name}`;
  if (o.type === "string" && typeof t.value !== "string") {
    throw new ArgvError(`Option '${both} <value>' argument missing`);
  }
  if (o.type === "boolean" && t.value !== undefined) {
    throw new ArgvError(`Option '${both}' does not take an argument`);
  }
  if (!t.inlineValue && t.value !== undefined && t.value.length > 1 && t.value[0] === "-") {
    const example = t.rawName.startsWith("--")
      ? `'${t.rawName}=-XYZ'`
      : `'--${t.name}=-XYZ' or '${t.rawName}-XYZ'`;
    throw new ArgvError(
      `Option '${t.rawName}' argument is ambiguous.\n` +
        `Did you forget to specify the option argument for '${t.rawName}'?\n` +
        `To specify an option argument starting with a dash use ${example}.`,
    );
  }
}
