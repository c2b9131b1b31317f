// The rest of the test app: a plain WebSocket on /echo, a hub that cannot start connections,
// CORS for loopback pages, the deployment description, and a reconnect whose URL the
// application changes while it is under way.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { signalR, startServer, hub, nextClose, withTimeout, deferred, PAIRS, pairName } from "./support.mjs";

const require = createRequire(import.meta.url);
// The official client's own WebSocket package on Node (Node 20 has no global WebSocket).
const WebSocket = require("ws");

describe("the rest of the test app", () => {
  let server;
  before(async () => { server = await startServer(); });
  after(async () => { await server.stop(); });

  it("a plain WebSocket without negotiate is echoed and closes cleanly", async () => {
    // A browser would carry the negotiate cookie set earlier on this origin; here it is sent by hand.
    const socket = new WebSocket(`${server.base.replace(/^http/, "ws")}/echo`, { headers: { Cookie: "testCookie=testValue" } });
    const got = deferred();
    const closed = deferred();
    socket.on("open", () => socket.send("message"));
    // This ws (7.x) hands text frames over as strings and binary ones as Buffers.
    socket.on("message", (data) => { got.resolve({ text: data.toString(), asText: typeof data === "string" }); socket.close(1000); });
    socket.on("close", (code) => closed.resolve(code));
    socket.on("error", (e) => got.reject(e));
    assert.deepEqual(await withTimeout(got.promise, 5000, "the echo"), { text: "message", asText: true });
    assert.equal(await withTimeout(closed.promise, 5000, "close"), 1000);
  });

  for (const pair of PAIRS) {
    it(`a hub that cannot start connections reports why (${pairName(pair)})`, async () => {
      const expected = "Server returned an error on close: Connection closed with an error. InvalidOperationException: Unable to resolve service for type 'System.Object' while attempting to activate 'FunctionalTests.UncreatableHub'.";
      const connection = hub(`${server.base}/uncreatable`, pair);
      const closed = nextClose(connection);
      // Either start fails or the connection closes right after: the error text is the same.
      const startError = await withTimeout(connection.start().then(() => null, (e) => e), 5000, "start");
      const error = startError ?? await withTimeout(closed, 5000, "close");
      assert.equal(error?.message, expected);
    });
  }

  it("a loopback page's preflight is answered with its origin and credentials", async () => {
    const origin = "http://localhost:9876";
    const response = await fetch(`${server.base}/testhub/negotiate?negotiateVersion=1`, {
      method: "OPTIONS",
      headers: { Origin: origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-requested-with" },
    });
    assert.equal(response.status, 204);
    assert.equal(response.headers.get("access-control-allow-origin"), origin);
    assert.equal(response.headers.get("access-control-allow-credentials"), "true");
    assert.equal(response.headers.get("access-control-allow-methods"), "POST");
    assert.equal(response.headers.get("access-control-allow-headers"), "x-requested-with");
  });

  it("a loopback page may read the token endpoint; another site may not", async () => {
    const mine = await fetch(`${server.base}/generateJwtToken`, { headers: { Origin: "http://127.0.0.1:5000" } });
    assert.equal(mine.headers.get("access-control-allow-origin"), "http://127.0.0.1:5000");
    const theirs = await fetch(`${server.base}/generateJwtToken`, { headers: { Origin: "http://localhost.evil.example:5000" } });
    assert.equal(theirs.headers.get("access-control-allow-origin"), null);
    const preflight = await fetch(`${server.base}/testhub/negotiate`, {
      method: "OPTIONS",
      headers: { Origin: "https://example.com", "Access-Control-Request-Method": "POST" },
    });
    assert.equal(preflight.headers.get("access-control-allow-origin"), null);
  });

  it("the deployment endpoint describes the build as JSON", async () => {
    const response = await fetch(`${server.base}/deployment`);
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type"), /application\/json/);
    const body = await response.json();
    assert.equal(body.Name, "conformance-tests");
    assert.equal(typeof body.Version, "string");
  });

  it("a URL changed while reconnecting is the one kept", async () => {
    const connection = hub(`${server.base}/testhub`, { transport: "WebSockets", reconnect: true });
    const reconnecting = deferred();
    connection.onreconnecting(() => {
      connection.baseUrl = `${server.base}/testhub-nowebsockets`;
      reconnecting.resolve();
    });
    const closed = nextClose(connection);
    await withTimeout(connection.start(), 5000, "start");
    connection.serverTimeout();
    await withTimeout(reconnecting.promise, 5000, "reconnecting");
    assert.equal(connection.baseUrl, `${server.base}/testhub-nowebsockets`);
    await withTimeout(connection.stop(), 5000, "stop");
    await closed;
  });
});

describe("hostile requests to the test app's own endpoints", () => {
  let server;
  before(async () => { server = await startServer(); });
  after(async () => { await server.stop(); });

  it("a client result for a connection that does not exist is answered at once", async () => {
    const response = await withTimeout(fetch(`${server.base}/clientresult/no-such-connection`), 5000, "clientresult");
    assert.equal(response.status, 200);
    assert.equal(await response.text(), "Connection 'no-such-connection' does not exist.");
  });

  it("a connection id that is not UTF-8 is refused with a short JSON error", async () => {
    const response = await fetch(`${server.base}/clientresult/%ff%fe`);
    assert.equal(response.status, 400);
    assert.deepEqual(await response.json(), { error: "the connection id must be UTF-8 text" });
  });

  it("refusals have an empty body and a Bearer challenge, never a library's error text", async () => {
    const negotiate = (headers) =>
      fetch(`${server.base}/authorizedhub/negotiate?negotiateVersion=1`, { method: "POST", headers });
    const anonymous = await negotiate({});
    assert.equal(anonymous.status, 401);
    assert.equal(anonymous.headers.get("www-authenticate"), "Bearer");
    assert.equal(await anonymous.text(), "");
    for (const token of ["garbage", "a.b.c", "!!!.@@@.###", "x".repeat(8000)]) {
      const response = await negotiate({ Authorization: `Bearer ${token}` });
      assert.equal(response.status, 401, token.slice(0, 20));
      assert.equal(response.headers.get("www-authenticate"), 'Bearer error="invalid_token"');
      assert.equal(await response.text(), "", `no internals in the body (${token.slice(0, 20)})`);
    }
  });
});
