/**
 * Run npm's `socks` client once, in its own process (it leaves an unref'd timer per
 * connection that would trip the test sanitizers): CONNECT through a SOCKS5 proxy, send an
 * HTTP GET, print the response on stdout. Exit 2 with the error on stderr on failure.
 *
 * Usage: deno run -A tests/_socks5_npm_client.ts PROXY_PORT DEST_HOST DEST_PORT PATH [USER PASS]
 */

// Test-only, pinned here rather than in deno.json (kept out of the image and installs).
// deno-lint-ignore no-import-prefix
import { SocksClient } from "npm:socks@2.8.11";

const [proxyPort, destHost, destPort, path, user, pass] = Deno.args;
try {
  const { socket } = await SocksClient.createConnection({
    proxy: { host: "127.0.0.1", port: Number(proxyPort), type: 5, userId: user, password: pass },
    command: "connect",
    destination: { host: destHost, port: Number(destPort) },
  });
  const text = await new Promise<string>((resolve, reject) => {
    let out = "";
    const dec = new TextDecoder();
    socket.on("data", (d: Uint8Array) => out += dec.decode(d));
    socket.on("end", () => resolve(out));
    socket.on("error", reject);
    socket.write(`GET ${path} HTTP/1.1\r\nHost: ${destHost}\r\nConnection: close\r\n\r\n`);
  });
  socket.destroy();
  console.log(text);
  Deno.exit(0);
} catch (e) {
  console.error(e instanceof Error ? e.message : String(e));
  Deno.exit(2);
}
