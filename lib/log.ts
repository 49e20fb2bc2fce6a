/**
 * Structured, levelled logging in logfmt (`ts=... level=info svc=depot msg="..." key=value`) or
 * JSON lines (`{"ts":"...","level":"info","svc":"depot","msg":"...","key":"value"}`).
 *
 * One line per event so logs stay grep- and machine-friendly; fields are values, never
 * secrets (callers pass ids and addresses, not tokens). A field whose value is undefined or
 * null is left out (no `error=-` placeholders).
 * @module
 */

/** Log levels in increasing severity; lines below the logger's level are dropped. */
export type LogLevel = "debug" | "info" | "warn" | "error" | "silent";

const levelRank: Record<LogLevel, number> = {
  debug: 10,
  info: 20,
  warn: 30,
  error: 40,
  silent: 99,
};

/** The level names accepted by `--log-level`. */
export const logLevels: readonly LogLevel[] = ["debug", "info", "warn", "error", "silent"];

/** A field value; errors are rendered by their message (and reason when typed). */
export type LogValue = string | number | boolean | bigint | null | undefined | Error;

/** Key/value context of one log line. */
export type LogFields = Record<string, LogValue>;

/** How a line is written: logfmt (the default) or one JSON object per line. */
export type LogFormat = "logfmt" | "json";

/** The formats accepted by `--log-format`. */
export const logFormats: readonly LogFormat[] = ["logfmt", "json"];

/** Where finished lines go; tests swap it to capture output. */
export type LogSink = (line: string, level: LogLevel) => void;

/** Lines formatted in this turn of the event loop, written to stderr together. */
let pendingLines: string[] = [];
const encoder = new TextEncoder();

/**
 * Write the pending lines to stderr in one synchronous write: console.error per line cost a
 * print op and the console's formatting each (about 18 µs of a tunnel-server's 77 µs per
 * access-logged request); a busy turn logs many lines at once.
 */
function flushLines(): void {
  if (pendingLines.length === 0) return;
  const bytes = encoder.encode(pendingLines.join("\n") + "\n");
  pendingLines = [];
  for (let off = 0; off < bytes.length;) off += Deno.stderr.writeSync(bytes.subarray(off));
}

/** A line goes out at the end of the current turn (its microtasks), never later. */
const defaultSink: LogSink = (line) => {
  if (pendingLines.push(line) === 1) queueMicrotask(flushLines);
};
// Deno.exit() (and a normal end) fire "unload" synchronously, and an uncaught error or rejection
// fires "error"/"unhandledrejection" before the process ends without running the microtask:
// lines logged just before are written, not lost. The listeners only flush; they never
// preventDefault, so the process still ends as it would. (`?.`: a runtime without the events
// leaves the microtask only.)
for (const event of ["unload", "error", "unhandledrejection"]) {
  globalThis.addEventListener?.(event, flushLines);
}

/** Values written bare in logfmt; any other is JSON-quoted. */
const bareValueRe = /^[A-Za-z0-9_.:\/@\[\]+-]+$/;

function quote(v: string): string {
  return bareValueRe.test(v) ? v : JSON.stringify(v);
}

let isoMs = NaN;
let isoText = "";

/**
 * `new Date().toISOString()`, made once per millisecond: a busy log (one access line per
 * request) writes many lines in the same one, and the formatting was a third of a line's cost.
 */
function isoNow(): string {
  const now = Date.now();
  if (now !== isoMs) {
    isoMs = now;
    isoText = new Date(now).toISOString();
  }
  return isoText;
}

/** A field's value as JSON has it: errors by their message (and reason when typed). */
function plain(v: Exclude<LogValue, null | undefined>): string | number | boolean {
  if (v instanceof Error) {
    const reason = (v as { reason?: unknown }).reason;
    return typeof reason === "string" ? `${reason}: ${v.message}` : v.message;
  }
  return typeof v === "bigint" ? String(v) : v;
}

/** ` key=value` per field, in order (a number needs no quoting: its text is always bare). */
function logfmtFields(fields: LogFields): string {
  let s = "";
  for (const k of Object.keys(fields)) {
    const v = fields[k];
    if (v === undefined || v === null) continue;
    s += typeof v === "number"
      ? ` ${k}=${v}`
      : ` ${k}=${quote(typeof v === "string" ? v : String(plain(v)))}`;
  }
  return s;
}

let lastMsg = "";
let lastMsgText = '""';

/** `msg` as a JSON string, kept for the next line (a busy log repeats one message). */
function quotedMsg(msg: string): string {
  if (msg !== lastMsg) {
    lastMsg = msg;
    lastMsgText = JSON.stringify(msg);
  }
  return lastMsgText;
}

