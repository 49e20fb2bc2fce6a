/**
 * One resolver for secret references, wherever a secret is written (a flag, its environment
 * variable, a config file, a `--host vhost=...` value): `env:VAR` reads the variable, `file:PATH`
 * the file's first line, anything else is the secret itself. The example file's placeholders
 * (`change-me...`) are refused wherever they come from.
 * @module
 */

import { errorMessage } from "../net/errors.ts";

/** Why a secret reference could not be resolved. */
export type SecretErrorReason = "unset-env" | "unreadable-file" | "empty" | "placeholder";

/** A secret reference that names nothing usable; the message says which and why. */
export class SecretError extends Error {
  override name = "SecretError";
  constructor(readonly reason: SecretErrorReason, message: string) {
    super(message);
  }
}

/**
 * How every value of deploy/warren.env.example starts: a secret that still does was copied
 * without being replaced, and anyone who read the example knows it.
 */
export const placeholderSecretPrefix = "change-me";

/** A secret that is still the example file's placeholder. */
export class PlaceholderSecretError extends SecretError {
  override name = "PlaceholderSecretError";
  constructor(readonly what: string) {
    super(
      "placeholder",
      `${what} is a placeholder ("${placeholderSecretPrefix}\u2026" from deploy/warren.env.example): ` +
        "set a real secret, e.g. openssl rand -hex 32",
    );
  }
}

/**
 * `secret` itself, or a {@linkcode PlaceholderSecretError} when it is still an example
 * placeholder (`what` names where it came from: a variable, a file, a value).
 */
export function refusePlaceholder(secret: string, what: string): string {
  if (secret.trim().toLowerCase().startsWith(placeholderSecretPrefix)) {
    throw new PlaceholderSecretError(what);
  }
  return secret;
}

/**
 * The secret in `file`: its first line, trimmed (mode 0600 recommended). Throws
 * {@linkcode SecretError} naming the file when it cannot be read or that line is empty.
 */
export function readSecretFile(file: string): string {
  let text: string;
  try {
    text = Deno.readTextFileSync(file);
  } catch (err) {
    throw new SecretError("unreadable-file", `${file}: ${errorMessage(err)}`);
  }
  const secret = text.split(/\r?\n/)[0].trim();
  if (secret === "") throw new SecretError("empty", `${file}: empty`);
  return refusePlaceholder(secret, file);
}

/** Whether `value` is a reference (`env:` / `file:`) rather than a secret typed out. */
export function isSecretRef(value: string): boolean {
  return value.startsWith("env:") || value.startsWith("file:");
}

/**
 * Resolve `env:VAR`, `file:PATH` or a literal secret. `env` looks variables up (default: the
 * process environment). Throws {@linkcode SecretError} for an unset or empty variable, an
 * unreadable or empty file, or a placeholder ({@linkcode PlaceholderSecretError}).
 *
 * @example
 * ```ts
 * import { resolveSecret } from "./secret.ts";
 * console.assert(resolveSecret("env:ID", (n) => n === "ID" ? "s3cret-id" : undefined) === "s3cret-id");
 * console.assert(resolveSecret("plain-value") === "plain-value");
 * ```
 */
export function resolveSecret(
  value: string,
  env: (name: string) => string | undefined = (n) => Deno.env.get(n),
): string {
  if (value.startsWith("env:")) {
    const name = value.slice(4);
    const s = env(name);
    if (s === undefined || s === "") {
      throw new SecretError("unset-env", `environment variable ${name} is not set`);
    }
    return refusePlaceholder(s, `environment variable ${name}`);
  }
  if (value.startsWith("file:")) return readSecretFile(value.slice(5));
  return refusePlaceholder(value, "the value");
}
