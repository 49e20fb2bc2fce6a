/**
 * TLS for every warren-to-warren link: one set of options, a listener that hands out only
 * connections whose handshake succeeded (optionally with verified client certificates), a
 * dialer, and handshake failures typed by `reason` so logs say what went wrong ("unknown-ca",
 * "hostname-mismatch", "not-tls" ...) instead of a rustls message.
 *
 * Under Deno 2.9.6 `Deno.listenTls` cannot request client certificates, while `node:tls`'s
 * `createServer({ requestCert, ca })` does verify them (checked: a certificate from another
 * CA, or none, is refused). So a server with a client CA (mutual TLS) runs on `node:tls`, a
 * server without one on `Deno.listenTls` (about twice the throughput). Accepted connections
 * have Nagle off on both (TCP_NODELAY: node's `noDelay` option; for `Deno.listenTls`, whose
 * connections have no `setNoDelay`, set once on the listening socket through libc, see
 * lib/net/tcp_nodelay.ts). The client uses
 * `Deno.connectTls` (clearer errors, client certificates), or `node:tls` over a `node:net`
 * socket when a local address must be bound.
 * @module
 */

import { type CertFinding, certProblem } from "./cert_check.ts";
// Types only: node:tls itself is loaded by the mutual-TLS listener and the bound or renamed
// client below, when a configuration asks for one (its node layer is ~2 MB of heap).
import type { PeerCertificate, Server as NodeTlsServer, TLSSocket } from "node:tls";
import { type Logger, silentLogger } from "../log.ts";
import { ipFamily, joinHostPort } from "../net/addr.ts";
import { closeQuietly } from "../net/duplex.ts";
import { classifyError, errorMessage, NetError } from "../net/errors.ts";
import { listenerNoDelay } from "../net/tcp_nodelay.ts";
import { libcPath } from "../net/libc.ts";
import { connectNodeSocket, NodeSocketConn } from "../net/node_socket.ts";
import { AcceptRetry, formatAddr } from "../net/serve.ts";

/** Certificate files of a TLS server (what the flags name). */
export interface TlsServerOptions {
  /** Certificate chain (PEM), leaf first. */
  certFile: string;
  /** Private key (PEM). */
  keyFile: string;
  /** CA (PEM) client certificates must chain to; when set, a client certificate is required
   * and verified (mutual TLS). */
  caFile?: string;
}

/** Trust and identity of a TLS client (what the flags name). */
export interface TlsClientOptions {
  /** CA (PEM) to trust for the server's certificate; the system roots when absent. */
  caFile?: string;
  /** Name to verify the server certificate against (and send as SNI); default the host
   * dialled. */
  serverName?: string;
  /** Client certificate (PEM) for a server that requires one (mutual TLS). */
  certFile?: string;
  /** Key (PEM) of `certFile`. */
  keyFile?: string;
}

/** A TLS server's loaded material (PEM text). */
export interface TlsServerConfig {
  cert: string;
  key: string;
  /** Client CA: when set, client certificates are required and verified. */
  ca?: string;
}

/** A TLS client's loaded material (PEM text). */
export interface TlsClientConfig {
  /** Extra CA to trust; when absent the system roots are used. */
  ca?: string;
  serverName?: string;
  cert?: string;
  key?: string;
}

/** Why a TLS handshake (or TLS configuration) failed. */
export type TlsFailureReason =
  | "config" // a certificate/key file is missing or unreadable, or cert without key
  | "unknown-ca" // the peer's certificate does not chain to a CA we trust
  | "hostname-mismatch" // the server certificate is not valid for the name we dialled
  | "expired" // the peer's certificate expired or is not valid yet
  | "wrong-usage" // the certificate is not for this use (extended key usage: a server cert as client)
  | "client-cert-required" // the server requires a client certificate and got none
  | "peer-rejected" // the peer refused our certificate (it does not trust our CA, or the name)
  | "bad-certificate" // any other certificate problem
  | "not-tls" // the peer spoke something other than TLS (plaintext to a TLS port, or back)
  | "timeout" // the handshake did not finish in time
  | "eof" // the peer closed the connection during the handshake
  | "other";

