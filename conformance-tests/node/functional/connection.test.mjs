// The raw /echo endpoint through the official client's HttpConnection: no handshake, no hub
// protocol, text back as text, on every transport; message logging; redirects; a failed
// negotiate's text.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { signalR, startServer, HttpConnection, withTimeout, deferred, recordingLogger, TRANSPORTS } from "./support.mjs";

const MESSAGE = "Hello World!";

/** Starts a raw connection, sends MESSAGE, and stops once it came back; resolves the close error. */
async function echoRoundTrip(url, options) {
  const connection = new HttpConnection(url, { logger: signalR.NullLogger.instance, ...options });
  const closed = deferred();
  const received = [];
  connection.onreceive = (data) => {
    received.push(data);
    if (received.join("") === MESSAGE) connection.stop();
  };
  connection.onclose = (error) => closed.resolve(error);
  await withTimeout(connection.start(signalR.TransferFormat.Text), 5000, "start");
  await connection.send(MESSAGE);
  const error = await withTimeout(closed.promise, 5000, "the echo and the close");
  return { error, received };
}

describe("raw connections at /echo", () => {
  let server;
  before(async () => { server = await startServer(); });
  after(async () => { await server.stop(); });

  it("the client picks a transport itself and the text comes back", async () => {
    const { error, received } = await echoRoundTrip(`${server.base}/echo`, {});
    assert.equal(error, undefined);
    assert.equal(received.join(""), MESSAGE);
  });

  for (const transport of TRANSPORTS) {
    describe(`over ${transport}`, () => {
      const options = (extra = {}) => ({ transport: signalR.HttpTransportType[transport], ...extra });

      it("what is sent comes back as text, then the connection closes cleanly", async () => {
        const { error, received } = await echoRoundTrip(`${server.base}/echo`, options());
        assert.equal(error, undefined);
        assert.ok(received.every((piece) => typeof piece === "string"), "text stays text");
        assert.equal(received.join(""), MESSAGE);
      });

      it("message content is not logged unless asked for", async () => {
        const logger = recordingLogger();
        await echoRoundTrip(`${server.base}/echo`, options({ logger }));
        assert.ok(logger.lines.length > 0, "the client logged something");
        assert.ok(logger.lines.every((line) => !line.includes(MESSAGE)), "no line carries the message");
      });

      it("message content is logged once each way when asked for", async () => {
        const logger = recordingLogger();
        await echoRoundTrip(`${server.base}/echo`, options({ logger, logMessageContent: true }));
        assert.equal(logger.lines.filter((line) => line.includes(MESSAGE)).length, 2);
      });
    });
  }

  it("a negotiate answered with a redirect is followed", async () => {
    const { error, received } = await echoRoundTrip(`${server.base}/echoredirect`, {});
    assert.equal(error, undefined);
    assert.equal(received.join(""), MESSAGE);
  });

  it("a failed negotiate shows the server's response in its error", async () => {
    const connection = new HttpConnection(`${server.base}/bad-negotiate`, { logger: signalR.NullLogger.instance });
    await assert.rejects(connection.start(signalR.TransferFormat.Text), {
      message: "Failed to complete negotiation with the server: Error: Some response from server: Status code '400'",
    });
  });

  it("a connection without the negotiate cookie is not echoed", async () => {
    // Skipping negotiate means no cookie was ever set: the server ends the connection at once.
    const connection = new HttpConnection(`${server.base}/echo`, {
      logger: signalR.NullLogger.instance,
      transport: signalR.HttpTransportType.WebSockets,
      skipNegotiation: true,
    });
    const received = [];
    const closed = deferred();
    connection.onreceive = (data) => received.push(data);
    connection.onclose = (error) => closed.resolve(error);
    await withTimeout(connection.start(signalR.TransferFormat.Text), 5000, "start");
    await connection.send(MESSAGE).catch(() => {});
    await withTimeout(closed.promise, 5000, "the server to end the connection");
    assert.deepEqual(received, []);
  });
});
