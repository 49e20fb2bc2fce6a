/**
 * `--transport ws` as processes, through a real HTTP reverse proxy: seaprox node B listens for
 * links over WebSocket behind nginx (which passes only HTTP and WebSocket upgrades), node A
 * reaches it with `--via link://<nginx>` and `--transport ws`; curl through A's SOCKS5
 * downloads 8 MiB byte-exact and uploads 8 MiB whose SHA-256 the origin confirms. A node on
 * plain TCP does not get through.
 */

import { assertEquals } from "./_assert.ts";
import { blockStreamSha256, run, sha256, startOrigin } from "./_util.ts";
import { portFor, startSeaproxService } from "./_seaprox.ts";
import { startNginx } from "./_nginx.ts";

const MiB = 1024 * 1024;

Deno.test("transport service: seaprox link over WebSocket through nginx, byte-exact", async () => {
  const origin = startOrigin();
  const token = ["--link-token", "link-ws-s3cret-token"];
  const b = await startSeaproxService(["link://127.0.0.1:0"], [...token, "--transport", "ws"]);
  const nginx = await startNginx(portFor(b, "link"));
  const nodes = [];
  try {
    const a = await startSeaproxService(["socks5://127.0.0.1:0"], [
      "--via",
      `link://127.0.0.1:${nginx.port}`,
      "--transport",
      "ws",
      ...token,
    ]);
    nodes.push(a);
    const socks = `socks5h://127.0.0.1:${portFor(a, "socks5")}`;
    const down = await run("sh", [
      "-c",
      `curl -sS -x ${socks} http://127.0.0.1:${origin.port}/bytes/${8 * MiB}?seed=3 | sha256sum`,
    ]);
    assertEquals(down.stdout.split(" ")[0], blockStreamSha256(8 * MiB, 3), down.stderr);
    const body = new Uint8Array(8 * MiB).map((_, i) => (i * 31 + (i >> 12)) & 255);
    const file = await Deno.makeTempFile();
    try {
      await Deno.writeFile(file, body);
      const up = await run("curl", [
        "-sS",
        "-x",
        socks,
        "--data-binary",
        `@${file}`,
        `http://127.0.0.1:${origin.port}/sha256`,
      ]);
      assertEquals(JSON.parse(up.stdout), { sha256: sha256(body), bytes: body.length });
    } finally {
      await Deno.remove(file);
    }

    // A node on plain TCP meets nginx's HTTP, not a link: its SOCKS clients are refused.
    const tcp = await startSeaproxService(["socks5://127.0.0.1:0"], [
      "--via",
      `link://127.0.0.1:${nginx.port}`,
      ...token,
    ]);
    nodes.push(tcp);
    const refused = await run("curl", [
      "-sS",
      "-x",
      `socks5h://127.0.0.1:${portFor(tcp, "socks5")}`,
      `http://127.0.0.1:${origin.port}/hello`,
    ]);
    assertEquals(refused.code !== 0, true, refused.stdout);
  } finally {
    for (const n of nodes) await n.stop();
    await nginx.stop();
    await b.stop();
    await origin.close();
  }
});