/** A TLS failure with a typed reason (the message says which peer and what). */
export class TlsError extends Error {
  override name = "TlsError";
  constructor(readonly reason: TlsFailureReason, message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/** Default time a TLS handshake may take, on either side. */
export const defaultTlsHandshakeTimeoutMs = 10_000;
/** Default cap on handshakes in progress on one listener (more are closed at accept). */
export const defaultMaxPendingHandshakes = 256;

/** One-line explanations of each reason, for log lines and errors. */
export const tlsReasonText: Readonly<Record<TlsFailureReason, string>> = {
  "config": "bad TLS configuration",
  "unknown-ca": "certificate not signed by a trusted CA",
  "hostname-mismatch": "certificate not valid for this host name",
  "expired": "certificate expired or not yet valid",
  "wrong-usage": "certificate not made for this use (extended key usage)",
  "client-cert-required": "a client certificate is required and none was sent",
  "peer-rejected": "the peer refused our certificate",
  "bad-certificate": "bad certificate",
  "not-tls": "peer does not speak TLS (plaintext on one side?)",
  "timeout": "TLS handshake timed out",
  "eof": "peer closed the connection during the TLS handshake",
  "other": "TLS handshake failed",
};

/**
 * Map a handshake error (rustls via Deno, or `node:tls`) to a reason. Patterns were taken
 * from Deno 2.9.6's actual messages and node error codes.
 */
export function classifyTlsError(err: unknown): TlsFailureReason {
  if (err instanceof TlsError) return err.reason;
  const code = (err as { code?: unknown })?.code;
  const msg = errorMessage(err);
  switch (code) {
    case "ERR_TLS_CERT_ALTNAME_INVALID":
      return "hostname-mismatch";
    case "CERT_HAS_EXPIRED":
    case "CERT_NOT_YET_VALID":
      return "expired";
    case "UNABLE_TO_VERIFY_LEAF_SIGNATURE":
    case "UNABLE_TO_GET_ISSUER_CERT":
    case "UNABLE_TO_GET_ISSUER_CERT_LOCALLY":
    case "SELF_SIGNED_CERT_IN_CHAIN":
    case "DEPTH_ZERO_SELF_SIGNED_CERT":
      return "unknown-ca";
    case "ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE":
    case "ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED":
      return "client-cert-required";
    case "ERR_SSL_WRONG_VERSION_NUMBER":
      return "not-tls";
  }
  if (/CertificateRequired|peer sent no certificates/i.test(msg)) return "client-cert-required";
  if (/not valid for name|NotValidForName|altnames/i.test(msg)) return "hostname-mismatch";
  if (/expired|not valid (yet|before)|NotValidYet/i.test(msg)) return "expired";
  if (/UnknownIssuer|unable to (verify|get)|self.signed/i.test(msg)) return "unknown-ca";
  if (/fatal alert: (UnknownCA|BadCertificate|CertificateUnknown|DecryptError)/i.test(msg)) {
    return "peer-rejected";
  }
  if (/corrupt message|InvalidContentType|wrong version number|InvalidMessage/i.test(msg)) {
    return "not-tls";
  }
  if (/invalid peer certificate|certificate/i.test(msg)) return "bad-certificate";
  if (err instanceof Deno.errors.UnexpectedEof || /unexpected end of file|eof|hang up/i.test(msg)) {
    return "eof";
  }
  if (err instanceof Deno.errors.ConnectionReset || /ECONNRESET|disconnected before/i.test(msg)) {
    return "eof";
  }
  if (err instanceof DOMException && err.name === "TimeoutError") return "timeout";
  if (/handshake timeout|timed out/i.test(msg)) return "timeout";
  return "other";
}

function readPem(what: string, file: string): string {
  try {
    return Deno.readTextFileSync(file);
  } catch (err) {
    throw new TlsError("config", `${what} ${file}: ${errorMessage(err)}`, { cause: err });
  }
}

/**
 * Read a server's files. Throws {@linkcode TlsError} (reason "config") naming the file that
 * cannot be read or does not look like PEM.
 */
export function loadTlsServerConfig(o: TlsServerOptions): TlsServerConfig {
  const cfg: TlsServerConfig = {
    cert: readPem("certificate", o.certFile),
    key: readPem("key", o.keyFile),
    ...(o.caFile ? { ca: readPem("client CA", o.caFile) } : {}),
  };
  checkPem("certificate", o.certFile, cfg.cert, "CERTIFICATE");
  checkPem("key", o.keyFile, cfg.key, "PRIVATE KEY");
  if (o.caFile) checkPem("client CA", o.caFile, cfg.ca!, "CERTIFICATE");
  return cfg;
}

/**
 * Read a client's files; throws {@linkcode TlsError} (reason "config"; "expired" or
 * "wrong-usage" for a client certificate no server would accept).
 */
export function loadTlsClientConfig(o: TlsClientOptions): TlsClientConfig {
  if ((o.certFile === undefined) !== (o.keyFile === undefined)) {
    throw new TlsError("config", "a client certificate needs both its certificate and its key");
  }
  const cfg: TlsClientConfig = {};
  if (o.caFile) {
    cfg.ca = readPem("CA", o.caFile);
    checkPem("CA", o.caFile, cfg.ca, "CERTIFICATE");
  }
  if (o.serverName) cfg.serverName = o.serverName;
  if (o.certFile && o.keyFile) {
    cfg.cert = readPem("client certificate", o.certFile);
    cfg.key = readPem("client key", o.keyFile);
    checkPem("client certificate", o.certFile, cfg.cert, "CERTIFICATE");
    checkPem("client key", o.keyFile, cfg.key, "PRIVATE KEY");
    // A certificate every server would refuse: say why here (the client would only see the
    // connection close after the handshake, its server logging the reason).
    const found = certProblem(cfg.cert, "clientAuth");
    if (found) {
      throw new TlsError(found.problem, `client certificate ${o.certFile}: ${found.detail}`);
    }
  }
  return cfg;
}

function checkPem(what: string, file: string, text: string, label: string): void {
  if (!new RegExp(`-----BEGIN [A-Z ]*${label}-----`).test(text)) {
    throw new TlsError("config", `${what} ${file}: no PEM ${label} block`);
  }
}

/** Options of {@linkcode listenTls}. */
export interface TlsListenOptions {
  /** Time a client has for the TLS handshake. @default 10000 */
  handshakeTimeoutMs?: number;
  /** Handshakes in progress at once; more connections are closed at accept (Deno.listenTls
   * only: the node:tls server bounds each handshake by the timeout alone). @default 256 */
  maxPendingHandshakes?: number;
  /** Failed handshakes are logged here at warn (remote, reason); never key material. */
  log?: Logger;
  /** Called for each failed handshake (metrics). */
  onHandshakeFailure?: (reason: TlsFailureReason, remote: string) => void;
  /** Bind with SO_REUSEPORT, so several processes share the port (Linux). @default false */
  reusePort?: boolean;
}

/** Counters of a TLS listener. */
export interface TlsListenerStats {
  handshakes: number;
  /** Failed handshakes by reason. */
  failures: Partial<Record<TlsFailureReason, number>>;
  /** Connections closed at accept because too many handshakes were in progress. */
  overloaded: number;
}

/**
 * A listener whose `accept()` yields only connections that completed the TLS handshake
 * (and, with a client CA, presented a verified client certificate). Failed handshakes are
 * logged with their reason and never reach the caller, so `serve()` and every protocol above
 * it see just another Duplex.
 */
export interface TlsListener extends Deno.Listener<Deno.Conn, Deno.NetAddr> {
  readonly stats: TlsListenerStats;
  /** Whether client certificates are required and verified. */
  readonly mutual: boolean;
  /** Whether accepted connections have TCP_NODELAY (Nagle off). False only for a
   * `Deno.listenTls` listener in a process without FFI permission for libc: small writes
   * may then wait ~40 ms for the peer's delayed ACK (logged at listen). */
  readonly noDelay: boolean;
}

/** The subject CN of a client certificate on a connection from a mutual-TLS listener. */
export function peerCommonName(conn: Deno.Conn): string | undefined {
  if (!(conn instanceof NodeSocketConn)) return undefined;
  const cert = (conn.socket as TLSSocket).getPeerCertificate?.() as PeerCertificate | undefined;
  const cn = cert?.subject?.CN;
  return typeof cn === "string" ? cn : undefined;
}

/**
 * Listen for TLS on `hostname:port`. With `cfg.ca` set, clients must present a certificate
 * chaining to it (mutual TLS, on `node:tls`); otherwise `Deno.listenTls` serves.
 *
 * Rejects like `Deno.listen` (`Deno.errors.AddrInUse` for a busy port).
 *
 * @example
 * ```ts
 * import { connectTls, listenTls, loadTlsClientConfig, loadTlsServerConfig } from "./tls.ts";
 * import { serve, writeAll } from "../net/mod.ts";
 * // A throwaway CA and a leaf for localhost (openssl), in a temporary directory.
 * const dir = await Deno.makeTempDir();
 * const openssl = (...args: string[]) => new Deno.Command("openssl", { args, stderr: "null" }).output();
 * const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
 * await openssl("req", "-x509", ...ec, "-days", "1", "-subj", "/CN=example CA", "-keyout", `${dir}/ca.key`, "-out", `${dir}/ca.pem`);
 * await openssl("req", ...ec, "-subj", "/CN=localhost", "-keyout", `${dir}/key.pem`, "-out", `${dir}/leaf.csr`);
 * await Deno.writeTextFile(`${dir}/ext`, "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
 * await openssl("x509", "-req", "-in", `${dir}/leaf.csr`, "-CA", `${dir}/ca.pem`, "-CAkey", `${dir}/ca.key`, "-CAcreateserial", "-days", "1", "-extfile", `${dir}/ext`, "-out", `${dir}/cert.pem`);
 *
 * const cfg = loadTlsServerConfig({ certFile: `${dir}/cert.pem`, keyFile: `${dir}/key.pem` });
 * const listener = await listenTls({ hostname: "127.0.0.1", port: 0 }, cfg);
 * const server = serve(listener, async (conn, ctx) => {
 *   ctx.handshakeDone();
 *   await writeAll(conn, new TextEncoder().encode("over TLS"));
 *   await conn.closeWrite();
 * });
 * const client = loadTlsClientConfig({ caFile: `${dir}/ca.pem` });
 * const conn = await connectTls("localhost", listener.addr.port, client, { timeoutMs: 5000 });
 * const buf = new Uint8Array(16);
 * const n = await conn.read(buf);
 * console.assert(new TextDecoder().decode(buf.subarray(0, n ?? 0)) === "over TLS");
 * conn.close();
 * await server.stop();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function listenTls(
  addr: { hostname: string; port: number },
  cfg: TlsServerConfig,
  opts: TlsListenOptions = {},
): Promise<TlsListener> {
  return cfg.ca ? await listenNodeTls(addr, cfg, opts) : listenDenoTls(addr, cfg, opts);
}

/** The shared queue of handshaken connections behind both listener kinds. */
class AcceptQueue {
  #ready: Deno.Conn[] = [];
  #waiters: { resolve: (c: Deno.Conn) => void; reject: (e: Error) => void }[] = [];
  closed = false;

  push(c: Deno.Conn): void {
    if (this.closed) return closeQuietly(c);
    const w = this.#waiters.shift();
    if (w) w.resolve(c);
    else this.#ready.push(c);
  }

  take(): Promise<Deno.Conn> {
    const c = this.#ready.shift();
    if (c) return Promise.resolve(c);
    if (this.closed) return Promise.reject(new Deno.errors.BadResource("listener closed"));
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  close(): void {
    this.closed = true;
    for (const c of this.#ready.splice(0)) closeQuietly(c);
    for (const w of this.#waiters.splice(0)) {
      w.reject(new Deno.errors.BadResource("listener closed"));
    }
  }
}

abstract class BaseTlsListener implements TlsListener {
  readonly stats: TlsListenerStats = { handshakes: 0, failures: {}, overloaded: 0 };
  protected queue = new AcceptQueue();
  protected log: Logger;
  protected pending = 0;
  abstract readonly addr: Deno.NetAddr;
  abstract readonly mutual: boolean;
  abstract readonly noDelay: boolean;

  constructor(protected opts: TlsListenOptions) {
    this.log = opts.log ?? silentLogger;
  }

  protected failed(err: unknown, remote: string): void {
    const reason = classifyTlsError(err);
    this.stats.failures[reason] = (this.stats.failures[reason] ?? 0) + 1;
    this.opts.onHandshakeFailure?.(reason, remote);
    // "eof" is a scanner or a client giving up: not worth a warning each time.
    const level = reason === "eof" ? "debug" : "warn";
    this.log[level]("tls handshake failed", {
      remote,
      failure: reason,
      why: tlsReasonText[reason],
      error: errorMessage(err),
    });
  }

  accept(): Promise<Deno.Conn> {
    return this.queue.take();
  }

  async *[Symbol.asyncIterator](): AsyncIterableIterator<Deno.Conn> {
    while (true) {
      try {
        yield await this.accept();
      } catch (err) {
        if (err instanceof Deno.errors.BadResource) return;
        throw err;
      }
    }
  }

  abstract close(): void;
  abstract ref(): void;
  abstract unref(): void;

  [Symbol.dispose](): void {
    this.close();
  }
}

class DenoTlsListener extends BaseTlsListener {
  readonly mutual = false;
  readonly addr: Deno.NetAddr;
  readonly noDelay: boolean;
  #inner: Deno.TlsListener;

  constructor(inner: Deno.TlsListener, opts: TlsListenOptions) {
    super(opts);
    this.#inner = inner;
    this.addr = inner.addr;
    // Before the first accept: every connection from here on inherits it.
    this.noDelay = listenerNoDelay(inner.addr.port);
    if (!this.noDelay) {
      this.log.warn("tls listener without TCP_NODELAY: small writes may wait for delayed ACKs", {
        listen: formatAddr(inner.addr),
        fix: libcPath() !== null
          ? "the listening socket was not found among this process's descriptors"
          : Deno.build.os === "linux"
          ? "grant --allow-ffi=<path of glibc's libc.so.6> (tools/install.ts does)"
          : `TCP_NODELAY on TLS listeners needs Linux, not ${Deno.build.os}`,
      });
    }
    void this.#loop(); // never rejects: accept failures are retried, the end is a close
  }

  async #loop(): Promise<void> {
    const max = this.opts.maxPendingHandshakes ?? defaultMaxPendingHandshakes;
    const retry = new AcceptRetry(this.log);
    while (!this.queue.closed) {
      let conn: Deno.TlsConn;
      try {
        conn = await this.#inner.accept();
      } catch (err) {
        if (this.queue.closed || err instanceof Deno.errors.BadResource) break;
        // Transient accept failures (EMFILE, a reset before accept) must not end the server.
        await retry.failed(err);
        continue;
      }
      retry.accepted();
      if (this.pending >= max) {
        this.stats.overloaded++;
        closeQuietly(conn);
        continue;
      }
      void this.#handshake(conn); // never rejects: a failed handshake is counted and logged
    }
    this.queue.close();
  }

  async #handshake(conn: Deno.TlsConn): Promise<void> {
    this.pending++;
    const remote = formatAddr(conn.remoteAddr);
    const timeoutMs = this.opts.handshakeTimeoutMs ?? defaultTlsHandshakeTimeoutMs;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        conn.handshake(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new TlsError("timeout", `no TLS handshake within ${timeoutMs} ms`)),
            timeoutMs,
          );
        }),
      ]);
      this.stats.handshakes++;
      this.queue.push(conn);
    } catch (err) {
      closeQuietly(conn);
      this.failed(err, remote);
    } finally {
      clearTimeout(timer);
      this.pending--;
    }
  }

  close(): void {
    this.queue.close();
    closeQuietly(this.#inner);
  }

  ref(): void {
    this.#inner.ref();
  }

  unref(): void {
    this.#inner.unref();
  }
}

