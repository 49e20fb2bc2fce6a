/**
 * A real two-path network for fusion tests and bench/fusion.ts: two network namespaces
 * (client, server) joined by two veth pairs, each shaped with `tc tbf`, with addresses only
 * inside the namespaces (198.18.0.0/15, the benchmarking range). Names carry the pid and a
 * counter so parallel runs never collide; `destroy()` removes everything.
 */

import { errorMessage } from "../lib/net/mod.ts";

let counter = 0;

/**
 * Why this machine cannot build network namespaces (not Linux, not root, or a kernel without
 * them), or undefined when it can. The netns tests are ignored only for such a reason and
 * print it; `ip` and `tc` themselves are installed by the setup step (tools/setup.ts).
 */
export function netnsSkipReason(): string | undefined {
  if (Deno.build.os !== "linux") return "not Linux";
  if (Deno.uid() !== 0) return "not root (ip netns needs CAP_SYS_ADMIN)";
  try {
    Deno.statSync("/proc/self/ns/net");
  } catch {
    return "the kernel has no network namespaces (/proc/self/ns/net is missing)";
  }
  return undefined;
}

/** Whether this process can build namespaces: root, with `ip` and `tc` installed. */
export function netnsAvailable(): boolean {
  const exists = (p: string) => {
    try {
      return Deno.statSync(p).isFile;
    } catch {
      return false;
    }
  };
  return Deno.uid() === 0 && (exists("/usr/sbin/ip") || exists("/sbin/ip")) &&
    (exists("/usr/sbin/tc") || exists("/sbin/tc"));
}

