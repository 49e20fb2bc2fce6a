/**
 * The test suite's setup step (`deno task test` runs it first): the one list of Debian
 * packages whose programs the tests start, checked by the files those programs are. Missing
 * ones are installed with apt-get when this runs as root on a machine that has it (Debian's
 * packages are the only outside source: nothing else is downloaded here); otherwise it stops
 * with one line naming them.
 *
 *     deno run --allow-read --allow-env --allow-sys=uid --allow-run=apt-get tools/setup.ts [--check]
 *
 * `--check` only reports (exit 1 when something is missing), never installs.
 * @module
 */

/** A Debian package and the programs of it the suite starts. */
export interface TestPeer {
  /** Debian package name. */
  pkg: string;
  /**
   * The files that prove it is installed: an absolute path, or a command name looked up on
   * PATH (then /usr/sbin and /sbin). Alternatives for one file are joined by `|`.
   */
  files: string[];
  /** Which tests need it. */
  usedBy: string;
}

/** Every Debian package the test suite starts a program of. */
export const testPeers: readonly TestPeer[] = [
  { pkg: "curl", files: ["curl"], usedBy: "HTTP, SOCKS5 and proxy tests (curl as the client)" },
  { pkg: "iproute2", files: ["ip", "tc"], usedBy: "netns tests (namespaces, veths, tc tbf)" },
  {
    pkg: "iptables",
    files: ["iptables", "ip6tables"],
    usedBy: "seaprox redir:// (REDIRECT rules)",
  },
  { pkg: "openssl", files: ["openssl"], usedBy: "TLS tests (a throwaway PKI)" },
  { pkg: "openssh-client", files: ["ssh", "ssh-keygen"], usedBy: "fusion netns ssh scenario" },
  { pkg: "openssh-server", files: ["/usr/sbin/sshd"], usedBy: "fusion netns ssh scenario" },
  { pkg: "golang-go", files: ["go"], usedBy: "mux interop with hashicorp/yamux (Go peer)" },
  {
    pkg: "golang-github-hashicorp-yamux-dev",
    files: ["/usr/share/gocode/src/github.com/hashicorp/yamux"],
    usedBy: "mux interop with hashicorp/yamux (its source, built offline)",
  },
  { pkg: "python3", files: ["python3"], usedBy: "tunnel apps in other languages (echo servers)" },
  { pkg: "prometheus", files: ["promtool"], usedBy: "metrics lint (promtool check metrics)" },
  { pkg: "microsocks", files: ["microsocks"], usedBy: "SOCKS5 peers, seaprox chains" },
  { pkg: "dante-server", files: ["danted"], usedBy: "SOCKS5 peers (dante)" },
  { pkg: "tinyproxy", files: ["tinyproxy"], usedBy: "HTTP CONNECT hops: seaprox chains, egress" },
  { pkg: "dnsmasq", files: ["dnsmasq"], usedBy: "UDP tests (a real DNS server behind the relays)" },
  { pkg: "bind9-dnsutils", files: ["dig"], usedBy: "UDP tests (dig as the DNS client)" },
  {
    pkg: "python3-socks",
    files: ["/usr/lib/python3/dist-packages/socks.py"],
    usedBy: "SOCKS5 UDP ASSOCIATE with PySocks (a client we did not write)",
  },

  { pkg: "nginx", files: ["nginx"], usedBy: "tunnel behind a reverse proxy, PROXY protocol" },
  { pkg: "haproxy", files: ["haproxy"], usedBy: "PROXY protocol v2 in front of seaprox" },
  { pkg: "redis-server", files: ["redis-server"], usedBy: "tunnel cluster (the shared registry)" },
  { pkg: "chromium", files: ["/usr/bin/chromium"], usedBy: "status page, WebSocket in a browser" },
  {
    pkg: "docker.io",
    files: ["/usr/bin/docker", "/usr/sbin/dockerd"],
    usedBy: "docker stack (image build, compose up)",
  },
  { pkg: "docker-compose", files: ["/usr/bin/docker-compose"], usedBy: "docker stack" },
  { pkg: "debootstrap", files: ["/usr/sbin/debootstrap"], usedBy: "docker stack (offline base)" },
];

function isPresent(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Whether `file` (absolute path or command name, `|`-separated alternatives) exists. */
export function found(file: string, path = Deno.env.get("PATH") ?? ""): boolean {
  return file.split("|").some((f) => {
    if (f.startsWith("/")) return isPresent(f);
    const dirs = [...path.split(":").filter(Boolean), "/usr/sbin", "/sbin"];
    return dirs.some((d) => isPresent(`${d}/${f}`));
  });
}

/** The packages of `peers` some file of which is missing. */
export function missingPackages(peers: readonly TestPeer[] = testPeers): string[] {
  return peers.filter((p) => !p.files.every((f) => found(f))).map((p) => p.pkg);
}

async function apt(args: string[]): Promise<void> {
  const out = await new Deno.Command("apt-get", {
    args,
    env: { DEBIAN_FRONTEND: "noninteractive" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    const dec = new TextDecoder();
    throw new Error(
      `apt-get ${args.join(" ")} exited ${out.code}:\n` +
        dec.decode(out.stdout).slice(-4000) + dec.decode(out.stderr).slice(-4000),
    );
  }
}

if (import.meta.main) {
  const checkOnly = Deno.args.includes("--check");
  const missing = missingPackages();
  if (missing.length === 0) Deno.exit(0);
  const canInstall = !checkOnly && Deno.uid() === 0 && found("apt-get");
  if (!canInstall) {
    console.error(
      `setup: missing test peers: ${missing.join(" ")} (install them: apt-get install ` +
        `--no-install-recommends ${missing.join(" ")})`,
    );
    Deno.exit(1);
  }
  const t0 = performance.now();
  console.error(`setup: installing ${missing.join(" ")} (apt-get)`);
  try {
    await apt(["update", "-qq"]);
    await apt(["install", "-y", "-qq", "--no-install-recommends", ...missing]);
  } catch (err) {
    console.error(`setup: ${err instanceof Error ? err.message : String(err)}`);
    Deno.exit(1);
  }
  const still = missingPackages();
  if (still.length > 0) {
    console.error(`setup: still missing after apt-get install: ${still.join(" ")}`);
    Deno.exit(1);
  }
  console.error(`setup: installed in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}
