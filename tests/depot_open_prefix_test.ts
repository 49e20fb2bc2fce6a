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
import { readAll, until, within } from "./_util.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

Deno.test("depot open: bytes sent with a standby's answer in one write lead the stream, then its confirmed FIN", async () => {
  const depot = await startDepot({ locals: [], server: { token: "t" } });
  const ctl = new ControlConn(await dial("127.0.0.1", depot.controlPort), depotProtocol);
  const spare = await dial("127.0.0.1", depot.tunnelPort);
  let clientConn: Promise<Duplex> | undefined;
  // The receive loop answers the server's pings meanwhile; nothing else comes that way.
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
      while (await ctl.receive()) continue;
    })().catch(() => {
      // Closed at the end of the test: no more pings to answer.
    });
    await new ControlWriter(spare, depotProtocol).send({
      type: "standby",
      name: "default",
      sessionKey: sessionKey!,
    });
    const reader = new BufferedReader(spare, 1024);
    // Once the server holds the spare, the request takes it (before, the control connection).
    await until(
      "the server to hold the spare",
      () => depot.server.status().exits.find((e) => e.name === "default")?.spares === 1,
    );
    clientConn = socksDial(depot.socksPort, { host: "app.invalid", port: 8080 });
    clientConn.catch(() => {
      // Awaited below; a failure there fails the test.
    });
    const onSpare = await within(
      new ControlReader(reader, depotProtocol).read(),
      "the request on the spare",
    );
    assertEquals(onSpare?.type, "connect");
    const req = onSpare as Extract<DepotMessage, { type: "connect" }>;
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
    const c = await within(clientConn!, "SOCKS reply");
    const head = new Uint8Array(21);
    for (let got = 0; got < head.length;) {
      const n = await within(c.read(head.subarray(got)), "bytes sent with the answer");
      assert(n !== null, "the client read EOF before the bytes sent with the answer");
      got += n;
    }
    assertEquals(dec.decode(head), "down, with the answer");
    // The end confirmed before the FIN: the FIN reaches the client as a FIN, not a reset.
    await ctl.send({ type: "end", id: req.id });
    await writeAll(rest, enc.encode(", the rest"));
    await rest.closeWrite();
    assertEquals(dec.decode(await within(readAll(c), "rest and FIN")), ", the rest");
    await writeAll(c, enc.encode("up"));
    await c.closeWrite();
    assertEquals(dec.decode(await within(readAll(rest), "upload and FIN")), "up");
  } finally {
    await clientConn?.then((c) => c.close(), () => {});
    spare.close();
    ctl.close();
    await receiving;
    await depot.close();
  }
});
