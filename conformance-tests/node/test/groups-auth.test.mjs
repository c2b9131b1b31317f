// Groups, users, authentication, authorization, filters and presence with the official client.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { client, jwt, startServer, started, sleep, until, withTimeout } from "./helpers.mjs";

const SECRET = "conformance-secret";
const QUIET_MS = 300;
const tokens = {
  alice1: jwt({ sub: "alice", name: "Alice", jti: "1" }, SECRET),
  alice2: jwt({ sub: "alice", name: "Alice", jti: "2" }, SECRET),
  bob: jwt({ sub: "bob", name: "Bob" }, SECRET),
  admin: jwt({ sub: "carol", role: "admin" }, SECRET),
};

const COMBINATIONS = [
  { transport: "WebSockets", protocol: "json" },
  { transport: "WebSockets", protocol: "messagepack" },
  { transport: "LongPolling", protocol: "json" },
];

for (const combination of COMBINATIONS) {
  describe(`groups, users and presence (${combination.transport}, ${combination.protocol})`, () => {
    let server;
    const open = [];
    const connect = async (token) => {
      const c = await started(server, { ...combination, accessToken: token }, ["m"]);
      c.id = await c.connection.invoke("GetConnectionId");
      open.push(c.connection);
      return c;
    };
    const reset = (...clients) => clients.forEach((c) => { c.received.length = 0; });
    const args = (c) => c.received.map((r) => r.args[0]);

    before(async () => { server = await startServer(["--jwt-secret", SECRET, "--require-auth"]); });
    after(async () => {
      await Promise.all(open.map((c) => c.stop().catch(() => {})));
      await server.stop();
    });

    it("reaches exactly the intended connections by group and by user, and tracks presence", async () => {
      const a1 = await connect(tokens.alice1);
      const a2 = await connect(tokens.alice2);
      const bob = await connect(tokens.bob);
      assert.deepEqual(await a1.connection.invoke("WhoAmI"), { userId: "alice", name: "Alice" });
      assert.deepEqual(await bob.connection.invoke("WhoAmI"), { userId: "bob", name: "Bob" });
      assert.deepEqual(await bob.connection.invoke("OnlineUsers"), ["alice", "bob"]);
      assert.deepEqual(await bob.connection.invoke("UserConnections", "alice"), [a1.id, a2.id].sort());

      await a1.connection.invoke("JoinGroup", "room");
      await bob.connection.invoke("JoinGroup", "room");
      await a2.connection.invoke("JoinGroup", "other");
      assert.deepEqual(await a2.connection.invoke("GroupMembers", "room"), [a1.id, bob.id].sort());
      assert.equal(await a2.connection.invoke("GroupSize", "room"), 2);

      await a2.connection.invoke("SendToGroup", "room", "m", ["group"]);
      await until(() => a1.received.length === 1 && bob.received.length === 1, 3000, "group send");
      await a1.connection.invoke("SendToOthersInGroup", "room", "m", ["others-in-group"]);
      await bob.connection.invoke("SendToGroupExcept", "room", [bob.id], "m", ["except"]);
      await a2.connection.invoke("SendToGroups", ["room", "other", "room"], "m", ["groups"]);
      await until(() => a1.received.length === 3 && bob.received.length === 3 && a2.received.length === 1, 3000, "group sends");
      await sleep(QUIET_MS);
      assert.deepEqual(args(a1), ["group", "except", "groups"]);
      assert.deepEqual(args(bob), ["group", "others-in-group", "groups"]);
      assert.deepEqual(args(a2), ["groups"], "each connection once, and only its groups");

      reset(a1, a2, bob);
      await bob.connection.invoke("SendToUser", "alice", "m", ["user"]);
      await until(() => a1.received.length === 1 && a2.received.length === 1, 3000, "user send");
      await a1.connection.invoke("SendToUsers", ["alice", "bob", "nobody"], "m", ["users"]);
      await until(() => a1.received.length === 2 && a2.received.length === 2 && bob.received.length === 1, 3000, "users send");
      await sleep(QUIET_MS);
      assert.deepEqual(args(a1), ["user", "users"]);
      assert.deepEqual(args(a2), ["user", "users"]);
      assert.deepEqual(args(bob), ["users"], "bob is not alice");

      reset(a1, a2, bob);
      await bob.connection.invoke("LeaveGroup", "room");
      await a2.connection.invoke("SendToGroup", "room", "m", ["after leave"]);
      await until(() => a1.received.length === 1, 3000, "send after leave");
      await sleep(QUIET_MS);
      assert.equal(bob.received.length, 0, "left the group");

      // A connection that goes away stops receiving and leaves its groups; presence follows.
      await a1.connection.stop();
      let members;
      const deadline = Date.now() + 3000;
      do {
        members = await a2.connection.invoke("GroupMembers", "room");
        if (members.length) await sleep(20);
      } while (members.length && Date.now() < deadline);
      assert.deepEqual(members, [], "a1 left 'room' when it disconnected");
      assert.deepEqual(await bob.connection.invoke("UserConnections", "alice"), [a2.id]);
      reset(a2, bob);
      await bob.connection.invoke("SendToUser", "alice", "m", ["only a2"]);
      await until(() => a2.received.length === 1, 3000, "user send after disconnect");
      assert.deepEqual(await bob.connection.invoke("OnlineUsers"), ["alice", "bob"]);
      await a2.connection.stop();
      const online = async () => bob.connection.invoke("OnlineUsers");
      const until2 = Date.now() + 3000;
      let users = await online();
      while (users.length !== 1 && Date.now() < until2) { await sleep(20); users = await online(); }
      assert.deepEqual(users, ["bob"]);
    });

    it("lets a filter reject a method before its body runs, and filters unknown methods too", async () => {
      const c = await connect(tokens.bob);
      await assert.rejects(c.connection.invoke("Blocked"), {
        message: "An unexpected error occurred invoking 'Blocked' on the server. HubException: Blocked by a filter.",
      });
      assert.equal(await c.connection.invoke("BlockedRuns"), 0, "the method body never ran");
      const before = await c.connection.invoke("UnknownCalls");
      await assert.rejects(c.connection.invoke("NoSuchMethod"), {
        message: "Failed to invoke 'NoSuchMethod' due to an error on the server. HubException: Method does not exist.",
      });
      assert.equal(await c.connection.invoke("UnknownCalls"), before + 1);
    });

    it("applies method policies", async () => {
      const bob = await connect(tokens.bob);
      await assert.rejects(bob.connection.invoke("AdminOnly"), {
        message: "Failed to invoke 'AdminOnly' because user is unauthorized",
      });
      const admin = await connect(tokens.admin);
      assert.equal(await admin.connection.invoke("AdminOnly"), "hello admin carol");
    });
  });
}