function listenDenoTls(
  addr: { hostname: string; port: number },
  cfg: TlsServerConfig,
  opts: TlsListenOptions,
): TlsListener {
  let inner: Deno.TlsListener;
  try {
    inner = Deno.listenTls({
      hostname: addr.hostname,
      port: addr.port,
      cert: cfg.cert,
      key: cfg.key,
      ...(opts.reusePort ? { reusePort: true } : {}),
    });
  } catch (err) {
    if (err instanceof Deno.errors.AddrInUse) throw err;
    if (/key|cert|pem/i.test(errorMessage(err))) {
      throw new TlsError("config", `cannot use certificate/key: ${errorMessage(err)}`, {
        cause: err,
      });
    }
    throw err;
  }
  return new DenoTlsListener(inner, opts);
}

class NodeTlsListener extends BaseTlsListener {
  readonly mutual = true;
  readonly noDelay = true; // node's `noDelay` server option, set on each accepted socket
  readonly addr: Deno.NetAddr;
  #server: NodeTlsServer;

  /** What is wrong with a refused client certificate (its DER), if reading it tells. */
  readonly #problem: (der: Uint8Array) => CertFinding | undefined;

  constructor(
    server: NodeTlsServer,
    addr: Deno.NetAddr,
    opts: TlsListenOptions,
    problem: (der: Uint8Array) => CertFinding | undefined,
  ) {
    super(opts);
    this.#server = server;
    this.#problem = problem;
    this.addr = addr;
    server.on("secureConnection", (sock: TLSSocket) => {
      const remote = formatAddr(netAddrOf(sock.remoteAddress, sock.remotePort));
      // requestCert with rejectUnauthorized false: the chain is verified and the verdict is
      // `authorized`; checking it here lets the log say *why* (none sent vs wrong CA).
      if (!sock.authorized) {
        const cert = sock.getPeerCertificate();
        const none = !cert || Object.keys(cert).length === 0;
        // Deno's node:tls says UNABLE_TO_VERIFY_LEAF_SIGNATURE for every refusal (expired,
        // wrong usage, unknown CA): read the certificate for the real one.
        const found = none ? undefined : this.#problem(cert.raw);
        const err = none
          ? new TlsError("client-cert-required", "client sent no certificate")
          : new TlsError(
            found?.problem ??
              (classifyTlsError({ code: String(sock.authorizationError ?? "") }) === "expired"
                ? "expired"
                : "unknown-ca"),
            `client certificate ${JSON.stringify(cert.subject?.CN ?? "?")} refused: ${
              found?.detail ?? String(sock.authorizationError ?? "not trusted")
            }`,
          );
        sock.destroy();
        this.failed(err, remote);
        return;
      }
      this.stats.handshakes++;
      this.queue.push(new NodeSocketConn(sock, { pausable: false }));
    });
    server.on("tlsClientError", (err: Error, sock: TLSSocket) => {
      // After a failed handshake the TLS socket has forgotten its peer; the TCP socket under
      // it (node's `_parent`) still knows.
      const raw =
        (sock as TLSSocket & { _parent?: { remoteAddress?: string; remotePort?: number } })
          ?._parent;
      this.failed(
        err,
        formatAddr(
          netAddrOf(sock?.remoteAddress ?? raw?.remoteAddress, sock?.remotePort ?? raw?.remotePort),
        ),
      );
    });
    server.on("error", (err: Error) => this.log.warn("tls server error", { error: err }));
  }

