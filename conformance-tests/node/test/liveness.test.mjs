// Idle connections stay up: every transport × protocol pair left idle for more than three
// client-timeout intervals, with the official client, then used again. Once at short
// intervals, once at the defaults (15 s keep-alive, 30 s timeouts: about 95 s idle).
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { COMBINATIONS, client, disconnected, signalR, sleep, startServer, withTimeout } from "./helpers.mjs";

/** Starts every combination, leaves them idle for `idleMs`, then checks each one. */
async function idleEveryPair(server, idleMs, configure) {
  const connections = await Promise.all(COMBINATIONS.map(async (combination) => {
    const connection = client(server, { ...combination, configure });
    const events = [];
    connection.onclose((error) => events.push(`closed: ${error?.message ?? "no error"}`));
    connection.onreconnecting((error) => events.push(`reconnecting: ${error?.message}`));
    await withTimeout(connection.start(), 5000, `start ${JSON.stringify(combination)}`);
    return { combination, connection, events };
  }));
  await sleep(idleMs);
  for (const { combination, connection, events } of connections) {
    const label = JSON.stringify(combination);
    assert.deepEqual(events, [], `${label} dropped while idle`);
    assert.equal(connection.state, signalR.HubConnectionState.Connected, label);
    assert.equal(await withTimeout(connection.invoke("Add", 20, 22), 5000, `invoke ${label}`), 42, label);
  }
  assert.deepEqual(await disconnected(server), [], "the server ended no connection");
  await Promise.all(connections.map(({ connection }) => connection.stop()));
}

describe("idle connections", () => {
  it("survive three client-timeout intervals at short intervals on every pair", async () => {
    const server = await startServer(["--keep-alive-ms", "1000", "--client-timeout-ms", "2000"]);
    try {
      await idleEveryPair(server, 6500, (c) => {
        c.keepAliveIntervalInMilliseconds = 1000;
        c.serverTimeoutInMilliseconds = 2000;
      });
    } finally {
      await server.stop();
    }
  });

  it("survive 95 s idle at the default intervals on every pair", { timeout: 150000 }, async () => {
    const server = await startServer();
    try {
      await idleEveryPair(server, 95000);
    } finally {
      await server.stop();
    }
  });
});
