// Keep-alive, timeouts, size limits and graceful shutdown, each against its own server.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { signalR, startServer, started, sleep, withTimeout } from "./helpers.mjs";

for (const protocol of ["json", "messagepack"]) {
  describe(`connection lifecycle (${protocol})`, () => {
    it("closes a client that stops pinging", async () => {
      const server = await startServer(["--client-timeout-ms", "1500", "--keep-alive-ms", "500"]);
      try {
        const { connection, closed } = await started(server, {
          protocol,
          configure: (c) => { c.keepAliveIntervalInMilliseconds = 60000; },
        });
        const began = Date.now();
        const error = await withTimeout(closed, 6000, "client timeout");
        assert.ok(error instanceof Error, "closed with an error");
        assert.match(error.message, /Connection closed with an error\./);
        assert.ok(Date.now() - began >= 1000, `closed too early (${Date.now() - began} ms)`);
        assert.equal(connection.state, signalR.HubConnectionState.Disconnected);
      } finally {
        await server.stop();
      }
    });

    it("keeps an idle client alive with server pings", async () => {
      const server = await startServer(["--keep-alive-ms", "300"]);
      try {
        const { connection } = await started(server, {
          protocol,
          configure: (c) => { c.serverTimeoutInMilliseconds = 1500; c.keepAliveIntervalInMilliseconds = 500; },
        });
        await sleep(3000);
        assert.equal(connection.state, signalR.HubConnectionState.Connected);
        assert.equal(await connection.invoke("Add", 1, 1), 2);
        await connection.stop();
      } finally {
        await server.stop();
      }
    });

    it("closes the connection on a message over the size limit", async () => {
      const server = await startServer(["--max-message-size", "4096"]);
      try {
        const { connection, closed } = await started(server, { protocol });
        assert.equal(await connection.invoke("Echo", "x".repeat(1000)), "x".repeat(1000));
        connection.invoke("Echo", "y".repeat(10000)).catch(() => {});
        const error = await withTimeout(closed, 3000, "close after oversized message");
        assert.ok(error instanceof Error);
        assert.match(error.message, /Connection closed with an error\./);
      } finally {
        await server.stop();
      }
    });

    it("shows error details only when enabled", async () => {
      const server = await startServer(["--detailed-errors"]);
      try {
        const { connection } = await started(server, { protocol });
        await assert.rejects(connection.invoke("Fail"), (e) =>
          e.message.startsWith("An unexpected error occurred invoking 'Fail' on the server. ParseIntError: "));
        await assert.rejects(connection.invoke("Add", 1), {
          message: "Failed to invoke 'Add' due to an error on the server. InvalidDataException: Invocation provides 1 argument(s) but target expects 2.",
        });
        await connection.stop();
      } finally {
        await server.stop();
      }
    });
  });
}

describe("graceful shutdown", () => {
  for (const how of ["admin endpoint", "SIGTERM"]) {
    it(`tells clients to reconnect (${how}) and exits cleanly`, async () => {
      const server = await startServer();
      try {
        const reconnecting = await started(server, { protocol: "json", reconnect: true });
        let reconnectingError;
        const sawReconnecting = new Promise((resolve) => reconnecting.connection.onreconnecting((e) => {
          reconnectingError = e;
          resolve();
        }));
        const plain = await started(server, { protocol: "messagepack" });

        if (how === "SIGTERM") {
          process.kill(server.pid, "SIGTERM");
        } else {
          const response = await fetch(`http://127.0.0.1:${server.port}/admin/shutdown`, { method: "POST" });
          assert.equal(response.status, 200);
        }

        // allowReconnect: true makes the reconnecting client try again...
        await withTimeout(sawReconnecting, 5000, "onreconnecting");
        assert.equal(reconnectingError ?? null, null);
        // ...while a client without automatic reconnect closes cleanly.
        assert.equal(await withTimeout(plain.closed, 5000, "onclose"), null);
        const exit = await withTimeout(server.exited, 10000, "server exit");
        assert.deepEqual(exit, { code: 0, signal: null }, server.stderr());
        await reconnecting.connection.stop();
      } finally {
        await server.stop();
      }
    });
  }
});