  close(): void {
    if (this.queue.closed) return;
    this.queue.close();
    this.#server.close();
  }

  ref(): void {
    this.#server.ref();
  }

  unref(): void {
    this.#server.unref();
  }
}

function netAddrOf(hostname: string | undefined, port: number | undefined): Deno.NetAddr {
  return { transport: "tcp", hostname: hostname ?? "?", port: port ?? 0 };
}

async function listenNodeTls(
  addr: { hostname: string; port: number },
  cfg: TlsServerConfig,
  opts: TlsListenOptions,
): Promise<TlsListener> {
  // Loaded here, before listening, with what the refusals' log reads (node:crypto's X509).
  const [{ createServer: createTlsServer }, { issuerProblem }] = await Promise.all([
    import("node:tls"),
    import("./cert_issuer.ts"),
  ]);
  let server: NodeTlsServer;
  try {
    server = createTlsServer({
      cert: cfg.cert,
      key: cfg.key,
      ca: cfg.ca,
      requestCert: true,
      // Verified, then judged in "secureConnection" (see NodeTlsListener) for a clear reason.
      rejectUnauthorized: false,
      allowHalfOpen: true,
      // TCP_NODELAY on each accepted socket (node's default leaves Nagle on: checked, 0).
      noDelay: true,
      handshakeTimeout: opts.handshakeTimeoutMs ?? defaultTlsHandshakeTimeoutMs,
    });
  } catch (err) {
    throw new TlsError("config", `cannot use certificate/key: ${errorMessage(err)}`, {
      cause: err,
    });
  }
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error & { code?: string }) => {
      server.close();
      reject(
        err.code === "EADDRINUSE"
          ? new Deno.errors.AddrInUse(`address ${joinHostPort(addr.hostname, addr.port)} in use`)
          : err,
      );
    };
    server.once("error", onError);
    const at = { port: addr.port, host: addr.hostname, reusePort: opts.reusePort === true };
    server.listen(at, () => {
      server.off("error", onError);
      resolve();
    });
  });
  const a = server.address();
  const bound = typeof a === "object" && a
    ? netAddrOf(a.address, a.port)
    : netAddrOf(addr.hostname, addr.port);
  // Not from the CA first, then expired, then made for servers only.
  const ca = cfg.ca;
  return new NodeTlsListener(
    server,
    bound,
    opts,
    (der) =>
      (ca === undefined ? undefined : issuerProblem(der, ca)) ?? certProblem(der, "clientAuth"),
  );
}

