/**
 * A real UDP service for the UDP tests: dnsmasq answering `*.example.test` with 10.1.2.3 on a
 * loopback port, a DNS query builder/parser for counting datagrams, and `dig`.
 */

import { UdpSocket } from "../lib/udp/mod.ts";
import { freePort, run } from "./_util.ts";

/** The address dnsmasq gives every name under example.test. */
export const exampleTestAddress = "10.1.2.3";

/** A started dnsmasq. */
export interface Dnsmasq {
  port: number;
  stop(): Promise<void>;
}

/** A DNS A query for `name` with transaction id `id`. */
export function dnsQuery(id: number, name: string): Uint8Array {
  const labels = name.split(".").flatMap((l) => [l.length, ...new TextEncoder().encode(l)]);
  return Uint8Array.of(id >> 8, id & 0xff, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, ...labels, 0, 0, 1, 0, 1);
}

/** The transaction id and the first A record of a DNS answer (undefined if none). */
export function dnsAnswer(b: Uint8Array): { id: number; a?: string } {
  const id = (b[0] << 8) | b[1];
  const answers = (b[6] << 8) | b[7];
  if (answers === 0 || b.length < 16) return { id };
  // An A record answer to one question ends with TYPE CLASS TTL RDLENGTH=4 and 4 bytes.
  const a = b.subarray(b.length - 4);
  return { id, a: [...a].join(".") };
}

/** Ask `host:port` one query and wait for its answer (retrying until dnsmasq is up). */
async function answers(port: number): Promise<boolean> {
  const s = await UdpSocket.bind("127.0.0.1", 0);
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const got = new Promise<boolean>((resolve) => {
      s.onMessage = (d) => resolve(dnsAnswer(d).a === exampleTestAddress);
      timer = setTimeout(() => resolve(false), 300);
    });
    await s.send(dnsQuery(1, "ready.example.test"), { host: "127.0.0.1", port });
    return await got;
  } finally {
    clearTimeout(timer);
    s.close();
  }
}

/** dnsmasq on 127.0.0.1 (a free port; retried on another if it cannot bind). */
export async function startDnsmasq(): Promise<Dnsmasq> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = freePort();
    const child = new Deno.Command("dnsmasq", {
      args: [
        "--no-daemon",
        `--port=${port}`,
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        "--conf-file=/dev/null",
        "--pid-file=",
        `--address=/example.test/${exampleTestAddress}`,
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    let exited = false;
    const status = child.status.then(() => (exited = true));
    for (let i = 0; i < 50 && !exited; i++) {
      if (await answers(port)) {
        return {
          port,
          stop: async () => {
            child.kill("SIGTERM");
            await status;
          },
        };
      }
    }
    if (!exited) child.kill("SIGKILL");
    await status;
  }
  throw new Error("dnsmasq did not start");
}

/**
 * `dig +short name @server -p port` (server 127.0.0.1 unless given): the answer lines. dig's own comments (";; … timed
 * out" before a retry that got the answer, on a busy machine) are left out: a late answer is
 * still the answer.
 */
export async function dig(port: number, name: string, server = "127.0.0.1"): Promise<string> {
  const r = await run("dig", [
    "+short",
    "+tries=3",
    "+time=10", // per try: a hop chain on a loaded box may be slow (a hang's bound)
    `@${server}`,
    "-p",
    `${port}`,
    name,
  ]);
  return r.stdout.split("\n").filter((l) => !l.startsWith(";")).join("\n").trim();
}