function logfmtLine(
  level: LogLevel,
  msg: string,
  context: string,
  fields: LogFields | undefined,
  tail: LogTail | undefined,
): string {
  const line = `ts=${isoNow()} level=${level}${context} msg=${quotedMsg(msg)}`;
  const more = fields ? logfmtFields(fields) : "";
  return tail ? line + more + tail.text : line + more;
}

function jsonLine(
  level: LogLevel,
  msg: string,
  context: LogFields,
  fields: LogFields | undefined,
  tail: LogTail | undefined,
): string {
  const o: Record<string, string | number | boolean> = { ts: isoNow(), level };
  jsonFields(o, context);
  o.msg = msg;
  if (fields) jsonFields(o, fields);
  if (tail) jsonFields(o, tail.fields);
  return JSON.stringify(o);
}

/** Add `fields` to the JSON line `o`; a field never overwrites the line's own ts, level or msg. */
function jsonFields(o: Record<string, string | number | boolean>, fields: LogFields): void {
  for (const k of Object.keys(fields)) {
    const v = fields[k];
    if (v !== undefined && v !== null && !ownKeys.has(k)) o[k] = plain(v);
  }
}

const ownKeys: ReadonlySet<string> = new Set(["ts", "level", "msg"]);

/**
 * Fields that end many lines (a connection's own: its peer, its client), rendered once
 * ({@linkcode Logger.tail}) rather than on every line.
 */
export class LogTail {
  /** @param text the fields as logfmt (` key=value` each) @param fields the fields themselves */
  constructor(readonly text: string, readonly fields: LogFields) {}
}

/** A levelled logger carrying fixed context fields (`svc`, a connection id ...). */
export class Logger {
  #level: { value: LogLevel };
  #fields: LogFields;
  /** The context fields as logfmt, rendered once. */
  #context: string;
  #sink: LogSink;
  #format: LogFormat;

  constructor(
    level: LogLevel = "info",
    fields: LogFields = {},
    sink: LogSink = defaultSink,
    format: LogFormat = "logfmt",
  ) {
    this.#level = { value: level };
    this.#fields = fields;
    this.#context = format === "json" ? "" : logfmtFields(fields);
    this.#sink = sink;
    this.#format = format;
  }

  /** The line format, shared with children. */
  get format(): LogFormat {
    return this.#format;
  }

  /** Current threshold; shared with children so a reload changes them all. */
  get level(): LogLevel {
    return this.#level.value;
  }
  set level(l: LogLevel) {
    this.#level.value = l;
  }

  /** A logger that adds `fields` to every line and shares this one's level and sink. */
  child(fields: LogFields): Logger {
    const c = new Logger(
      this.#level.value,
      { ...this.#fields, ...fields },
      this.#sink,
      this.#format,
    );
    c.#level = this.#level;
    return c;
  }

  /** The value of a context field (`listener`, `svc`...), for code that names things by it. */
  field(key: string): LogValue {
    return this.#fields[key];
  }

  /** Whether a line at `level` would be written (skip building costly fields otherwise). */
  enabled(level: LogLevel): boolean {
    return levelRank[level] >= levelRank[this.#level.value] && level !== "silent";
  }

  /**
   * `fields` rendered once: a {@linkcode LogTail} that `log` appends after a line's own
   * fields, for fields many lines repeat.
   */
  tail(fields: LogFields): LogTail {
    return new LogTail(logfmtFields(fields), fields);
  }

  /** Write a line of `fields`, then `tail`'s, if `level` is enabled. */
  log(level: LogLevel, msg: string, fields?: LogFields, tail?: LogTail): void {
    if (!this.enabled(level)) return;
    const line = this.#format === "json"
      ? jsonLine(level, msg, this.#fields, fields, tail)
      : logfmtLine(level, msg, this.#context, fields, tail);
    this.#sink(line, level);
  }

  debug(msg: string, fields?: LogFields, tail?: LogTail): void {
    this.log("debug", msg, fields, tail);
  }
  info(msg: string, fields?: LogFields, tail?: LogTail): void {
    this.log("info", msg, fields, tail);
  }
  warn(msg: string, fields?: LogFields, tail?: LogTail): void {
    this.log("warn", msg, fields, tail);
  }
  error(msg: string, fields?: LogFields, tail?: LogTail): void {
    this.log("error", msg, fields, tail);
  }
}

/** A logger that writes nothing: the default for library code given no logger. */
export const silentLogger: Logger = new Logger("silent");