describe("authentication", () => {
  let server;
  before(async () => { server = await startServer(["--jwt-secret", SECRET, "--require-auth"]); });
  after(async () => { await server.stop(); });

  const negotiate = (headers = {}) =>
    fetch(`http://127.0.0.1:${server.port}/hub/negotiate?negotiateVersion=1`, { method: "POST", headers });

  it("refuses anonymous, expired and badly signed callers with 401", async () => {
    const expired = jwt({ sub: "alice", exp: Math.floor(Date.now() / 1000) - 60 }, SECRET);
    const forged = jwt({ sub: "alice" }, "another-secret");
    assert.equal((await negotiate()).status, 401);
    assert.equal((await negotiate({ Authorization: `Bearer ${expired}` })).status, 401);
    assert.equal((await negotiate({ Authorization: `Bearer ${forged}` })).status, 401);
    assert.equal((await negotiate({ Authorization: `Bearer ${tokens.alice1}` })).status, 200);
    for (const token of [undefined, expired, forged]) {
      const connection = client(server, { accessToken: token });
      await assert.rejects(withTimeout(connection.start(), 5000, "start"), /401|Unauthorized/);
    }
  });

  for (const transport of ["WebSockets", "ServerSentEvents", "LongPolling"]) {
    it(`accessTokenFactory authenticates over ${transport}`, async () => {
      const { connection } = await started(server, { transport, accessToken: tokens.bob });
      assert.equal(await connection.invoke("GetTransport"), transport);
      assert.deepEqual(await connection.invoke("WhoAmI"), { userId: "bob", name: "Bob" });
      await connection.stop();
    });
  }
});
