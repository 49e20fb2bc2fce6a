/** Helper of bench/tunnel.ts: the embeddable Hono front served by Deno.serve. */
import { createTunnelApp, TunnelServer } from "../lib/tunnel/mod.ts";

const server = new TunnelServer();
await server.addHost("127.0.0.1", Deno.env.get("BENCH_ID")!);
const port = Number(Deno.env.get("BENCH_PORT"));
Deno.serve(
  { hostname: "127.0.0.1", port, onListen: () => console.log("listening") },
  createTunnelApp(server, { publicPort: port }).fetch,
);
