/**
 * glibc through FFI, for the socket calls Deno 2.9.6 has no API for (SO_LINGER for resets in
 * reset.ts, SO_ORIGINAL_DST in original_dst.ts), under the narrowest permission that allows
 * it: `--allow-ffi=<path of libc.so.6>` (tools/install.ts emits it). Deno checks a scoped FFI
 * permission against the path given to `dlopen`, so the library is opened by its absolute
 * path, the first of {@linkcode libcCandidates} the permission covers; a bare "libc.so.6" only
 * with an unscoped `--allow-ffi` (or -A). Note that loading libc at all gives the process
 * every power Deno's sandbox would otherwise withhold: it is granted for these calls only.
 * @module
 */

/**
 * Where glibc's libc.so.6 lives: the Debian/Ubuntu multiarch directories for this machine's
 * architecture (merged /usr: both spellings), then the RPM-style lib64 ones.
 */
export const libcCandidates: readonly string[] = [
  `/lib/${Deno.build.arch}-linux-gnu/libc.so.6`,
  `/usr/lib/${Deno.build.arch}-linux-gnu/libc.so.6`,
  "/lib64/libc.so.6",
  "/usr/lib64/libc.so.6",
];

/** The library name the dynamic loader resolves itself (unscoped `--allow-ffi` only). */
const libcSoname = "libc.so.6";

/** What `dlopen` this process may use: undefined = not looked yet, null = none. */
let usablePath: string | null | undefined;

/**
 * The libc path this process may open through FFI (the first candidate its permission
 * covers that opens), or null: not Linux, no FFI permission, no glibc (musl). Looked up once
 * per process (permissions are fixed at start).
 */
export function libcPath(): string | null {
  if (usablePath !== undefined) return usablePath;
  usablePath = null;
  if (Deno.build.os !== "linux") return null;
  for (const path of [...libcCandidates, libcSoname]) {
    if (Deno.permissions.querySync({ name: "ffi", path }).state !== "granted") continue;
    try {
      Deno.dlopen(path, {}).close();
      usablePath = path;
      break;
    } catch {
      // Not at this path (another layout) or not glibc: the next candidate, else none.
    }
  }
  return usablePath;
}

/**
 * libc with `symbols`, or null where {@linkcode libcPath} found none. The caller closes it:
 * a library held open for the process would count as a leaked resource in every test.
 */
export function openLibc<S extends Deno.ForeignLibraryInterface>(
  symbols: S,
): Deno.DynamicLibrary<S> | null {
  const path = libcPath();
  return path === null ? null : Deno.dlopen(path, symbols);
}

/**
 * The libc calls {@linkcode openDescriptors} and {@linkcode copyFrom} need. `memcpy` reads
 * what a returned pointer points at: Deno's own pointer views (UnsafePointerView, offset)
 * want an unscoped --allow-ffi, a call into the permitted library does not.
 */
export const pointerSymbols = {
  opendir: { parameters: ["buffer"], result: "pointer" },
  readdir: { parameters: ["pointer"], result: "pointer" },
  closedir: { parameters: ["pointer"], result: "i32" },
  memcpy: { parameters: ["buffer", "pointer", "usize"], result: "pointer" },
} as const;

type PointerCalls = Deno.DynamicLibrary<typeof pointerSymbols>["symbols"];

/** Copy `into.length` bytes from memory at `p` (which must hold that many) into `into`. */
export function copyFrom(c: PointerCalls, p: Deno.PointerObject, into: Uint8Array): Uint8Array {
  c.memcpy(into, p, BigInt(into.length));
  return into;
}

const procSelfFd = new TextEncoder().encode("/proc/self/fd\0");
/** glibc's 64-bit `struct dirent`: d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name. */
const direntReclenOffset = 16;
const direntNameOffset = 19;

/**
 * This process's open descriptors, listed by libc's opendir/readdir of /proc/self/fd: Deno
 * wants --allow-all to read that directory itself, while the callers run with FFI anyway.
 * Empty without /proc. At most `max` of them (the listing stops there).
 */
export function openDescriptors(c: PointerCalls, max: number = Infinity): number[] {
  const dir = c.opendir(procSelfFd);
  if (dir === null) return [];
  const fds: number[] = [];
  const entry = new Uint8Array(512); // a record is at most 280 bytes (d_name[256])
  try {
    for (let e = c.readdir(dir); e !== null && fds.length < max; e = c.readdir(dir)) {
      // The header first (its length field), then exactly the record: never past its end.
      copyFrom(c, e, entry.subarray(0, direntNameOffset));
      const reclen = entry[direntReclenOffset] | (entry[direntReclenOffset + 1] << 8);
      copyFrom(c, e, entry.subarray(0, Math.min(reclen, entry.length)));
      const end = entry.indexOf(0, direntNameOffset);
      const name = String.fromCharCode(...entry.subarray(direntNameOffset, Math.max(end, 0)));
      if (/^\d+$/.test(name)) fds.push(Number(name));
    }
  } finally {
    c.closedir(dir);
  }
  return fds;
}
