// Stateful reconnect with the official client, through a TCP proxy that cuts the connection.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";
import { disconnected, signalR, sleep, startServer, until, withTimeout } from "./helpers.mjs";

/** A loopback TCP proxy to the server that can cut every socket, or refuse for a while. */
async function startProxy(targetPort) {
  const sockets = new Set();
  let refuseUntil = 0;
  const server = net.createServer((client) => {
    if (Date.now() < refuseUntil) {
      client.destroy();
      return;
    }
    const upstream = net.connect(targetPort, "127.0.0.1");
    for (const [a, b] of [[client, upstream], [upstream, client]]) {
      sockets.add(a);
      a.on("error", () => {});
      a.on("close", () => { sockets.delete(a); b.destroy(); });
      a.pipe(b);
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: server.address().port,
    cut() { for (const s of sockets) s.destroy(); },
    refuseFor(ms) { refuseUntil = Date.now() + ms; },
    close() { this.cut(); server.close(); },
  };
}

function statefulClient(proxy, protocol) {
  let builder = new signalR.HubConnectionBuilder()
    .withUrl(`http://127.0.0.1:${proxy.port}/hub`, { transport: signalR.HttpTransportType.WebSockets })
    .withStatefulReconnect()
    .withAutomaticReconnect([0, 500, 1000, 1000, 1000, 1000, 1000, 1000])
    .configureLogging(signalR.LogLevel.None);
  if (protocol === "messagepack") builder = builder.withHubProtocol(new MessagePackHubProtocol());
  return builder.build();
}

for (const protocol of ["json", "messagepack"]) {
  describe(`stateful reconnect (${protocol})`, () => {
    let server;
    let proxy;
    before(async () => {
      server = await startServer(["--stateful", "--disconnect-timeout-ms", "1500"]);
      proxy = await startProxy(server.port);
    });
    after(async () => {
      proxy.close();
      await server.stop();
    });

    it("loses and repeats nothing in either direction across several cuts", async (t) => {
      const connection = statefulClient(proxy, protocol);
      const numbers = [];
      const arrivals = [];
      connection.on("Number", (n) => { numbers.push(Number(n)); arrivals.push(Date.now()); });
      let reconnecting = 0;
      connection.onreconnecting(() => { reconnecting++; });
      await withTimeout(connection.start(), 5000, "start");
      const id = await connection.invoke("GetConnectionId");
      await connection.invoke("JoinGroup", "stateful");

      const total = 300;
      await connection.invoke("StartNumbers", total, 8);
      // The client sends too, fire-and-forget, straight through the cuts.
      const sent = 150;
      const sending = (async () => {
        for (let i = 1; i <= sent; i++) {
          await connection.send("Record", i);
          await sleep(12);
        }
      })();
      for (const at of [400, 900, 1500]) {
        await until(() => numbers.length * 8 >= at || numbers.length >= total, 10000, `cut at ${at}`);
        proxy.cut();
      }
      await withTimeout(sending, 15000, "client sends");
      await until(() => numbers.length >= total, 15000, "all numbers");
      await sleep(200);
      assert.deepEqual(numbers, Array.from({ length: total }, (_, i) => i + 1), "1..N, no gap, no duplicate");
      const gaps = arrivals.slice(1).map((at, i) => at - arrivals[i]).sort((a, b) => b - a);
      t.diagnostic(`3 cuts; longest pauses in delivery: ${gaps.slice(0, 3).join(", ")} ms (messages every 8 ms)`);

      let recorded = [];
      const deadline = Date.now() + 5000;
      while (recorded.length < sent && Date.now() < deadline) {
        recorded = (await connection.invoke("Recorded")).map(Number);
        if (recorded.length < sent) await sleep(50);
      }
      assert.deepEqual(recorded, Array.from({ length: sent }, (_, i) => i + 1), "the client's sends arrived exactly once");

      // Same logical connection: id, groups, and on_connected ran once.
      assert.equal(await connection.invoke("GetConnectionId"), id);
      assert.ok((await connection.invoke("GroupMembers", "stateful")).includes(id));
      assert.equal(Number(await connection.invoke("ConnectCount", id)), 1);
      assert.equal(reconnecting, 0, "a stateful reconnect is invisible to the app");
      await connection.stop();
    });

    it("ends the connection after the grace period, and the client reconnects as a new one", async () => {
      const connection = statefulClient(proxy, protocol);
      const reconnected = new Promise((resolve) => connection.onreconnected(resolve));
      await withTimeout(connection.start(), 5000, "start");
      const oldId = await connection.invoke("GetConnectionId");
      proxy.refuseFor(2500);
      proxy.cut();
      // Longer than the server's 1.5 s grace: the old connection ends on the server...
      let gone = false;
      const deadline = Date.now() + 6000;
      while (!gone && Date.now() < deadline) {
        await sleep(100);
        gone = (await disconnected(server)).some(([cid]) => cid === oldId);
      }
      assert.ok(gone, "on_disconnected ran for the old connection after the grace period");
      // ...and the client's automatic reconnect makes a brand-new one once the network is back.
      await withTimeout(reconnected, 10000, "automatic reconnect");
      const newId = await connection.invoke("GetConnectionId");
      assert.notEqual(newId, oldId);
      assert.equal(connection.state, signalR.HubConnectionState.Connected);
      await connection.stop();
    });
  });
}
