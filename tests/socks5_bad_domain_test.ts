/**
 * The TCP SOCKS listeners of seaprox and depot-server refuse a CONNECT whose domain name is not
 * UTF-8 or holds a control character: reply 0x01 (a malformed request, as an empty name is),
 * the connection closed, and a warn line with `failure=bad-domain` (as the SOCKS5 UDP path's
 * `bad-domain` drop) that never carries the name's bytes. Both services take their requests
 * through lib/socks5's one server handshake. Before, the name was decoded leniently (U+FFFD,
 * NUL kept) and failed only later, as a dial or resolve error.
 */

import { assert, assertEquals } from "./_assert.ts";
import { portFor } from "./_seaprox.ts";
import { portOf, readAll, type ServiceProcess, startService } from "./_util.ts";
import { startDepotServerService } from "./_depot.ts";
import { dial, writeAll } from "../lib/net/mod.ts";

/** Bad names: not UTF-8, a NUL, a CR LF that would split a log line. */
const badNames = [[0xff, 0x61, 0x62], [0x61, 0x00, 0x62], [0x61, 0x0d, 0x0a, 0x62]];

/** A no-auth SOCKS5 CONNECT to `name`:80 in one write; resolves everything the server sent. */
async function connectTo(port: number, name: number[]): Promise<number[]> {
  const c = await dial("127.0.0.1", port);
  try {
    await writeAll(c, Uint8Array.of(5, 1, 0, 5, 1, 0, 3, name.length, ...name, 0, 80));
    return [...await readAll(c, "the SOCKS5 replies to a bad name, then EOF")];
  } finally {
    c.close();
  }
}

/** Check every bad name is answered 0x01 and logged; `svc`'s log is read from `from`. */
async function checkRefused(svc: ServiceProcess, port: number): Promise<void> {
  for (const name of badNames) {
    const from = svc.lines.length;
    const got = await connectTo(port, name);
    assertEquals(got, [5, 0, 5, 1, 0, 1, 0, 0, 0, 0, 0, 0], `reply to ${name}`);
    const line = await svc.waitFor(/failure=bad-domain/, undefined, from);
    assert(/level=warn/.test(line), line);
    assert(/remote=/.test(line), line);
  }
}

Deno.test("seaprox socks5: a domain name that is not UTF-8 or holds a control character is refused 0x01 and logged", async () => {
  const svc = await startService("seaprox.ts", ["--listen=socks5://127.0.0.1:0"]);
  try {
    await checkRefused(svc, portFor(svc, "socks5"));
  } finally {
    await svc.stop();
  }
});

Deno.test("depot-server socks: a domain name that is not UTF-8 or holds a control character is refused 0x01 and logged", async () => {
  const svc = await startDepotServerService(["--status", ":0"], {
    readyCount: 4,
    env: { DEPOT_TOKEN: "svc-token" },
  });
  try {
    await checkRefused(svc, portOf(svc.addrs.get("socks")!));
    const res = await fetch(`http://${svc.addrs.get("status")}/status`);
    const status = await res.json() as { failuresByReason: Record<string, number> };
    assertEquals(status.failuresByReason["bad-domain"], badNames.length);
  } finally {
    await svc.stop();
  }
});