/** Options of {@linkcode connectTls}. */
export interface TlsConnectOptions {
  /** Give up on the TCP connect plus handshake after this long. @default 10000 */
  timeoutMs?: number;
  /** Abort the connect (rejects with NetError "aborted"). */
  signal?: AbortSignal;
  /** Local address to bind (selects the interface); uses node:net + node:tls. */
  localAddress?: string;
}

/**
 * Connect to `host:port` and complete a TLS handshake, verifying the server certificate
 * against `cfg.ca` (or the system roots) and `cfg.serverName ?? host`; presents `cfg.cert`
 * when set (mutual TLS).
 *
 * Rejects with {@linkcode NetError} when TCP fails (refused, unreachable, timeout, aborted)
 * and with {@linkcode TlsError} when the handshake fails (`reason` says why).
 *
 * @example
 * ```ts
 * import { connectTls, TlsError } from "./tls.ts";
 * // A peer that is not TLS at all: the handshake fails with a typed reason.
 * const plain = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const accepted = plain.accept().then(async (c) => {
 *   await c.write(new TextEncoder().encode("SSH-2.0-not-tls\r\n"));
 *   c.close();
 * });
 * const err = await connectTls("127.0.0.1", plain.addr.port, {}, { timeoutMs: 5000 }).catch((e) => e);
 * console.assert(err instanceof TlsError, String(err));
 * console.log((err as TlsError).reason);
 * await accepted;
 * plain.close();
 * ```
 */
