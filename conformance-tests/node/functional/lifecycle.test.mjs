// Connection life, authentication and the HTTP request as a hub method sees it: bearer tokens
// from the token endpoint, the anonymous 401, the client's server timeout, cookies and headers,
// automatic reconnects (after a redirect, without negotiate), the connection id, transport
// choice on a path without WebSockets, and long polling's DELETE.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { signalR, MessagePackHubProtocol, startServer, hub, nextClose, withTimeout, deferred, getUserAgentHeader, TRANSPORTS } from "./support.mjs";

const GREETING = "你好，世界！";

describe("lifecycle, authentication and the request", () => {
  let server;
  before(async () => { server = await startServer(); });
  after(async () => { await server.stop(); });

  const token = async () => {
    const response = await fetch(`${server.base}/generateJwtToken`);
    assert.equal(response.status, 200);
    return response.text();
  };

  /** Starts, runs `body`, stops, and checks the close was clean. */
  const session = async (connection, body) => {
    const closed = nextClose(connection);
    await withTimeout(connection.start(), 5000, "start");
    try {
      await body(connection);
    } finally {
      await withTimeout(connection.stop(), 5000, "stop");
    }
    assert.equal(await closed, undefined, "a clean close");
  };

  /** Makes the client believe the server went quiet, which starts its automatic reconnect. */
  const forceReconnect = async (connection) => {
    const reconnecting = deferred();
    const reconnected = deferred();
    connection.onreconnecting(() => reconnecting.resolve());
    connection.onreconnected((id) => reconnected.resolve(id));
    connection.serverTimeout();
    await withTimeout(reconnecting.promise, 5000, "reconnecting");
    return withTimeout(reconnected.promise, 5000, "reconnected");
  };

  for (const transport of TRANSPORTS) {
    describe(`over ${transport}`, () => {
      it("a token from the token endpoint opens the authorized hub", async () => {
        const jwt = await token();
        await session(hub(`${server.base}/authorizedhub`, { transport, options: { accessTokenFactory: () => jwt } }), async (c) => {
          assert.equal(await c.invoke("Echo", GREETING), GREETING);
          assert.equal(await c.invoke("GetUserNameIdentifier"), "testuser");
          assert.equal(await c.invoke("GetUserClaim", "iss"), "SignalRTestServer");
          assert.equal(await c.invoke("GetUserClaim", "no-such-claim"), "");
        });
      });

      it("an async token factory is awaited for every request", async () => {
        let asked = 0;
        const factory = async () => { asked += 1; return token(); };
        await session(hub(`${server.base}/authorizedhub`, { transport, options: { accessTokenFactory: factory } }), async (c) => {
          assert.equal(await c.invoke("Echo", GREETING), GREETING);
        });
        assert.ok(asked >= 1, "the factory was called");
      });

      it("an anonymous client is refused with the bare 401", async () => {
        const connection = hub(`${server.base}/authorizedhub`, { transport });
        await assert.rejects(connection.start(), {
          message: "Failed to complete negotiation with the server: Error: Unauthorized: Status code '401'",
        });
      });

      it("a forged token is refused", async () => {
        const jwt = await token();
        const forged = `${jwt.slice(0, jwt.lastIndexOf(".") + 1)}AAAA`;
        const connection = hub(`${server.base}/authorizedhub`, { transport, options: { accessTokenFactory: () => forged } });
        await assert.rejects(connection.start(), {
          message: "Failed to complete negotiation with the server: Error: Unauthorized: Status code '401'",
        });
      });

      if (transport !== "LongPolling") {
        it("a server quieter than the client's timeout closes the connection with its error", async () => {
          const connection = hub(`${server.base}/testhub`, { transport });
          const closed = nextClose(connection);
          await withTimeout(connection.start(), 5000, "start");
          connection.serverTimeoutInMilliseconds = 1;
          await connection.invoke("Echo", "");
          const error = await withTimeout(closed, 5000, "the client's timeout");
          assert.equal(error?.message, "Server timeout elapsed without receiving a message from the server.");
        });
      }

      it("cookies set by negotiate come back; an expired one does not", async () => {
        await session(hub(`${server.base}/testhub`, { transport }), async (c) => {
          assert.equal(await c.invoke("GetCookie", "testCookie"), "testValue");
          assert.equal(await c.invoke("GetCookie", "testCookie2"), "testValue2");
          assert.equal(await c.invoke("GetCookie", "expiredCookie"), null);
        });
      });

      it("the client reconnects as a new connection that works", async () => {
        await session(hub(`${server.base}/testhub`, { transport, reconnect: true }), async (c) => {
          const first = c.connectionId;
          const renewed = await forceReconnect(c);
          assert.notEqual(renewed, first);
          assert.equal(await c.invoke("Echo", "test"), "test");
        });
      });

      it("the hub sees the client's user agent", async () => {
        const [name, value] = getUserAgentHeader();
        await session(hub(`${server.base}/testhub`, { transport }), async (c) => {
          assert.equal(await c.invoke("GetHeader", name), value);
        });
      });

      it("the request a connection was made with is a GET without a Content-Type", async () => {
        // The hub sees the transport request (upgrade, event stream or first poll), not negotiate's POST.
        await session(hub(`${server.base}/testhub`, { transport }), async (c) => {
          assert.equal(await c.invoke("GetContentTypeHeader"), null);
        });
      });

      it("headers the application sets replace the library's and reach the hub", async () => {
        const [name] = getUserAgentHeader();
        const headers = { [name]: "Custom Agent", "X-HEADER": "VALUE" };
        await session(hub(`${server.base}/testhub`, { transport, options: { headers } }), async (c) => {
          assert.equal(await c.invoke("GetHeader", "X-HEADER"), "VALUE");
          assert.equal(await c.invoke("GetHeader", name), "Custom Agent");
        });
      });
    });
  }

  it("after a negotiate redirect, the reconnect negotiates again through it", async () => {
    const url = `${server.base}/redirect?numRedirects=0&baseUrl=${server.base}`;
    await session(hub(url, { reconnect: true }), async (c) => {
      const redirectsBefore = await c.invoke("GetNumRedirects");
      assert.ok(redirectsBefore >= 1);
      assert.equal(c.connectionId, await c.invoke("GetCallerConnectionId"));
      const id = await forceReconnect(c);
      assert.notEqual(id, undefined);
      assert.equal(id, await c.invoke("GetCallerConnectionId"), "the client's id is the server's");
      assert.ok(await c.invoke("GetNumRedirects") > redirectsBefore);
    });
  });

  it("a client that skips negotiate reconnects without a connection id", async () => {
    await session(hub(`${server.base}/testhub`, { transport: "WebSockets", skipNegotiation: true, reconnect: true }), async (c) => {
      assert.equal(c.connectionId, null);
      assert.equal(await forceReconnect(c), undefined);
      assert.equal(await c.invoke("Echo", "test"), "test");
    });
  });

  it("the connection id is null before start and after stop, the server's in between", async () => {
    const connection = hub(`${server.base}/testhub`);
    assert.equal(connection.connectionId, null);
    await session(connection, async (c) => {
      assert.notEqual(c.connectionId, null);
      assert.equal(c.connectionId, await c.invoke("GetCallerConnectionId"));
    });
    assert.equal(connection.connectionId, null);
  });

  it("without WebSockets on the path, JSON clients get Server-Sent Events", async () => {
    await session(hub(`${server.base}/testhub-nowebsockets`), async (c) => {
      assert.equal(await c.invoke("GetActiveTransportName"), "ServerSentEvents");
    });
  });

  it("without WebSockets on the path, MessagePack clients get long polling", async () => {
    await session(hub(`${server.base}/testhub-nowebsockets`, { protocol: "messagepack" }), async (c) => {
      assert.equal(await c.invoke("GetActiveTransportName"), "LongPolling");
    });
  });

  it("WebSockets are refused on the path that does not serve them", async () => {
    const connection = hub(`${server.base}/testhub-nowebsockets`, { transport: "WebSockets" });
    // Negotiate offers only the other two, which this client ruled out.
    await assert.rejects(connection.start(), {
      message: "Unable to connect to the server with any of the available transports. ServerSentEvents failed: Error: 'ServerSentEvents' is disabled by the client. LongPolling failed: Error: 'LongPolling' is disabled by the client.",
    });
  });

  it("both paths of the one hub share a registry", async () => {
    const viaWs = hub(`${server.base}/testhub`, { transport: "WebSockets" });
    const viaLp = hub(`${server.base}/testhub-nowebsockets`, { transport: "LongPolling" });
    await withTimeout(viaWs.start(), 5000, "start");
    await withTimeout(viaLp.start(), 5000, "start");
    try {
      // A client result asked for through the /testhub context reaches the long-polling client.
      viaLp.on("Result", () => 7);
      const response = await fetch(`${server.base}/clientresult/${viaLp.connectionId}`);
      assert.equal(await response.text(), "7");
    } finally {
      await viaWs.stop();
      await viaLp.stop();
    }
  });

  it("stopping a long-polling client ends its pending poll", async () => {
    let poll = null;
    const base = new signalR.DefaultHttpClient(signalR.NullLogger.instance);
    class WatchingClient extends signalR.HttpClient {
      send(request) {
        const sent = base.send(request);
        if (request.method === "GET") poll = sent;
        return sent;
      }
    }
    const connection = hub(`${server.base}/testhub`, { transport: "LongPolling", options: { httpClient: new WatchingClient() } });
    await withTimeout(connection.start(), 5000, "start");
    assert.notEqual(poll, null, "a poll was sent");
    const stopping = connection.stop();
    await withTimeout(poll.catch((e) => { if (!(e instanceof signalR.AbortError)) throw e; }), 5000, "the poll to end");
    await withTimeout(stopping, 5000, "stop");
  });

  it("a MessagePack client gets the same texts from the authorized hub", async () => {
    const jwt = await token();
    const connection = new signalR.HubConnectionBuilder()
      .withUrl(`${server.base}/authorizedhub`, { accessTokenFactory: () => jwt })
      .withHubProtocol(new MessagePackHubProtocol())
      .configureLogging(signalR.LogLevel.None)
      .build();
    await session(connection, async (c) => {
      assert.equal(await c.invoke("GetUserNameIdentifier"), "testuser");
    });
  });
});
