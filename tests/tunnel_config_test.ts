/**
 * lib/tunnel/config.ts without a process: `--host`, hosts-file and `--tcp` values parsed with
 * errors naming where they were written (a hosts file's line, not `--host`), and the reload
 * diff applied to a TunnelServer (only config-defined routes change; admin ones stay).
 */

import { assert, assertEquals, assertMatch, assertThrows } from "./_assert.ts";
import {
  diffTunnelConfig,
  parseHostsFile,
  parseHostSpec,
  parsePortRange,
  parseTcpSpec,
  TunnelConfigError,
  TunnelServer,
} from "../lib/tunnel/mod.ts";

const id1 = "identifier-one-123", id2 = "identifier-two-456";

function refusal(fn: () => unknown): string {
  const err = assertThrows(fn);
  assert(err instanceof TunnelConfigError, `${err.name}: ${err.message}`);
  return err.message;
}

Deno.test("tunnel config: host values resolve env: references and name where they were written", () => {
  const env = (n: string) => (n === "APP_ID" ? id1 : undefined);
  assertEquals(parseHostSpec("App.Example.com=env:APP_ID", "--host", env), [
    "app.example.com",
    id1,
  ]);
  assertEquals(parseHostSpec(`a.test=${id2}`, "--host"), ["a.test", id2]);
  assertMatch(
    refusal(() => parseHostSpec("a.test=env:NOPE", "--host", env)),
    /^--host a\.test: environment variable NOPE is not set$/,
  );
  assertMatch(
    refusal(() => parseHostSpec("a.test=short", "t.toml:3: host")),
    /^t\.toml:3: host: identifier of a\.test must be at least 8/,
  );
  assertMatch(
    refusal(() => parseHostSpec("no-equals", "--host")),
    /^--host must be vhost=identifier/,
  );
  assertMatch(refusal(() => parseHostSpec(`bad host!=${id1}`, "--host")), /bad host name/);
});

Deno.test("tunnel config: a bad hosts-file line names the file and the line", () => {
  const text = `# hosts\n\na.test ${id1}   # trailing comment\nb.test ${id2}\n`;
  assertEquals(parseHostsFile(text, "hosts"), [["a.test", id1], ["b.test", id2]]);
  assertMatch(
    refusal(() => parseHostsFile(`a.test ${id1}\nb.test short\n`, "/etc/hosts.tun")),
    /^\/etc\/hosts\.tun:2: identifier of b\.test must be at least 8/,
  );
  assertMatch(
    refusal(() => parseHostsFile(`\n\nlonely.test\n`, "h")),
    /^h:3: want "vhost identifier", got 1 fields$/,
  );
  assertMatch(refusal(() => parseHostsFile(`bad!host ${id1}\n`, "h")), /^h:1: bad host name/);
});

Deno.test("tunnel config: --tcp and --tcp-ports", () => {
  const range = parsePortRange("20000-20100", "--tcp-ports");
  assertEquals(range, { min: 20000, max: 20100 });
  assertEquals(parsePortRange("20001", "--tcp-ports"), { min: 20001, max: 20001 });
  assertMatch(
    refusal(() => parsePortRange("20-10", "--tcp-ports")),
    /^--tcp-ports must be min-max/,
  );
  assertEquals(parseTcpSpec(`20001:5432=${id1}`, range, "--tcp"), {
    publicPort: 20001,
    identifier: id1,
    localPort: 5432,
    origin: "flag",
  });
  assertMatch(
    refusal(() => parseTcpSpec(`30000=${id1}`, range, "--tcp")),
    /^--tcp 30000: outside --tcp-ports 20000-20100$/,
  );
  assertMatch(
    refusal(() => parseTcpSpec(`20001=${id1}`, undefined, "--tcp")),
    /outside --tcp-ports \(none\)/,
  );
  assertMatch(
    refusal(() => parseTcpSpec("x=y", range, "--tcp")),
    /must be port\[:localPort\]=identifier/,
  );
});

Deno.test("tunnel config: the diff touches only what changed", () => {
  const cfg = (hosts: [string, string][], tcp: [number, string, number?][] = []) => ({
    hosts: new Map(hosts),
    tcp: new Map(tcp.map(([p, id, l]) => [p, { publicPort: p, identifier: id, localPort: l }])),
  });
  const d = diffTunnelConfig(
    cfg([["a.test", id1], ["b.test", id1]], [[20001, id1], [20002, id1, 22]]),
    cfg([["b.test", id2], ["c.test", id1]], [[20001, id1], [20002, id1, 23]]),
  );
  assertEquals(d.removeHosts, ["a.test", "b.test"]);
  assertEquals(d.addHosts, [["b.test", id2], ["c.test", id1]]);
  assertEquals(d.removeTcp, [20002]);
  assertEquals(d.addTcp, [{ publicPort: 20002, identifier: id1, localPort: 23 }]);
  const same = diffTunnelConfig(cfg([["a.test", id1]]), cfg([["a.test", id1]]));
  assertEquals([same.removeHosts, same.addHosts, same.removeTcp, same.addTcp], [[], [], [], []]);
});

Deno.test("tunnel config: applied to a server, admin-added hosts stay", async () => {
  const server = new TunnelServer();
  try {
    await server.applyConfig({ hosts: new Map([["a.test", id1]]), tcp: new Map() });
    await server.addHost("admin.test", id2); // as the admin API does
    const hosts = async () => (await server.registry.listHosts()).map((h) => h.host).sort();
    assertEquals(await hosts(), ["a.test", "admin.test"]);
    const r = await server.applyConfig({ hosts: new Map([["b.test", id2]]), tcp: new Map() });
    assertEquals([r.removeHosts, r.addHosts], [["a.test"], [["b.test", id2]]]);
    assertEquals(await hosts(), ["admin.test", "b.test"]);
    assertEquals(await server.route("a.test").then((x) => x.ok ? 200 : x.status), 404);
    // A TCP tunnel outside the server's range is reported, not thrown; the hosts still apply.
    const t = await server.applyConfig({
      hosts: new Map([["b.test", id2]]),
      tcp: new Map([[20001, { publicPort: 20001, identifier: id2 }]]),
    });
    assertEquals(t.failedTcp.map((f) => f.port), [20001]);
  } finally {
    await server.close();
  }
});
