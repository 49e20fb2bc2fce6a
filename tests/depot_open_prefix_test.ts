/**
 * depot open-with-data on plain standby spares: the bytes a local sends in the same write as
 * its `tunnel` answer are read by the server's handshake past the answer, and must lead the
 * relayed stream through the FIN gate (the gate's tunnel becomes the prefixed one). Driven by
 * hand on the local's side; every wait is bounded and names what it waited for.
 */
import {
  BufferedReader,
  ControlConn,
  ControlReader,
  ControlWriter,
  encodeFrame,
} from "../lib/control/mod.ts";
import { type DepotMessage, depotProtocol } from "../lib/depot/mod.ts";
import { concatBytes, dial, type Duplex, withPrefix, writeAll } from "../lib/net/mod.ts";
import { assert, assertEquals } from "./_assert.ts";
import { socksDial, startDepot } from "./_depot.ts";
import { readAll } from "./_util.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** `p`, or a rejection naming `what` after `ms`. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("depot open: bytes sent with a standby's answer in one write lead the stream, then its confirmed FIN", async () => {
  const depot = await startDepot({ locals: [], server: { token: "t" } });
  const ctl = new ControlConn(await dial("127.0.0.1", depot.controlPort), depotProtocol);
  const spare = await dial("127.0.0.1", depot.tunnelPort);
  let clientConn: Promise<Duplex> | undefined;
  // Requests that come on the control connection (the spare not registered yet), and the
  // receive loop that answers the server's pings meanwhile.
  const viaControl: DepotMessage[] = [];
  let receiving: Promise<void> | undefined;
  try {
    await ctl.send({
      type: "hello",
      role: "depot-local",
      token: "t",
      name: "default",
      features: ["open", "end"],
    });
    const { sessionKey } = await ctl.expect("welcome", 10_000);
    receiving = (async () => {
      for (let m = await ctl.receive(); m; m = await ctl.receive()) viaControl.push(m);
    })().catch(() => {
      // Closed at the end of the test: nothing more to collect.
    });
    await new ControlWriter(spare, depotProtocol).send({
      type: "standby",
      name: "default",
      sessionKey: sessionKey!,
    });
    const reader = new BufferedReader(spare, 1024);
    const onSpare = new ControlReader(reader, depotProtocol).read();
    // The server takes the spare once it has read its frame; a request that comes before
    // that goes on the control connection: refused here, and asked again.
    let req: Extract<DepotMessage, { type: "connect" }> | undefined;
    for (let attempt = 1; !req; attempt++) {
      assert(attempt <= 50, "the server never wrote a request on the standby spare");
      const client = socksDial(depot.socksPort, { host: "app.invalid", port: 8080 });
      const first = await within(
        Promise.race([
          onSpare.then((m) => ({ on: "spare", m })),
          client.then(() => ({ on: "client", m: undefined }), () => ({ on: "refused", m: null })),
        ]),
        10_000,
        "request on the spare or the control connection",
      );
      if (first.on === "spare") {
        assertEquals(first.m?.type, "connect");
        req = first.m as Extract<DepotMessage, { type: "connect" }>;
        clientConn = client; // its reply comes once the answer is in
        break;
      }
      // It went the control way: refuse it, and let the client see its reply before retrying.
      for (const m of viaControl.splice(0)) {
        if (m.type === "connect") {
          await ctl.send({ type: "connectFailed", id: m.id, reason: "refused" });
        }
      }
      await client.then((c) => c.close(), () => {});
      await new Promise((r) => setTimeout(r, 20));
    }
    // The answer and the target's first bytes in one write: what the server's handshake read
    // past the answer leads the gated tunnel.
    const rest = withPrefix(spare, reader.takeBuffered());
    const tunnelFrame = encodeFrame({
      v: depotProtocol.version,
      type: "tunnel",
      id: req.id,
      key: req.key,
    });
    await writeAll(rest, concatBytes(tunnelFrame, enc.encode("down, with the answer")));
    const c = await within(clientConn!, 10_000, "SOCKS reply");
    const head = new Uint8Array(21);
    for (let got = 0; got < head.length;) {
      const n = await within(c.read(head.subarray(got)), 10_000, "bytes sent with the answer");
      assert(n !== null, "the client read EOF before the bytes sent with the answer");
      got += n;
    }
    assertEquals(dec.decode(head), "down, with the answer");
    // The end confirmed before the FIN: the FIN reaches the client as a FIN, not a reset.
    await ctl.send({ type: "end", id: req.id });
    await writeAll(rest, enc.encode(", the rest"));
    await rest.closeWrite();
    assertEquals(dec.decode(await within(readAll(c), 10_000, "rest and FIN")), ", the rest");
    await writeAll(c, enc.encode("up"));
    await c.closeWrite();
    assertEquals(dec.decode(await within(readAll(rest), 10_000, "upload and FIN")), "up");
  } finally {
    await clientConn?.then((c) => c.close(), () => {});
    spare.close();
    ctl.close();
    await receiving;
    await depot.close();
  }
});
