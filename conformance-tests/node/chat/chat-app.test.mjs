// End to end: the real chat-app binary with the official client, REST and the hub.
// Run by `cargo test -p chat-app --test e2e` with CHAT_APP_BIN and CHAT_DATABASE_URL set.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { DATABASE_URL, api, connect, run, signalR, sleep, startApp, until } from "./helpers.mjs";

const RFC3339_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;

describe(`chat-app on ${DATABASE_URL === "default" ? "its default SQLite file" : DATABASE_URL.split(":")[0]}`, () => {
  let app;
  const open = [];
  let alice, bob, general, secret;
  before(async () => { app = await startApp(); });
  after(async () => {
    await Promise.all(open.map((c) => c.stop().catch(() => {})));
    await app.stop();
  });

  it("registers and logs in, and refuses bad credentials", async () => {
    const names = { alice: `alice_${run}`, bob: `bob_${run}` };
    const a = await api(app, "POST", "/api/v1/auth/register", { body: { userName: names.alice, password: "correct horse" } });
    assert.equal(a.status, 201);
    assert.equal(a.body.userName, names.alice);
    const b = await api(app, "POST", "/api/v1/auth/register", { body: { userName: names.bob, password: "battery staple" } });
    assert.equal(b.status, 201);
    const login = await api(app, "POST", "/api/v1/auth/login", { body: { userName: names.alice, password: "correct horse" } });
    assert.equal(login.status, 200);
    for (const key of ["accessToken", "userId", "userName", "expiresAt"]) assert.ok(login.body[key] !== undefined, key);
    alice = { ...login.body, id: login.body.userId, token: login.body.accessToken };
    bob = { ...b.body, id: b.body.userId, token: b.body.accessToken };

    const cases = [
      ["POST", "/api/v1/auth/register", { userName: names.alice, password: "another one" }, 409],
      ["POST", "/api/v1/auth/register", { userName: "x", password: "long enough" }, 400],
      ["POST", "/api/v1/auth/register", { userName: `c_${run}`, password: "short" }, 400],
      ["POST", "/api/v1/auth/register", { userName: `c_${run}` }, 422],
      ["POST", "/api/v1/auth/register", { userName: 7, password: "long enough" }, 422],
      ["POST", "/api/v1/auth/login", { userName: names.alice, password: "wrong password" }, 401],
      ["POST", "/api/v1/auth/login", { userName: "nobody_at_all", password: "whatever1" }, 401],
    ];
    for (const [method, path, body, status] of cases) {
      const response = await api(app, method, path, { body });
      assert.equal(response.status, status, `${path} ${JSON.stringify(body)}`);
      assert.equal(typeof response.body.error, "string");
    }
    const broken = await api(app, "POST", "/api/v1/auth/login", { raw: "{not json" });
    assert.equal(broken.status, 400);
  });

  it("creates rooms and lists the visible ones", async () => {
    const g = await api(app, "POST", "/api/v1/rooms", { token: alice.token, body: { name: `general ${run}` } });
    assert.equal(g.status, 201);
    general = g.body;
    assert.equal(general.isPrivate, false);
    const s = await api(app, "POST", "/api/v1/rooms", { token: alice.token, body: { name: `secret ${run}`, isPrivate: true } });
    assert.equal(s.status, 201);
    secret = s.body;
    const bobs = await api(app, "GET", "/api/v1/rooms", { token: bob.token });
    assert.ok(bobs.body.some((r) => r.id === general.id));
    assert.ok(!bobs.body.some((r) => r.id === secret.id), "private rooms are hidden from non-members");
    for (const [body, status] of [[{}, 422], [{ name: "" }, 400], [{ name: "x", isPrivate: "yes" }, 422]]) {
      assert.equal((await api(app, "POST", "/api/v1/rooms", { token: alice.token, body })).status, status, JSON.stringify(body));
    }
    assert.equal((await api(app, "GET", "/api/v1/rooms", { token: "not-a-token" })).status, 401);
    assert.equal((await api(app, "GET", "/api/v1/rooms")).status, 401);
  });

  it("chats over WebSockets and long polling, with the right payloads", async () => {
    const a = await connect(app, alice.token, "WebSockets");
    const b = await connect(app, bob.token, "LongPolling");
    open.push(a.connection, b.connection);
    await a.connection.invoke("JoinRoom", general.id);
    await b.connection.invoke("JoinRoom", general.id);
    await until(() => a.events.some((e) => e.name === "UserJoined"), "UserJoined");
    assert.deepEqual(a.events.find((e) => e.name === "UserJoined").payload, { roomId: general.id, userId: bob.id, userName: bob.userName });

    const sent = await a.connection.invoke("SendMessage", general.id, "  hello bob  ");
    assert.equal(sent.content, "hello bob");
    assert.match(sent.createdAt, RFC3339_UTC);
    for (const side of [a, b]) {
      await until(() => side.events.some((e) => e.name === "ReceiveMessage"), "ReceiveMessage");
      assert.deepEqual(side.events.find((e) => e.name === "ReceiveMessage").payload, sent);
    }
    assert.deepEqual(Object.keys(sent).sort(), ["content", "createdAt", "editedAt", "id", "roomId", "userId", "userName"]);
    assert.equal(sent.userId, alice.id);

    // Presence: both members are online in the room.
    assert.deepEqual(await a.connection.invoke("OnlineMembers", general.id), [String(alice.id), String(bob.id)].sort());

    // Typing reaches the others only.
    await b.connection.invoke("Typing", general.id);
    await until(() => a.events.some((e) => e.name === "UserTyping"), "UserTyping");
    assert.ok(!b.events.some((e) => e.name === "UserTyping"));

    // Leaving tells the others, and messages stop.
    await b.connection.invoke("LeaveRoom", general.id);
    await until(() => a.events.some((e) => e.name === "UserLeft"), "UserLeft");
    assert.deepEqual(a.events.find((e) => e.name === "UserLeft").payload, { roomId: general.id, userId: bob.id, userName: bob.userName });
    const received = b.events.filter((e) => e.name === "ReceiveMessage").length;
    await a.connection.invoke("SendMessage", general.id, "bob is gone");
    await sleep(200);
    assert.equal(b.events.filter((e) => e.name === "ReceiveMessage").length, received);
    await b.connection.invoke("JoinRoom", general.id);
  });

  it("reaches a user's second connection without JoinRoom", async () => {
    const second = await connect(app, alice.token);
    open.push(second.connection);
    // Calls are handled only after the connect hook (which joins the user's rooms) ran: one
    // round trip means the second device is in its rooms.
    await second.connection.invoke("OnlineMembers", general.id);
    const bobSide = await connect(app, bob.token);
    open.push(bobSide.connection);
    await bobSide.connection.invoke("SendMessage", general.id, "to every device");
    await until(() => second.events.some((e) => e.name === "ReceiveMessage" && e.payload.content === "to every device"), "second device");
  });

  it("refuses private rooms to non-members until a member adds them", async () => {
    const b = await connect(app, bob.token);
    open.push(b.connection);
    // To a non-member, a private room looks exactly like one that does not exist.
    await assert.rejects(b.connection.invoke("JoinRoom", secret.id), /No such room/);
    await assert.rejects(b.connection.invoke("SendMessage", secret.id, "let me in"), /Join the room first/);
    assert.equal((await api(app, "GET", `/api/v1/rooms/${secret.id}/messages`, { token: bob.token })).status, 404);
    // Only the owner adds participants; unknown users and rooms are 404.
    assert.equal((await api(app, "POST", `/api/v1/rooms/${secret.id}/participants`, { token: bob.token, body: { userId: bob.id } })).status, 404);
    assert.equal((await api(app, "POST", `/api/v1/rooms/${secret.id}/participants`, { token: alice.token, body: { userId: 999999999 } })).status, 404);
    assert.equal((await api(app, "POST", `/api/v1/rooms/999999999/participants`, { token: alice.token, body: { userId: bob.id } })).status, 404);
    assert.equal((await api(app, "POST", `/api/v1/rooms/${secret.id}/participants`, { token: alice.token, body: { userId: "bob" } })).status, 422);
    assert.equal((await api(app, "POST", `/api/v1/rooms/${secret.id}/participants`, { token: alice.token, body: { userId: bob.id } })).status, 201);
    // Bob's open connection is in the room at once.
    const a = await connect(app, alice.token);
    open.push(a.connection);
    await a.connection.invoke("SendMessage", secret.id, "welcome bob");
    await until(() => b.events.some((e) => e.name === "ReceiveMessage" && e.payload.content === "welcome bob"), "message after being added");
  });

  it("stores nothing for empty, oversized or non-member messages", async () => {
    const a = await connect(app, alice.token);
    open.push(a.connection);
    const before = (await api(app, "GET", `/api/v1/rooms/${general.id}/messages?limit=200`, { token: alice.token })).body.length;
    await assert.rejects(a.connection.invoke("SendMessage", general.id, "   "), /Empty/);
    await assert.rejects(a.connection.invoke("SendMessage", general.id, "x".repeat(201)), /limited to 200/);
    await assert.rejects(a.connection.invoke("SendMessage", 999999999, "nowhere"), /Join the room first/);
    await assert.rejects(a.connection.invoke("SendMessage", general.id), /Failed to invoke/);
    const afterward = (await api(app, "GET", `/api/v1/rooms/${general.id}/messages?limit=200`, { token: alice.token })).body.length;
    assert.equal(afterward, before);
  });

  it("pages through history newest first", async () => {
    const a = await connect(app, alice.token);
    open.push(a.connection);
    const sent = [];
    for (let i = 1; i <= 5; i++) sent.push(await a.connection.invoke("SendMessage", general.id, `page ${i}`));
    const first = await api(app, "GET", `/api/v1/rooms/${general.id}/messages?limit=2`, { token: bob.token });
    assert.equal(first.status, 200);
    assert.deepEqual(first.body.map((m) => m.content), ["page 5", "page 4"]);
    const second = await api(app, "GET", `/api/v1/rooms/${general.id}/messages?limit=2&before=${first.body[1].id}`, { token: bob.token });
    assert.deepEqual(second.body.map((m) => m.content), ["page 3", "page 2"]);
    for (const [query, status] of [["limit=abc", 400], ["limit=0", 400], ["limit=500", 400], ["before=x", 400]]) {
      assert.equal((await api(app, "GET", `/api/v1/rooms/${general.id}/messages?${query}`, { token: bob.token })).status, status, query);
    }
    assert.equal((await api(app, "GET", `/api/v1/rooms/999999999/messages`, { token: bob.token })).status, 404);
    assert.equal((await api(app, "GET", `/api/v1/rooms/abc/messages`, { token: bob.token })).status, 400);
  });

  it("reports health and keeps history across a restart", async () => {
    const health = await api(app, "GET", "/health");
    assert.equal(health.status, 200);
    assert.equal(health.body.database.status, "ok");
    assert.equal((await api(app, "GET", "/health/live")).status, 200);
    assert.equal((await api(app, "GET", "/health/ready")).status, 200);
    assert.equal((await api(app, "GET", "/no/such/endpoint")).status, 404);

    await Promise.all(open.splice(0).map((c) => c.stop().catch(() => {})));
    assert.deepEqual(await app.stop(), { code: 0, signal: null });
    app = await startApp();
    const login = await api(app, "POST", "/api/v1/auth/login", { body: { userName: alice.userName, password: "correct horse" } });
    assert.equal(login.status, 200);
    const history = await api(app, "GET", `/api/v1/rooms/${general.id}/messages?limit=1`, { token: login.body.accessToken });
    assert.deepEqual(history.body.map((m) => m.content), ["page 5"]);
  });
});