/** Run a command; throw with its stderr when it fails. */
export async function sh(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: exit ${out.code}: ${dec.decode(out.stderr).trim()}`);
  }
  return dec.decode(out.stdout);
}

/** One side's view of a path. */
export interface PathEnds {
  clientDev: string;
  serverDev: string;
  clientAddr: string;
  serverAddr: string;
}

/** tbf settings for a rate: a burst that keeps up at high rates, a short queue. */
function tbfArgs(mbit: number): string[] {
  const burstKb = Math.max(32, Math.ceil(mbit / 8 * 10)); // ~10 ms of tokens at least
  return ["tbf", "rate", `${mbit}mbit`, "burst", `${burstKb}kb`, "latency", "20ms"];
}

/**
 * Network namespace `name` joined to this one by a veth pair (`<name>h` here with `hostAddr`,
 * `<name>n` there with `nsAddr`, both /24) shaped both ways to `mbit` with tc tbf: a slow link
 * between this process and what runs in the namespace (bench/depot_mode.ts, the mux slow-link
 * test). `shape(mbit)` changes both ends' rate later (0: no shaping, the veth's own speed);
 * `destroy()` removes the namespace and the pair; a failed build removes what it made.
 */
export async function shapedNamespace(
  name: string,
  hostAddr: string,
  nsAddr: string,
  mbit: number,
): Promise<{ ns: string; shape(mbit: number): Promise<void>; destroy(): Promise<void> }> {
  const [hostDev, nsDev] = [`${name}h`, `${name}n`];
  const shape = async (rate: number) => {
    for (const ns of [["-n", name], []]) {
      const dev = ns.length > 0 ? nsDev : hostDev;
      if (rate > 0) {
        await sh("tc", [...ns, "qdisc", "replace", "dev", dev, "root", ...tbfArgs(rate)]);
      } else await sh("tc", [...ns, "qdisc", "del", "dev", dev, "root"]);
    }
  };
  const destroy = async () => {
    await sh("ip", ["link", "del", hostDev]).catch(() => {}); // gone with the namespace too
    await sh("ip", ["netns", "del", name]).catch(() => {});
  };
  await sh("ip", ["netns", "add", name]);
  try {
    await sh("ip", ["-n", name, "link", "set", "lo", "up"]);
    await sh("ip", ["link", "add", hostDev, "type", "veth", "peer", "name", nsDev, "netns", name]);
    await sh("ip", ["addr", "add", `${hostAddr}/24`, "dev", hostDev]);
    await sh("ip", ["link", "set", hostDev, "up"]);
    await sh("ip", ["-n", name, "addr", "add", `${nsAddr}/24`, "dev", nsDev]);
    await sh("ip", ["-n", name, "link", "set", nsDev, "up"]);
    await shape(mbit);
  } catch (err) {
    await destroy();
    throw err;
  }
  return { ns: name, shape, destroy };
}

/** Two namespaces joined by two shaped veth pairs. */
export class TwoPathNet {
  readonly clientNs: string;
  readonly serverNs: string;
  readonly paths: PathEnds[];
  #created = false;

  private constructor(tag: string) {
    this.clientNs = `wfc${tag}`;
    this.serverNs = `wfs${tag}`;
    this.paths = [1, 2].map((i) => ({
      clientDev: `wf${tag}c${i}`,
      serverDev: `wf${tag}s${i}`,
      clientAddr: `198.18.${i}.1`,
      serverAddr: `198.18.${i}.2`,
    }));
  }

  /** Build the namespaces and links, shaped to `mbit[i]` per path (both directions). */
  static async create(mbit: [number, number]): Promise<TwoPathNet> {
    await removeStale();
    const net = new TwoPathNet(`${Deno.pid}${String.fromCharCode(97 + counter++ % 26)}`);
    try {
      await net.#build(mbit);
    } catch (err) {
      await net.destroy();
      throw err;
    }
    return net;
  }

  async #build(mbit: [number, number]): Promise<void> {
    this.#created = true;
    await sh("ip", ["netns", "add", this.clientNs]);
    await sh("ip", ["netns", "add", this.serverNs]);
    for (const ns of [this.clientNs, this.serverNs]) {
      await sh("ip", ["-n", ns, "link", "set", "lo", "up"]);
    }
    for (const p of this.paths) {
      await sh("ip", [
        "link",
        "add",
        p.clientDev,
        "netns",
        this.clientNs,
        "type",
        "veth",
        "peer",
        "name",
        p.serverDev,
        "netns",
        this.serverNs,
      ]);
      await sh("ip", [
        "-n",
        this.clientNs,
        "addr",
        "add",
        `${p.clientAddr}/24`,
        "dev",
        p.clientDev,
      ]);
      await sh("ip", [
        "-n",
        this.serverNs,
        "addr",
        "add",
        `${p.serverAddr}/24`,
        "dev",
        p.serverDev,
      ]);
      await sh("ip", ["-n", this.clientNs, "link", "set", p.clientDev, "up"]);
      await sh("ip", ["-n", this.serverNs, "link", "set", p.serverDev, "up"]);
    }
    await this.shape(mbit);
  }

  /** (Re)shape both directions of each path. */
  async shape(mbit: [number, number]): Promise<void> {
    for (let i = 0; i < 2; i++) {
      const p = this.paths[i];
      for (const [ns, dev] of [[this.clientNs, p.clientDev], [this.serverNs, p.serverDev]]) {
        await sh("ip", [
          "netns",
          "exec",
          ns,
          "tc",
          "qdisc",
          "replace",
          "dev",
          dev,
          "root",
          ...tbfArgs(mbit[i]),
        ]);
      }
    }
  }

  /** Take path `i` down (`ip link set … down` on the client side). */
  async linkDown(i: number): Promise<void> {
    await sh("ip", ["-n", this.clientNs, "link", "set", this.paths[i].clientDev, "down"]);
  }

  /** Bring path `i` back up. */
  async linkUp(i: number): Promise<void> {
    await sh("ip", ["-n", this.clientNs, "link", "set", this.paths[i].clientDev, "up"]);
    await sh("ip", ["-n", this.serverNs, "link", "set", this.paths[i].serverDev, "up"]);
  }

  /**
   * Silently drop everything on path `i` both ways: blackhole routes to the far address on
   * both sides. Existing connections stall without any error; new ones fail to connect.
   */
  async blackhole(i: number): Promise<void> {
    const p = this.paths[i];
    await sh("ip", ["-n", this.clientNs, "route", "add", "blackhole", `${p.serverAddr}/32`]);
    await sh("ip", ["-n", this.serverNs, "route", "add", "blackhole", `${p.clientAddr}/32`]);
  }

  /** Undo `blackhole(i)`. */
  async unblackhole(i: number): Promise<void> {
    const p = this.paths[i];
    await sh("ip", ["-n", this.clientNs, "route", "del", "blackhole", `${p.serverAddr}/32`]);
    await sh("ip", ["-n", this.serverNs, "route", "del", "blackhole", `${p.clientAddr}/32`]);
  }

  /** `ip netns exec <ns> cmd args…` as a spawned child with piped output. */
  spawn(ns: string, cmd: string, args: string[], env?: Record<string, string>): Deno.ChildProcess {
    return new Deno.Command("ip", {
      args: ["netns", "exec", ns, cmd, ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env,
    }).spawn();
  }

  /** Remove both namespaces (their veths go with them). Never throws. */
  async destroy(): Promise<void> {
    if (!this.#created) return;
    for (const ns of [this.clientNs, this.serverNs]) {
      try {
        await sh("ip", ["netns", "del", ns]);
      } catch (err) {
        if (!/No such file/.test(errorMessage(err))) console.error(errorMessage(err));
      }
    }
  }
}

/**
 * Remove namespaces left by a run that was killed before its `finally` (their pid is gone).
 * Veths live inside the namespaces and go with them.
 */
async function removeStale(): Promise<void> {
  let list: string;
  try {
    list = await sh("ip", ["netns", "list"]);
  } catch {
    return;
  }
  for (const line of list.split("\n")) {
    const m = /^(wf[cs](\d+)[a-z])\b/.exec(line.trim());
    if (!m || Number(m[2]) === Deno.pid) continue;
    try {
      Deno.statSync(`/proc/${m[2]}`);
      continue; // that run is still alive
    } catch {
      // gone: its namespace is stale
    }
    await sh("ip", ["netns", "del", m[1]]).catch(() => {
      // another run cleaned it up first
    });
  }
}

/** A child process whose output lines are watched (a service in a namespace). */
export class Watched {
  readonly lines: string[] = [];
  readonly done: Promise<Deno.CommandStatus>;
  /** Each waiter counts the matching lines still to come before it resolves. */
  #waiters: { re: RegExp; left: number; resolve: (l: string) => void }[] = [];
  #reading: Promise<void>;

  constructor(readonly child: Deno.ChildProcess, readonly name: string) {
    this.#reading = Promise.all([this.#consume(child.stdout), this.#consume(child.stderr)])
      .then(() => {});
    this.done = child.status;
  }

  async #consume(stream: ReadableStream<Uint8Array>): Promise<void> {
    let pending = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      pending += chunk;
      let i;
      while ((i = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, i);
        pending = pending.slice(i + 1);
        this.lines.push(line);
        if (Deno.env.get("WARREN_TEST_VERBOSE")) console.error(`[${this.name}] ${line}`);
        for (const w of [...this.#waiters]) {
          if (w.re.test(line) && --w.left === 0) {
            this.#waiters.splice(this.#waiters.indexOf(w), 1);
            w.resolve(line);
          }
        }
      }
    }
  }

  /** Resolves with the first line matching `re` (seen before or later). */
  waitFor(re: RegExp, timeoutMs = 30_000): Promise<string> {
    return this.waitForNth(re, 1, timeoutMs);
  }

  /** How many lines seen so far match `re`. */
  count(re: RegExp): number {
    return this.lines.filter((l) => re.test(l)).length;
  }

  /**
   * Resolves with the `n`-th line matching `re` (counted from the start of the output) as
   * soon as it is logged: an event to wait on instead of polling with sleeps.
   */
  waitForNth(re: RegExp, n: number, timeoutMs = 30_000): Promise<string> {
    const hits = this.lines.filter((l) => re.test(l));
    if (hits.length >= n) return Promise.resolve(hits[n - 1]);
    return new Promise((resolve, reject) => {
      const w = {
        re,
        left: n - hits.length,
        resolve: (l: string) => {
          clearTimeout(t);
          resolve(l);
        },
      };
      const t = setTimeout(() => {
        this.#waiters.splice(this.#waiters.indexOf(w), 1);
        reject(
          new Error(
            `${this.name}: no ${n}th line matching ${re} in ${timeoutMs} ms:\n` +
              this.lines.join("\n"),
          ),
        );
      }, timeoutMs);
      this.#waiters.push(w);
      this.#reading.then(() => {
        // Output ended (the process exited) without the line: fail now, not at the timeout.
        if (this.#waiters.includes(w)) {
          clearTimeout(t);
          this.#waiters.splice(this.#waiters.indexOf(w), 1);
          reject(new Error(`${this.name} exited:\n${this.lines.join("\n")}`));
        }
      });
    });
  }

  /** SIGTERM (or `signal`) and wait for the exit and the output. */
  async stop(signal: Deno.Signal = "SIGTERM"): Promise<void> {
    try {
      this.child.kill(signal);
    } catch {
      // already exited
    }
    await this.done;
    await this.#reading;
  }
}
