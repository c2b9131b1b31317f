// Transport choice and connection ends with the official client: fallback when the server
// disables transports, and clean stops from either side on every transport.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { client, disconnected, signalR, startServer, started, withTimeout } from "./helpers.mjs";

describe("transport fallback", () => {
  const cases = [
    { serve: "ws,sse,lp", protocol: "json", expect: "WebSockets" },
    { serve: "sse,lp", protocol: "json", expect: "ServerSentEvents" },
    { serve: "lp", protocol: "json", expect: "LongPolling" },
    // MessagePack cannot use SSE (text only), so the client skips it.
    { serve: "sse,lp", protocol: "messagepack", expect: "LongPolling" },
  ];
  for (const { serve, protocol, expect } of cases) {
    it(`an unforced ${protocol} client lands on ${expect} when the server serves ${serve}`, async () => {
      const server = await startServer(["--transports", serve]);
      try {
        const { connection } = await started(server, { protocol, transport: "any" });
        assert.equal(await connection.invoke("GetTransport"), expect);
        assert.equal(await connection.invoke("Echo", "works"), "works");
        await connection.stop();
      } finally {
        await server.stop();
      }
    });
  }

  it("a client forced onto a disabled transport fails to start", async () => {
    const server = await startServer(["--transports", "lp"]);
    try {
      const connection = client(server, { transport: "WebSockets" });
      await assert.rejects(withTimeout(connection.start(), 5000, "start"));
    } finally {
      await server.stop();
    }
  });
});

for (const transport of ["WebSockets", "ServerSentEvents", "LongPolling"]) {
  describe(`connection ends (${transport})`, () => {
    let server;
    before(async () => { server = await startServer(); });
    after(async () => { await server.stop(); });

    it("a clean stop from the client runs the hub's on_disconnected", async () => {
      const { connection, closed } = await started(server, { transport });
      const id = await connection.invoke("GetConnectionId");
      await withTimeout(connection.stop(), 5000, "stop");
      assert.equal(await closed, null);
      const deadline = Date.now() + 5000;
      let entry;
      while (!entry) {
        entry = (await disconnected(server)).find(([cid]) => cid === id);
        if (!entry && Date.now() > deadline) assert.fail("on_disconnected never ran");
        if (!entry) await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(entry[1], null, "a graceful stop has no error");
    });

    it("a client with an access token connects (query string on WebSockets/SSE, header on long polling)", async () => {
      const { connection } = await started(server, { transport, accessToken: "a.b.c" });
      assert.equal(await connection.invoke("Echo", "with token"), "with token");
      await connection.stop();
    });

    it("a close from the server reaches onclose", async () => {
      const { connection, closed } = await started(server, { transport });
      await connection.send("Abort");
      assert.equal(await withTimeout(closed, 5000, "onclose"), null);
      assert.equal(connection.state, signalR.HubConnectionState.Disconnected);
    });
  });
}
