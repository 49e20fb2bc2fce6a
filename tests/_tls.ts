/**
 * Test PKI made with `openssl` in a temp dir: a CA, a server leaf for localhost/127.0.0.1, a
 * client leaf (mTLS), a second unrelated CA with its own client leaf, a server leaf for a
 * different name, and an expired server leaf. Every test that needs certificates calls
 * `makePki()` once and `remove()` in `finally`.
 */

import { run } from "./_util.ts";

/** Paths of the generated files (PEM). */
export interface Pki {
  dir: string;
  /** The trusted CA. */
  ca: string;
  /** A CA nobody trusts. */
  ca2: string;
  /** Server leaf (SAN localhost, 127.0.0.1, ::1) signed by `ca`. */
  serverCert: string;
  serverKey: string;
  /** Server leaf for `other.example` only, signed by `ca` (hostname mismatch). */
  otherCert: string;
  otherKey: string;
  /** Server leaf for localhost/127.0.0.1 that expired in 2020, signed by `ca`. */
  expiredCert: string;
  expiredKey: string;
  /** Client leaf (CN agent-1) signed by `ca`. */
  clientCert: string;
  clientKey: string;
  /** Client leaf signed by `ca2` (a stranger's client certificate). */
  rogueCert: string;
  rogueKey: string;
  /** Leaf for localhost/127.0.0.1 usable both ways (serverAuth and clientAuth), signed by
   * `ca`: a cluster peer's certificate. */
  peerCert: string;
  peerKey: string;
  /** Delete the directory. */
  remove(): Promise<void>;
}

const ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";

async function sh(cmd: string): Promise<void> {
  const r = await run("sh", ["-c", cmd]);
  if (r.code !== 0) throw new Error(`${cmd}\n${r.stderr}`);
}

/** Make the whole PKI (about a second of openssl). */
export async function makePki(): Promise<Pki> {
  const dir = await Deno.makeTempDir({ prefix: "warren-pki-" });
  const p = (f: string) => `${dir}/${f}`;
  const ca = async (name: string) =>
    await sh(
      `openssl req -x509 ${ec} -days 2 -subj /CN=${name} -keyout ${p(name + ".key")} ` +
        `-out ${p(name + ".pem")} -addext basicConstraints=critical,CA:TRUE ` +
        `-addext keyUsage=critical,keyCertSign`,
    );
  await ca("ca");
  await ca("ca2");
  const leaf = async (
    name: string,
    cn: string,
    signer: string,
    ext: string,
  ) => {
    await Deno.writeTextFile(p(`${name}.ext`), ext);
    await sh(
      `openssl req ${ec} -subj /CN=${cn} -keyout ${p(name + ".key")} -out ${p(name + ".csr")}`,
    );
    await sh(
      `openssl x509 -req -in ${p(name + ".csr")} -CA ${p(signer + ".pem")} ` +
        `-CAkey ${p(signer + ".key")} -CAcreateserial -days 2 -extfile ${p(name + ".ext")} ` +
        `-out ${p(name + ".pem")}`,
    );
  };
  const serverExt = "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n";
  const clientExt = "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n";
  await leaf(
    "server",
    "localhost",
    "ca",
    `subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n${serverExt}`,
  );
  await leaf("other", "other.example", "ca", `subjectAltName=DNS:other.example\n${serverExt}`);
  await leaf("client", "agent-1", "ca", clientExt);
  await leaf("rogue", "rogue", "ca2", clientExt);
  await leaf(
    "peer",
    "peer",
    "ca",
    "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n" +
      "extendedKeyUsage=serverAuth,clientAuth\n",
  );
  // An expired leaf needs explicit dates: `openssl ca` takes them (OpenSSL 3.0's x509 does not).
  await Deno.mkdir(p("db"));
  await Deno.writeTextFile(p("db/index.txt"), "");
  await Deno.writeTextFile(p("db/serial"), "1000\n");
  await Deno.writeTextFile(
    p("ca.cnf"),
    [
      "[ca]",
      "default_ca=d",
      "[d]",
      `database=${p("db/index.txt")}`,
      `serial=${p("db/serial")}`,
      `new_certs_dir=${p("db")}`,
      "default_md=sha256",
      "policy=pol",
      "copy_extensions=none",
      "[pol]",
      "commonName=supplied",
      "[ext]",
      "subjectAltName=DNS:localhost,IP:127.0.0.1",
      "basicConstraints=CA:FALSE",
      "extendedKeyUsage=serverAuth",
      "",
    ].join("\n"),
  );
  await sh(
    `openssl req ${ec} -subj /CN=localhost -keyout ${p("expired.key")} -out ${p("expired.csr")}`,
  );
  await sh(
    `openssl ca -batch -config ${p("ca.cnf")} -cert ${p("ca.pem")} -keyfile ${p("ca.key")} ` +
      `-extensions ext -startdate 20200101000000Z -enddate 20200201000000Z ` +
      `-in ${p("expired.csr")} -out ${p("expired.pem")} -notext`,
  );
  return {
    dir,
    ca: p("ca.pem"),
    ca2: p("ca2.pem"),
    serverCert: p("server.pem"),
    serverKey: p("server.key"),
    otherCert: p("other.pem"),
    otherKey: p("other.key"),
    expiredCert: p("expired.pem"),
    expiredKey: p("expired.key"),
    clientCert: p("client.pem"),
    clientKey: p("client.key"),
    rogueCert: p("rogue.pem"),
    rogueKey: p("rogue.key"),
    peerCert: p("peer.pem"),
    peerKey: p("peer.key"),
    remove: () => Deno.remove(dir, { recursive: true }),
  };
}
