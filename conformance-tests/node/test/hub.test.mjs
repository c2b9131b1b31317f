// Hub behaviour with the official client on every transport: JSON and MessagePack (MessagePack
// wherever the transport carries binary), with and without skipNegotiation on WebSockets.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { COMBINATIONS, signalR, startServer, started, sleep, until, withTimeout } from "./helpers.mjs";

// How long we watch to prove a message did NOT arrive.
const QUIET_MS = 300;

for (const combination of COMBINATIONS) {
  const label = `${combination.transport}, ${combination.protocol}${combination.skipNegotiation ? ", skipNegotiation" : ""}`;
  const binary = combination.protocol === "messagepack";

  describe(`hub (${label})`, () => {
    let server;
    const open = [];
    const connect = async (methods = []) => {
      const c = await started(server, combination, methods);
      open.push(c.connection);
      return c;
    };

    before(async () => { server = await startServer(); });
    after(async () => {
      await Promise.all(open.map((c) => c.stop().catch(() => {})));
      await server.stop();
    });

    it("connects on the forced transport, and the connection id matches negotiate", async () => {
      const { connection } = await connect();
      assert.equal(connection.state, signalR.HubConnectionState.Connected);
      assert.equal(await connection.invoke("GetTransport"), combination.transport);
      const id = await connection.invoke("GetConnectionId");
      assert.match(id, /^[A-Za-z0-9_-]{22}$/);
      if (combination.skipNegotiation) assert.equal(connection.connectionId, null);
      else assert.equal(connection.connectionId, id);
    });

    it("returns results of several types", async () => {
      const { connection } = await connect();
      const values = ["text", "", 42, -7, 3.25, true, false, null, [1, "two", null], { a: { b: [1, { c: "d" }] }, e: null }];
      for (const value of values) {
        assert.deepEqual(await connection.invoke("Echo", value), value);
      }
      assert.equal(await connection.invoke("Add", 40, 2), 42);
      assert.equal(await connection.invoke("add", 1, 1), 2, "method names are case-insensitive");
      assert.equal(await connection.invoke("Describe", "x", 3, true), "x|3|true");
      assert.equal(await connection.invoke("Void"), null);
      if (binary) {
        const bytes = new Uint8Array([0, 1, 2, 254, 255]);
        const echoed = await connection.invoke("Echo", bytes);
        assert.ok(echoed instanceof Uint8Array, "binary comes back as Uint8Array");
        assert.deepEqual([...echoed], [...bytes]);
      }
    });

    it("reports method errors, unknown methods and bad arguments, and stays connected", async () => {
      const { connection } = await connect();
      await assert.rejects(connection.invoke("Throw", "nope"), {
        message: "An unexpected error occurred invoking 'Throw' on the server. HubException: nope",
      });
      await assert.rejects(connection.invoke("Fail"), {
        message: "An unexpected error occurred invoking 'Fail' on the server.",
      });
      await assert.rejects(connection.invoke("Nope", 1), {
        message: "Failed to invoke 'Nope' due to an error on the server. HubException: Method does not exist.",
      });
      await assert.rejects(connection.invoke("Add", 1), {
        message: "Failed to invoke 'Add' due to an error on the server.",
      });
      await assert.rejects(connection.invoke("Describe", 1, "x", "y"), {
        message: "Failed to invoke 'Describe' due to an error on the server.",
      });
      assert.equal(connection.state, signalR.HubConnectionState.Connected);
      assert.equal(await connection.invoke("Add", 2, 2), 4);
    });

    it("runs fire-and-forget sends", async () => {
      const { connection, received } = await connect(["Fired"]);
      await connection.send("Fire", { n: 1 });
      await until(() => received.length === 1, 3000, "Fired");
      assert.deepEqual(received[0].args, [{ n: 1 }]);
      // A send to an unknown method gets no reply at all, and breaks nothing.
      await connection.send("Nope");
      assert.equal(await connection.invoke("Add", 1, 2), 3);
    });

    it("calls the caller, all, and others with several argument types", async () => {
      const [a, b, c] = [await connect(["m"]), await connect(["m"]), await connect(["m"])];
      const args = ["s", 1.5, 7, true, null, [1, [2]], { nested: { deep: [true, null] } }];
      if (binary) args.push(new Uint8Array([9, 8, 7]));
      const normalise = (xs) => xs.map((x) => (x instanceof Uint8Array ? [...x] : x));

      await a.connection.invoke("SendToCaller", "m", args);
      await until(() => a.received.length === 1, 3000, "caller message");
      assert.deepEqual(normalise(a.received[0].args), normalise(args));
      await sleep(QUIET_MS);
      assert.equal(b.received.length + c.received.length, 0, "only the caller receives");

      a.received.length = 0;
      await a.connection.invoke("SendToAll", "m", ["all"]);
      await until(() => [a, b, c].every((x) => x.received.length === 1), 3000, "all");
      for (const x of [a, b, c]) assert.deepEqual(x.received[0].args, ["all"]);

      for (const x of [a, b, c]) x.received.length = 0;
      await a.connection.invoke("SendToOthers", "m", ["others"]);
      await until(() => b.received.length === 1 && c.received.length === 1, 3000, "others");
      await sleep(QUIET_MS);
      assert.equal(a.received.length, 0, "others excludes the caller");
      assert.deepEqual(b.received[0].args, ["others"]);
    });

    it("calls one client and a list of clients by id", async () => {
      const [a, b, c] = [await connect(["m"]), await connect(["m"]), await connect(["m"])];
      const bId = await b.connection.invoke("GetConnectionId");
      const cId = await c.connection.invoke("GetConnectionId");
      await a.connection.invoke("SendToClient", bId, "m", [1]);
      await until(() => b.received.length === 1, 3000, "client(id)");
      await a.connection.invoke("SendToClients", [bId, cId, "not-a-connection"], "m", [2]);
      await until(() => b.received.length === 2 && c.received.length === 1, 3000, "clients(ids)");
      await sleep(QUIET_MS);
      assert.equal(a.received.length, 0);
      assert.deepEqual(b.received.map((r) => r.args), [[1], [2]]);
      assert.deepEqual(c.received[0].args, [2]);
    });

    it("pushes from outside the hub through the hub context", async () => {
      const clients = [await connect(["Tick"]), await connect(["Tick"])];
      const response = await fetch(`http://127.0.0.1:${server.port}/admin/broadcast`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ method: "Tick", args: [1, "x", { y: true }] }),
      });
      assert.equal(response.status, 200);
      await until(() => clients.every((c) => c.received.length === 1), 3000, "broadcast");
      for (const c of clients) assert.deepEqual(c.received[0].args, [1, "x", { y: true }]);
    });

    it("delivers the server's Close to onclose", async () => {
      const { connection, closed } = await connect();
      await connection.send("Abort");
      const error = await withTimeout(closed, 3000, "onclose");
      // Abort sends a Close without error: a clean close.
      assert.equal(error, null);
      assert.equal(connection.state, signalR.HubConnectionState.Disconnected);
    });
  });
}