export async function connectTls(
  host: string,
  port: number,
  cfg: TlsClientConfig,
  opts: TlsConnectOptions = {},
): Promise<Deno.Conn> {
  const timeoutMs = opts.timeoutMs ?? defaultTlsHandshakeTimeoutMs;
  const target = joinHostPort(host, port);
  const name = cfg.serverName ?? host;
  // node:tls for a bound local address, and for a name other than the host: it takes that as
  // `servername`, while Deno's connectTls has no documented option for it.
  const attempt = opts.localAddress !== undefined || name !== host
    ? connectNodeTls(host, port, name, cfg, opts.localAddress)
    : connectDenoTls(host, port, cfg);
  let timer: ReturnType<typeof setTimeout> | undefined;
  let onAbort: (() => void) | undefined;
  const cut = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(new NetError("timeout", `tls connect ${target} timed out after ${timeoutMs} ms`)),
      timeoutMs,
    );
    onAbort = () => reject(new NetError("aborted", `tls connect ${target} aborted`));
    if (opts.signal?.aborted) onAbort();
    else opts.signal?.addEventListener("abort", onAbort, { once: true });
  });
  try {
    return await Promise.race([attempt, cut]);
  } catch (err) {
    // A connection finishing after the timeout or abort must not leak.
    attempt.then((c) => closeQuietly(c), () => {});
    if (err instanceof NetError || err instanceof TlsError) throw err;
    const netReason = classifyError(err);
    if (netReason !== "other" && !isTlsPhase(err)) {
      throw new NetError(netReason, `tls connect ${target}: ${errorMessage(err)}`, { cause: err });
    }
    throw tlsConnectError(err, target, name);
  } finally {
    clearTimeout(timer);
    if (onAbort) opts.signal?.removeEventListener("abort", onAbort);
  }
}

