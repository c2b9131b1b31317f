// What a hub method sees of the HTTP request, and the reference's refusal shape, through the
// official client on every transport.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { signalR, startServer, withTimeout } from "./helpers.mjs";

describe("the connection's HTTP request", () => {
  let server;
  before(async () => { server = await startServer(); });
  after(async () => { await server.stop(); });

  for (const transport of ["WebSockets", "ServerSentEvents", "LongPolling"]) {
    it(`reaches the hub over ${transport}: query, headers, peer address`, async () => {
      const connection = new signalR.HubConnectionBuilder()
        .withUrl(`${server.url}?room=7`, {
          transport: signalR.HttpTransportType[transport],
          headers: { "x-app": "yes" },
        })
        .configureLogging(signalR.LogLevel.None)
        .build();
      await withTimeout(connection.start(), 5000, "start");
      const info = await connection.invoke("RequestInfo");
      // Mounted with axum's nest_service, the hub sees the path below its mount point.
      assert.deepEqual(info, { method: "GET", path: "/", room: "7", header: "yes", loopback: true });
      await connection.stop();
    });
  }
});

describe("refusals", () => {
  let server;
  before(async () => { server = await startServer(["--jwt-secret", "a-secret-of-at-least-32-bytes!!", "--require-auth"]); });
  after(async () => { await server.stop(); });

  it("are the reference's: the client reports the status text, not a body", async () => {
    const response = await fetch(`http://127.0.0.1:${server.port}/hub/negotiate?negotiateVersion=1`, {
      method: "POST",
      headers: { authorization: "Bearer not.a.token" },
    });
    assert.equal(response.status, 401);
    assert.equal(await response.text(), "");
    assert.equal(response.headers.get("www-authenticate"), 'Bearer error="invalid_token"');
    for (const accessToken of [undefined, "not.a.token"]) {
      const connection = new signalR.HubConnectionBuilder()
        .withUrl(server.url, accessToken ? { accessTokenFactory: () => accessToken } : {})
        .configureLogging(signalR.LogLevel.None)
        .build();
      await assert.rejects(withTimeout(connection.start(), 5000, "start"), (error) => {
        assert.match(error.message, /Unauthorized: Status code '401'/);
        return true;
      });
    }
  });
});

describe("one hub at two paths", () => {
  let server;
  before(async () => { server = await startServer(); });
  after(async () => { await server.stop(); });

  it("serves each path's transports and shares one registry", async () => {
    const other = `http://127.0.0.1:${server.port}/hub-nowebsockets`;
    const build = (url, transport) => new signalR.HubConnectionBuilder()
      .withUrl(url, { transport: signalR.HttpTransportType[transport] })
      .configureLogging(signalR.LogLevel.None)
      .build();
    // WebSockets is not offered at the second path.
    await assert.rejects(withTimeout(build(other, "WebSockets").start(), 5000, "start"));
    const negotiated = await (await fetch(`${other}/negotiate?negotiateVersion=1`, { method: "POST" })).json();
    assert.deepEqual(negotiated.availableTransports.map((t) => t.transport), ["ServerSentEvents", "LongPolling"]);

    const here = build(server.url, "WebSockets");
    const there = build(other, "LongPolling");
    const received = [];
    here.on("Hello", (from) => received.push(`here:${from}`));
    there.on("Hello", (from) => received.push(`there:${from}`));
    await withTimeout(Promise.all([here.start(), there.start()]), 5000, "start both");
    // A send from either path reaches clients of both: one hub, one registry.
    await there.invoke("SendToAll", "Hello", ["there"]);
    await here.invoke("SendToAll", "Hello", ["here"]);
    const deadline = Date.now() + 5000;
    while (received.length < 4 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(received.sort(), ["here:here", "here:there", "there:here", "there:there"]);
    await Promise.all([here.stop(), there.stop()]);
  });
});
