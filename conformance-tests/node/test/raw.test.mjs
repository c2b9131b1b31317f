// Raw connections (no handshake, no hub protocol) through the official client's HttpConnection,
// on every transport: what is sent comes back, text as text.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { signalR, startServer, withTimeout } from "./helpers.mjs";

const require = createRequire(import.meta.url);
// Not exported from the package's index; the official functional tests use it the same way.
const { HttpConnection } = require("@microsoft/signalr/dist/cjs/HttpConnection");

describe("raw connections at /echo", () => {
  let server;
  before(async () => { server = await startServer(); });
  after(async () => { await server.stop(); });

  for (const transport of ["WebSockets", "ServerSentEvents", "LongPolling"]) {
    it(`echo text over ${transport}`, async () => {
      const connection = new HttpConnection(`http://127.0.0.1:${server.port}/echo`, {
        transport: signalR.HttpTransportType[transport],
        logger: signalR.NullLogger.instance,
      });
      const received = [];
      let closed;
      const ended = new Promise((resolve) => { closed = resolve; });
      connection.onreceive = (data) => received.push(data);
      connection.onclose = (error) => closed(error);
      await withTimeout(connection.start(signalR.TransferFormat.Text), 5000, "start");
      await connection.send("hello, raw world");
      const deadline = Date.now() + 5000;
      while (received.join("").length < "hello, raw world".length && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 10));
      }
      assert.equal(typeof received[0], "string", "text comes back as text");
      assert.equal(received.join(""), "hello, raw world");
      await connection.stop();
      assert.equal(await withTimeout(ended, 5000, "close"), undefined, "a clean close");
    });
  }
});