/** A failed client handshake with `target` (verifying `name`) as a TlsError with its reason. */
export function tlsConnectError(err: unknown, target: string, name: string): TlsError {
  const reason = classifyTlsError(err);
  return new TlsError(
    reason,
    `tls connect ${target} (name ${name}): ${reason} (${tlsReasonText[reason]}): ${
      errorMessage(err)
    }`,
    { cause: err },
  );
}

/** Errors that happened after TCP was up (handshake), whatever their class. */
function isTlsPhase(err: unknown): boolean {
  return (err as { tlsPhase?: boolean })?.tlsPhase === true;
}

function markTls(err: unknown): unknown {
  if (err && typeof err === "object") (err as { tlsPhase?: boolean }).tlsPhase = true;
  return err;
}

async function connectDenoTls(
  host: string,
  port: number,
  cfg: TlsClientConfig,
): Promise<Deno.Conn> {
  const options: Deno.ConnectTlsOptions & Partial<Deno.TlsCertifiedKeyPem> = {
    hostname: host,
    port,
    ...(cfg.ca ? { caCerts: [cfg.ca] } : {}),
    ...(cfg.cert && cfg.key ? { cert: cfg.cert, key: cfg.key } : {}),
  };
  const conn = await Deno.connectTls(options as Deno.ConnectTlsOptions);
  // Nagle stays on at this end: a TlsConn has no setNoDelay, and finding its socket through
  // libc (lib/net/tcp_nodelay.ts) cost 2.8-4 ms per dial (measured), more than it saves.
  // dialTls takes this path only for a client certificate to a host that is its own name.
  try {
    await conn.handshake();
  } catch (err) {
    closeQuietly(conn);
    throw markTls(err);
  }
  return conn;
}

async function connectNodeTls(
  host: string,
  port: number,
  name: string,
  cfg: TlsClientConfig,
  localAddress: string | undefined,
): Promise<Deno.Conn> {
  const { connect: tlsConnect } = await import("node:tls");
  const raw = await connectNodeSocket(host, port, localAddress);
  return await new Promise((resolve, reject) => {
    const sock = tlsConnect({
      socket: raw,
      host: name,
      ...(ipFamily(name) ? {} : { servername: name }),
      ...(cfg.ca ? { ca: cfg.ca } : {}),
      ...(cfg.cert && cfg.key ? { cert: cfg.cert, key: cfg.key } : {}),
      rejectUnauthorized: true,
    });
    const tlsError = (e: Error) => {
      sock.destroy();
      raw.destroy();
      reject(markTls(e));
    };
    sock.once("error", tlsError);
    sock.once("secureConnect", () => {
      sock.off("error", tlsError);
      resolve(new NodeSocketConn(sock, { pausable: false }));
    });
  });
}
