// Three server processes sharing one Redis act as one hub: every target, groups across
// processes, client results across processes, presence, and a Redis outage and recovery.
// The test runs its own redis-server on a free port, so it can kill and restart it.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { splitProxy } from "./proxy.mjs";
import { jwt, startServer, started, sleep, until, withTimeout } from "./helpers.mjs";

const SECRET = "backplane-secret";
const QUIET_MS = 400;

async function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** A throwaway redis-server (nothing on disk) that the test may kill and start again. */
async function startRedis(port) {
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  const exited = new Promise((resolve) => child.on("exit", resolve));
  let output = "";
  await withTimeout(new Promise((resolve, reject) => {
    child.stdout.on("data", (d) => {
      output += d;
      if (output.includes("Ready to accept connections")) resolve();
    });
    child.on("exit", (code) => reject(new Error(`redis-server exited (${code}): ${output}`)));
  }), 10000, "redis-server start");
  return {
    async kill() {
      child.kill("SIGKILL");
      await exited;
    },
  };
}

async function health(server) {
  const response = await fetch(`http://127.0.0.1:${server.port}/admin/health`);
  return response.json();
}

/** Waits until a server's backplane health reads `want`. */
async function healthBecomes(server, want, ms) {
  const deadline = Date.now() + ms;
  while ((await health(server)).backplane !== want) {
    if (Date.now() > deadline) throw new Error(`backplane health did not become ${want} within ${ms} ms`);
    await sleep(50);
  }
}

async function ask(server, connectionId, method, args) {
  const response = await fetch(`http://127.0.0.1:${server.port}/admin/ask`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ connectionId, method, args }),
  });
  return response.json();
}

