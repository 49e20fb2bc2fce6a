/**
 * This process's own command line with Deno's flags (`run`, the permission flags, the script,
 * its arguments), which a `--workers` supervisor runs again for each worker. Deno 2.9.6 gives
 * a script only its own arguments (`Deno.args`; node:process `execArgv` is empty), and Linux's
 * `/proc/self/cmdline` is readable through Deno only with `--allow-all` (every /proc path
 * wants it), so an installed service -- which has `--allow-ffi` for glibc alone
 * (tools/install.ts) -- reads that file through libc instead, as lib/net's `openDescriptors`
 * lists /proc/self/fd.
 * @module
 */

import { concatBytes } from "../net/bytes.ts";
import { errorMessage } from "../net/errors.ts";
import { openLibc } from "../net/libc.ts";

const libcSymbols = {
  open: { parameters: ["buffer", "i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
} as const;

const cmdlinePath = "/proc/self/cmdline";
/** Linux caps what /proc/self/cmdline shows far below this (ARG_MAX is 2 MiB); a bound. */
const maxCmdlineBytes = 4 * 1024 * 1024;

/** The command line could not be read (not Linux, no /proc, neither -A nor FFI for libc). */
export class CommandLineUnavailableError extends Error {
  override name = "CommandLineUnavailableError";
}

/**
 * This process's argv after the executable (Deno's flags, the script, its arguments): through
 * libc where FFI for it is granted (installed services, -A), else with Deno's own read (which
 * needs --allow-all); throws {@linkcode CommandLineUnavailableError} saying what is missing.
 */
export function ownCommandLine(): string[] {
  const bytes = readThroughLibc();
  let text: string;
  if (bytes) {
    text = new TextDecoder().decode(bytes);
  } else {
    try {
      text = Deno.readTextFileSync(cmdlinePath);
    } catch (err) {
      throw new CommandLineUnavailableError(
        `cannot read ${cmdlinePath} (${errorMessage(err)}): Deno wants --allow-all for it, ` +
          "or --allow-ffi for glibc to read it through libc",
      );
    }
  }
  return text.split("\0").slice(1, -1);
}

/** The file's bytes read through libc, or null without FFI for glibc. */
function readThroughLibc(): Uint8Array | null {
  const lib = openLibc(libcSymbols);
  if (!lib) return null;
  try {
    const fd = lib.symbols.open(new TextEncoder().encode(`${cmdlinePath}\0`), 0 /* O_RDONLY */);
    if (fd < 0) throw new CommandLineUnavailableError(`cannot open ${cmdlinePath} (no /proc?)`);
    try {
      const chunks: Uint8Array[] = [];
      let total = 0;
      while (total < maxCmdlineBytes) {
        const chunk = new Uint8Array(64 * 1024);
        const n = Number(lib.symbols.read(fd, chunk, BigInt(chunk.length)));
        if (n < 0) throw new CommandLineUnavailableError(`cannot read ${cmdlinePath}`);
        if (n === 0) break;
        chunks.push(chunk.subarray(0, n));
        total += n;
      }
      return concatBytes(...chunks);
    } finally {
      lib.symbols.close(fd);
    }
  } finally {
    lib.close();
  }
}