describe("three processes on one Redis backplane", () => {
  let redis;
  let redisPort;
  const servers = [];
  const open = [];

  before(async () => {
    redisPort = await freePort();
    redis = await startRedis(redisPort);
    for (let i = 0; i < 3; i++) {
      servers.push(await startServer([
        "--jwt-secret", SECRET, "--require-auth", "--detailed-errors",
        "--redis", `redis://127.0.0.1:${redisPort}`,
        "--redis-prefix", "Conformance.Hubs.BackplaneHub",
        "--server-name", `server-${i}`,
        "--redis-health-ms", "100",
        "--redis-ack-timeout-ms", "2000",
        "--redis-presence-ttl-ms", "2000",
        "--token-key", "backplane-test-token-key",
      ]));
    }
  });
  after(async () => {
    await Promise.all(open.map((c) => c.stop().catch(() => {})));
    await Promise.all(servers.map((s) => s.stop()));
    await redis?.kill();
  });

  // Clients spread over the three processes, with both protocols and two transports.
  const connect = async (server, user, jti, options = {}) => {
    const token = jwt({ sub: user, name: user, jti }, SECRET);
    const c = await started(server, { transport: "WebSockets", protocol: "json", ...options, accessToken: token }, ["m"]);
    c.id = await c.connection.invoke("GetConnectionId");
    c.user = user;
    open.push(c.connection);
    return c;
  };
  let first; // a client on server 0 that stays connected throughout
  const reset = (clients) => clients.forEach((c) => { c.received.length = 0; });
  const got = (c) => c.received.map((r) => r.args[0]);

  /** Sends through `sender`, waits for the expected receivers, then checks nobody else got it
   *  and nobody got it twice. */
  async function expectDelivery(clients, send, label, expected) {
    reset(clients);
    await send();
    await until(() => expected.every((c) => c.received.length >= 1), 5000, `${label} to reach ${expected.map((c) => c.name).join(", ")}`);
    await sleep(QUIET_MS);
    for (const c of clients) {
      const want = expected.includes(c) ? [label] : [];
      assert.deepEqual(got(c), want, `${label}: ${c.name} (on ${c.serverName}) got ${JSON.stringify(got(c))}`);
    }
  }

  it("reaches exactly the intended connections with every target, across processes", async () => {
    const [s0, s1, s2] = servers;
    const a0 = await connect(s0, "alice", "a0");
    first = a0;
    const a1 = await connect(s1, "alice", "a1", { protocol: "messagepack" });
    const b1 = await connect(s1, "bob", "b1");
    const c2 = await connect(s2, "carol", "c2", { transport: "LongPolling" });
    const d2 = await connect(s2, "dave", "d2", { protocol: "messagepack" });
    const all = [a0, a1, b1, c2, d2];
    Object.assign(a0, { name: "a0", serverName: "s0" });
    Object.assign(a1, { name: "a1", serverName: "s1" });
    Object.assign(b1, { name: "b1", serverName: "s1" });
    Object.assign(c2, { name: "c2", serverName: "s2" });
    Object.assign(d2, { name: "d2", serverName: "s2" });

    await expectDelivery(all, () => a0.connection.invoke("SendToAll", "m", ["all"]), "all", all);
    await expectDelivery(all, () => b1.connection.invoke("SendToOthers", "m", ["others"]), "others", [a0, a1, c2, d2]);
    await expectDelivery(all, () => c2.connection.invoke("SendToClient", a1.id, "m", ["client"]), "client", [a1]);
    await expectDelivery(all, () => a0.connection.invoke("SendToClients", [a0.id, b1.id, d2.id, b1.id], "m", ["clients"]), "clients", [a0, b1, d2]);
    await expectDelivery(all, () => d2.connection.invoke("SendToUser", "alice", "m", ["user"]), "user", [a0, a1]);
    await expectDelivery(all, () => a1.connection.invoke("SendToUsers", ["bob", "carol", "nobody"], "m", ["users"]), "users", [b1, c2]);

    // Groups: joined locally on each process, and one added from another process.
    await a0.connection.invoke("JoinGroup", "room");
    await c2.connection.invoke("JoinGroup", "room");
    await b1.connection.invoke("AddToGroup", d2.id, "room"); // s1 adds a connection of s2
    await expectDelivery(all, () => a1.connection.invoke("SendToGroup", "room", "m", ["group"]), "group", [a0, c2, d2]);
    await expectDelivery(all, () => a0.connection.invoke("SendToOthersInGroup", "room", "m", ["others-in-group"]), "others-in-group", [c2, d2]);
    await expectDelivery(all, () => b1.connection.invoke("SendToGroupExcept", "room", [c2.id], "m", ["group-except"]), "group-except", [a0, d2]);
    await b1.connection.invoke("JoinGroup", "side");
    await expectDelivery(all, () => a1.connection.invoke("SendToGroups", ["side", "nobody-here"], "m", ["groups"]), "groups", [b1]);

    await a0.connection.invoke("RemoveFromGroup", d2.id, "room"); // s0 removes a connection of s2
    await c2.connection.invoke("LeaveGroup", "room");
    await expectDelivery(all, () => b1.connection.invoke("SendToGroup", "room", "m", ["after-leave"]), "after-leave", [a0]);

    // Presence agrees on every process.
    const expectedUsers = ["alice", "bob", "carol", "dave"];
    for (const c of [a0, b1, d2]) {
      let users;
      const deadline = Date.now() + 5000;
      do {
        users = await c.connection.invoke("OnlineUsers");
        if (users.join() === expectedUsers.join()) break;
        await sleep(50);
      } while (Date.now() < deadline);
      assert.deepEqual(users, expectedUsers, `online users seen from ${c.serverName}`);
      assert.deepEqual(await c.connection.invoke("UserConnections", "alice"), [a0.id, a1.id].sort());
      assert.deepEqual(await c.connection.invoke("GroupMembers", "room"), [a0.id]);
      assert.deepEqual(await c.connection.invoke("GroupMembers", "side"), [b1.id]);
    }

    // A connection that leaves disappears from every process's view.
    await d2.connection.stop();
    const deadline = Date.now() + 5000;
    let users;
    do {
      users = await a0.connection.invoke("OnlineUsers");
      if (!users.includes("dave")) break;
      await sleep(50);
    } while (Date.now() < deadline);
    assert.deepEqual(users, ["alice", "bob", "carol"]);
  });

  it("asks a client on another process for a result and gets its answer or its error", async () => {
    const [s0, s1, s2] = servers;
    const answerer = await connect(s2, "erin", "e2", { protocol: "messagepack" });
    answerer.connection.on("Add", (x, y) => x + y);
    answerer.connection.on("Boom", () => { throw new Error("no thanks"); });
    const asker = await connect(s1, "frank", "f1");

    assert.deepEqual(await ask(s0, answerer.id, "Add", [2, 3]), { result: 5 });
    assert.equal(await asker.connection.invoke("AskClient", answerer.id, "Add", [20, 22]), 42);
    const failed = await ask(s0, answerer.id, "Boom", []);
    assert.equal(failed.kind, "client");
    assert.match(failed.error, /no thanks/);
    const missing = await ask(s0, "no-such-connection", "Add", [1, 1]);
    assert.equal(missing.kind, "closed");
    assert.match(missing.error, /does not exist/);
  });

  it("opens a connection negotiated on another process (portable tokens, no session affinity)", async () => {
    const [s0, s1] = servers;
    const proxy = await splitProxy(s0, s1);
    try {
      const peer = await connect(s0, "gina", "g0");
      for (const transport of ["WebSockets", "ServerSentEvents", "LongPolling"]) {
        const c = await connect(proxy, "hank", `h-${transport}`, { transport });
        // The id negotiate (on s0) announced is the one the hub (on s1) runs.
        assert.equal(c.id, c.connection.connectionId, transport);
        assert.equal(await c.connection.invoke("GetTransport"), transport);
        await peer.connection.invoke("SendToClient", c.id, "m", [`hello ${transport}`]);
        await until(() => c.received.length === 1, 3000, `a message to the ${transport} client`);
        assert.deepEqual(got(c), [`hello ${transport}`]);
        await c.connection.stop();
      }
    } finally {
      await proxy.close();
    }

    // Without the shared key, the same split fails: the token is unknown where it lands.
    const plain = await startServer(["--jwt-secret", SECRET, "--require-auth"]);
    const broken = await splitProxy(s0, plain);
    try {
      await assert.rejects(connect(broken, "ivan", "i0"));
    } finally {
      await broken.close();
      await plain.stop();
    }
  });

  it("keeps local delivery through a Redis outage, reports it, and recovers by itself", async () => {
    const [s0, s1] = servers;
    const x0 = await connect(s0, "xavier", "x0");
    const y0 = await connect(s0, "yolanda", "y0");
    const z1 = await connect(s1, "zoe", "z1");
    const everyone = [x0, y0, z1];
    for (const server of servers) assert.equal((await health(server)).backplane, true);

    await redis.kill();
    for (const server of servers) await healthBecomes(server, false, 5000);

    // Local recipients still get it; the sender learns that other processes did not.
    reset(everyone);
    const startedAt = Date.now();
    await assert.rejects(x0.connection.invoke("SendToAll", "m", ["during-outage"]));
    assert.ok(Date.now() - startedAt < 2000, "a send during the outage fails fast instead of hanging");
    await until(() => x0.received.length === 1 && y0.received.length === 1, 3000, "local delivery during the outage");
    await sleep(QUIET_MS);
    assert.deepEqual(got(z1), [], "the other process cannot be reached");
    assert.ok((await health(s0)).publishFailures >= 1, "the failed publish is counted");
    // Calls that stay local keep working.
    assert.equal(await y0.connection.invoke("Add", 1, 2), 3);

    redis = await startRedis(redisPort);
    for (const server of servers) await healthBecomes(server, true, 10000);
    reset(everyone);
    await z1.connection.invoke("SendToAll", "m", ["after-recovery"]);
    await until(() => everyone.every((c) => c.received.length === 1), 5000, "cross-process delivery after recovery");
    await sleep(QUIET_MS);
    for (const c of everyone) assert.deepEqual(got(c), ["after-recovery"]);
    // Presence was rewritten into the new Redis.
    const deadline = Date.now() + 5000;
    let users;
    do {
      users = await z1.connection.invoke("OnlineUsers");
      if (users.includes("xavier") && users.includes("zoe")) break;
      await sleep(50);
    } while (Date.now() < deadline);
    assert.ok(users.includes("xavier") && users.includes("yolanda") && users.includes("zoe"), JSON.stringify(users));
  });

  it("forgets a process that dies without saying goodbye (presence TTL)", async () => {
    const [, , s2] = servers;
    const onlineFromFirst = () => first.connection.invoke("OnlineUsers");
    const before = await onlineFromFirst();
    assert.ok(before.includes("carol") && before.includes("erin"), JSON.stringify(before));
    await s2.stop(); // SIGKILL: no cleanup
    const deadline = Date.now() + 10000;
    let users;
    do {
      users = await onlineFromFirst();
      if (!users.includes("carol") && !users.includes("erin")) break;
      await sleep(100);
    } while (Date.now() < deadline);
    assert.ok(!users.includes("carol") && !users.includes("erin"), `still listed: ${JSON.stringify(users)}`);
    assert.ok(users.includes("alice") && users.includes("bob"), JSON.stringify(users));
  });
});
