// Direct messages, edits and deletes, read markers and unread counts, and the web UI's files:
// the real chat-app binary with the official client, over the hub and the REST API.
// Run by `cargo test -p chat-app --test e2e` (SQLite and PostgreSQL).
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { DATABASE_URL, api, connect, run, sleep, startApp, until, user } from "./helpers.mjs";

const EVENTS = ["MessageEdited", "MessageDeleted", "DirectConversationStarted", "UnreadChanged", "RoomCreated"];

describe(`messaging on ${DATABASE_URL === "default" ? "its default SQLite file" : DATABASE_URL.split(":")[0]}`, () => {
  let app;
  const open = [];
  let alice, bob, carol, general;
  let a, b, c;
  const connected = async (who) => {
    const connection = await connect(app, who.token, "WebSockets", EVENTS);
    open.push(connection.connection);
    return connection;
  };
  const ofType = (conn, name) => conn.events.filter((e) => e.name === name).map((e) => e.payload);
  const roomsOf = async (who) => (await api(app, "GET", "/api/v1/rooms", { token: who.token })).body;
  const history = async (who, roomId) => (await api(app, "GET", `/api/v1/rooms/${roomId}/messages`, { token: who.token })).body;

  before(async () => {
    app = await startApp();
    [alice, bob, carol] = await Promise.all([user(app, "m_alice"), user(app, "m_bob"), user(app, "m_carol")]);
    [a, b, c] = await Promise.all([connected(alice), connected(bob), connected(carol)]);
    general = (await api(app, "POST", "/api/v1/rooms", { token: alice.token, body: { name: `messaging ${run}` } })).body;
    await b.connection.invoke("JoinRoom", general.id);
  });
  after(async () => {
    await Promise.all(open.map((conn) => conn.stop().catch(() => {})));
    await app.stop();
  });

  it("announces new public rooms to everyone, private ones to nobody", async () => {
    await until(() => ofType(c, "RoomCreated").some((r) => r.id === general.id), "RoomCreated");
    const [created] = ofType(c, "RoomCreated").filter((r) => r.id === general.id);
    assert.deepEqual(created, { id: general.id, name: general.name, isPrivate: false, createdBy: alice.id });
    const hidden = (await api(app, "POST", "/api/v1/rooms", { token: alice.token, body: { name: `hidden ${run}`, isPrivate: true } })).body;
    const later = (await api(app, "POST", "/api/v1/rooms", { token: bob.token, body: { name: `later ${run}` } })).body;
    await until(() => ofType(c, "RoomCreated").some((r) => r.id === later.id), "the later RoomCreated");
    assert.ok(!ofType(c, "RoomCreated").some((r) => r.id === hidden.id), "a private room is not announced");
  });

  it("edits one's own message: the room hears MessageEdited and history shows the new text", async () => {
    const sent = await a.connection.invoke("SendMessage", general.id, "frist post");
    assert.equal(sent.editedAt, null);
    const edited = await a.connection.invoke("EditMessage", sent.id, "  first post  ");
    assert.equal(edited.id, sent.id);
    assert.equal(edited.content, "first post");
    assert.equal(edited.createdAt, sent.createdAt);
    assert.match(edited.editedAt, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/);
    await until(() => ofType(b, "MessageEdited").some((m) => m.id === sent.id), "MessageEdited at bob");
    assert.deepEqual(ofType(b, "MessageEdited").find((m) => m.id === sent.id), edited);
    const stored = (await history(bob, general.id)).find((m) => m.id === sent.id);
    assert.deepEqual(stored, edited);

    const rest = await api(app, "PATCH", `/api/v1/messages/${sent.id}`, { token: alice.token, body: { content: "first post, again" } });
    assert.equal(rest.status, 200);
    assert.equal(rest.body.content, "first post, again");
    await until(() => ofType(b, "MessageEdited").some((m) => m.content === "first post, again"), "MessageEdited from REST");
  });

  it("refuses edits of someone else's, unknown, deleted, empty or oversized messages", async () => {
    const sent = await a.connection.invoke("SendMessage", general.id, "alice's words");
    await assert.rejects(b.connection.invoke("EditMessage", sent.id, "bob's words"), /Only the author can edit/);
    await assert.rejects(a.connection.invoke("EditMessage", 999999999, "nothing"), /No such message/);
    await assert.rejects(a.connection.invoke("EditMessage", sent.id, "   "), /Empty/);
    await assert.rejects(a.connection.invoke("EditMessage", sent.id, "x".repeat(201)), /limited to 200/);
    await assert.rejects(a.connection.invoke("EditMessage", sent.id, "nul\0byte"), /control characters/);
    await assert.rejects(a.connection.invoke("EditMessage", sent.id), /Failed to invoke/);
    await assert.rejects(a.connection.invoke("EditMessage", "not a number", "text"), /Failed to invoke/);
    const cases = [
      [bob, sent.id, { content: "bob's words" }, 403],
      [alice, 999999999, { content: "nothing" }, 404],
      [alice, sent.id, { content: "x".repeat(201) }, 400],
      [alice, sent.id, { content: "" }, 400],
      [alice, sent.id, { content: "bell\u0007" }, 400],
      [alice, sent.id, { text: "wrong field" }, 422],
      [alice, "abc", { content: "bad id" }, 400],
      [undefined, sent.id, { content: "anonymous" }, 401],
    ];
    for (const [who, id, body, status] of cases) {
      const response = await api(app, "PATCH", `/api/v1/messages/${id}`, { token: who?.token, body });
      assert.equal(response.status, status, `PATCH ${id} ${JSON.stringify(body)} as ${who?.userName}`);
      assert.equal(typeof response.body.error, "string");
    }
    const stored = (await history(alice, general.id)).find((m) => m.id === sent.id);
    assert.equal(stored.content, "alice's words");
    assert.equal(stored.editedAt, null);
    assert.ok(!ofType(b, "MessageEdited").some((m) => m.id === sent.id), "no refused edit was broadcast");
  });

  it("deletes one's own message once: MessageDeleted to the room, gone from history", async () => {
    const keep = await a.connection.invoke("SendMessage", general.id, "keep me");
    const doomed = await a.connection.invoke("SendMessage", general.id, "delete me");
    await assert.rejects(b.connection.invoke("DeleteMessage", doomed.id), /Only the author can delete/);
    assert.equal(await a.connection.invoke("DeleteMessage", doomed.id), null);
    await until(() => ofType(b, "MessageDeleted").some((d) => d.messageId === doomed.id), "MessageDeleted at bob");
    assert.deepEqual(ofType(b, "MessageDeleted").find((d) => d.messageId === doomed.id), { roomId: general.id, messageId: doomed.id });
    const ids = (await history(bob, general.id)).map((m) => m.id);
    assert.ok(ids.includes(keep.id) && !ids.includes(doomed.id));
    await assert.rejects(a.connection.invoke("DeleteMessage", doomed.id), /No such message/);
    await assert.rejects(a.connection.invoke("EditMessage", doomed.id, "back from the dead"), /No such message/);
    assert.equal(ofType(b, "MessageDeleted").filter((d) => d.messageId === doomed.id).length, 1, "deleting twice broadcasts once");

    const viaRest = await a.connection.invoke("SendMessage", general.id, "delete me over REST");
    assert.equal((await api(app, "DELETE", `/api/v1/messages/${viaRest.id}`, { token: bob.token })).status, 403);
    assert.equal((await api(app, "DELETE", `/api/v1/messages/${viaRest.id}`, { token: alice.token })).status, 204);
    const twice = await api(app, "DELETE", `/api/v1/messages/${viaRest.id}`, { token: alice.token });
    assert.equal(twice.status, 404);
    assert.equal(twice.body.error, "No such message.");
  });

  it("lets only members edit and delete: leaving the room ends it", async () => {
    await c.connection.invoke("JoinRoom", general.id);
    const said = await c.connection.invoke("SendMessage", general.id, "carol was here");
    await c.connection.invoke("LeaveRoom", general.id);
    await assert.rejects(c.connection.invoke("EditMessage", said.id, "rewritten"), /Join the room first/);
    await assert.rejects(c.connection.invoke("DeleteMessage", said.id), /Join the room first/);
  });

  it("starts a direct conversation with the first message and lists it apart from rooms", async () => {
    const first = await a.connection.invoke("SendDirectMessage", bob.userName, "psst, bob");
    const roomId = first.roomId;
    assert.equal(first.content, "psst, bob");
    await until(() => ofType(b, "ReceiveMessage").some((m) => m.id === first.id), "the DM at bob");
    await until(() => ofType(b, "DirectConversationStarted").length === 1, "DirectConversationStarted at bob");
    assert.deepEqual(ofType(b, "DirectConversationStarted")[0], { roomId, userId: alice.id, userName: alice.userName });
    await until(() => ofType(a, "DirectConversationStarted").length === 1, "DirectConversationStarted at alice");
    assert.deepEqual(ofType(a, "DirectConversationStarted")[0], { roomId, userId: bob.id, userName: bob.userName });
    assert.ok(!ofType(c, "ReceiveMessage").some((m) => m.id === first.id), "carol does not see it");

    const bobs = await api(app, "GET", "/api/v1/direct", { token: bob.token });
    assert.equal(bobs.status, 200);
    assert.deepEqual(bobs.body, [{ roomId, userId: alice.id, userName: alice.userName, unread: 1, lastMessageId: first.id }]);
    assert.ok(!(await roomsOf(bob)).some((r) => r.id === roomId), "not in the room list");
    assert.ok(!(await roomsOf(alice)).some((r) => r.id === roomId));
    assert.deepEqual((await api(app, "GET", "/api/v1/direct", { token: carol.token })).body, []);

    // The reply, over REST, goes to the same conversation; no second "started".
    const reply = await api(app, "POST", "/api/v1/direct", { token: bob.token, body: { userName: alice.userName, content: "hi alice" } });
    assert.equal(reply.status, 201);
    assert.equal(reply.body.roomId, roomId);
    await until(() => ofType(a, "ReceiveMessage").some((m) => m.id === reply.body.id), "the reply at alice");
    const again = await b.connection.invoke("SendMessage", roomId, "and over the room method");
    assert.equal(again.roomId, roomId);
    await sleep(50);
    assert.equal(ofType(a, "DirectConversationStarted").length, 1);
    assert.deepEqual((await history(alice, roomId)).map((m) => m.content), ["and over the room method", "hi alice", "psst, bob"]);

    // It stays two people: to anyone else it does not exist; nobody adds or removes.
    assert.equal((await api(app, "GET", `/api/v1/rooms/${roomId}/messages`, { token: carol.token })).status, 404);
    await assert.rejects(c.connection.invoke("JoinRoom", roomId), /No such room/);
    for (const who of [alice, bob]) {
      const add = await api(app, "POST", `/api/v1/rooms/${roomId}/participants`, { token: who.token, body: { userId: carol.id } });
      assert.equal(add.status, 403);
      assert.match(add.body.error, /exactly two members/);
    }
    const removed = await api(app, "DELETE", `/api/v1/rooms/${roomId}/participants/${bob.id}`, { token: alice.token });
    assert.equal(removed.status, 403);
    assert.match(removed.body.error, /may leave it/);
    const roles = (await api(app, "GET", `/api/v1/rooms/${roomId}/participants`, { token: bob.token })).body;
    assert.deepEqual(roles.map((p) => [p.userId, p.role]).sort(), [[alice.id, "member"], [bob.id, "member"]].sort(), "no owner in a direct conversation");
  });

  it("brings a person who left a direct conversation back with the next message", async () => {
    const [gina, hank] = await Promise.all([user(app, "m_gina"), user(app, "m_hank")]);
    const [g, h] = await Promise.all([connected(gina), connected(hank)]);
    const first = await g.connection.invoke("SendDirectMessage", hank.userName, "one");
    await until(() => ofType(h, "DirectConversationStarted").length === 1, "started at hank");
    await h.connection.invoke("LeaveRoom", first.roomId);
    assert.deepEqual((await api(app, "GET", "/api/v1/direct", { token: hank.token })).body, []);
    await assert.rejects(h.connection.invoke("SendMessage", first.roomId, "still here?"), /Join the room first/);
    const second = await g.connection.invoke("SendDirectMessage", hank.userName, "two");
    assert.equal(second.roomId, first.roomId);
    await until(() => ofType(h, "ReceiveMessage").some((m) => m.id === second.id), "the second message at hank, live");
    assert.equal(ofType(h, "DirectConversationStarted").length, 2);
    const listed = (await api(app, "GET", "/api/v1/direct", { token: hank.token })).body;
    assert.deepEqual(listed.map((d) => [d.roomId, d.userName, d.unread]), [[first.roomId, gina.userName, 1]]);
  });

  it("opens a direct conversation both people left again with the next message, history kept", async () => {
    const [ivan, judy] = await Promise.all([user(app, "m_ivan"), user(app, "m_judy")]);
    const [i, j] = await Promise.all([connected(ivan), connected(judy)]);
    const first = await i.connection.invoke("SendDirectMessage", judy.userName, "before we both left");
    await until(() => ofType(j, "DirectConversationStarted").length === 1, "started at judy");
    await i.connection.invoke("LeaveRoom", first.roomId);
    await j.connection.invoke("LeaveRoom", first.roomId);
    // Closed, like every private room its last member leaves.
    assert.equal((await api(app, "GET", `/api/v1/rooms/${first.roomId}/messages`, { token: judy.token })).status, 404);
    assert.deepEqual((await api(app, "GET", "/api/v1/direct", { token: ivan.token })).body, []);
    // Either of them reopens it, by name in any case.
    const again = await j.connection.invoke("SendDirectMessage", ivan.userName.toUpperCase(), "back again");
    assert.equal(again.roomId, first.roomId);
    await until(() => ofType(i, "ReceiveMessage").some((m) => m.id === again.id), "the reopening message at ivan, live");
    await until(() => ofType(i, "DirectConversationStarted").length === 2, "started again at ivan");
    assert.deepEqual((await history(ivan, first.roomId)).map((m) => m.content), ["back again", "before we both left"]);
    const listed = (await api(app, "GET", "/api/v1/direct", { token: ivan.token })).body;
    assert.deepEqual(listed.map((d) => [d.roomId, d.userName, d.unread]), [[first.roomId, judy.userName, 1]]);
    const reply = await i.connection.invoke("SendMessage", first.roomId, "welcome back");
    assert.equal(reply.roomId, first.roomId);
  });

  it("refuses direct messages to oneself, to unknown users, to the assistant, and oversized ones", async () => {
    await assert.rejects(a.connection.invoke("SendDirectMessage", alice.userName, "me, myself"), /someone else/);
    await assert.rejects(a.connection.invoke("SendDirectMessage", `nobody_${run}`, "hello?"), /No such user/);
    await assert.rejects(a.connection.invoke("SendDirectMessage", "gpt", "hi gpt"), /assistant takes no direct messages/);
    await assert.rejects(a.connection.invoke("SendDirectMessage", carol.userName, "x".repeat(201)), /limited to 200/);
    await assert.rejects(a.connection.invoke("SendDirectMessage", carol.userName, "  "), /Empty/);
    await assert.rejects(a.connection.invoke("SendDirectMessage", carol.userName, "nul\0byte"), /control characters/);
    const cases = [
      [{ userName: alice.userName, content: "me" }, 400],
      [{ userName: `nobody_${run}`, content: "hello?" }, 404],
      [{ userName: carol.userName, content: "x".repeat(201) }, 400],
      [{ userName: carol.userName, content: "esc\u001b[2J" }, 400],
      [{ userName: carol.userName }, 422],
      [{ userName: carol.userName, content: "hi", extra: 1 }, 422],
    ];
    for (const [body, status] of cases) {
      const response = await api(app, "POST", "/api/v1/direct", { token: alice.token, body });
      assert.equal(response.status, status, JSON.stringify(body).slice(0, 80));
      assert.equal(typeof response.body.error, "string");
    }
    assert.equal((await api(app, "POST", "/api/v1/direct", { body: { userName: carol.userName, content: "hi" } })).status, 401);
    const carols = (await api(app, "GET", "/api/v1/direct", { token: carol.token })).body;
    assert.deepEqual(carols, [], "no refused message created a conversation");
  });

  it("creates one conversation when both people send their first message at once", async () => {
    const [dave, erin] = await Promise.all([user(app, "m_dave"), user(app, "m_erin")]);
    const [d, e] = await Promise.all([connected(dave), connected(erin)]);
    const sent = await Promise.all([
      d.connection.invoke("SendDirectMessage", erin.userName, "hi erin"),
      e.connection.invoke("SendDirectMessage", dave.userName, "hi dave"),
      api(app, "POST", "/api/v1/direct", { token: dave.token, body: { userName: erin.userName, content: "rest too" } }).then((r) => r.body),
    ]);
    assert.equal(new Set(sent.map((m) => m.roomId)).size, 1, JSON.stringify(sent));
    const listed = (await api(app, "GET", "/api/v1/direct", { token: dave.token })).body;
    assert.equal(listed.length, 1);
    assert.equal(listed[0].userName, erin.userName);
  });

  it("counts unread messages per room from the read marker, which only moves forward", async () => {
    const room = (await api(app, "POST", "/api/v1/rooms", { token: alice.token, body: { name: `unread ${run}` } })).body;
    // Bob joins after an old message: it does not count.
    await a.connection.invoke("SendMessage", room.id, "before bob came");
    await sleep(5);
    await b.connection.invoke("JoinRoom", room.id);
    const unreadOf = async (who) => (await roomsOf(who)).find((r) => r.id === room.id);
    assert.deepEqual(await unreadOf(bob), { ...room, isMember: true, unread: 0 });
    assert.deepEqual(await unreadOf(carol), { ...room, isMember: false, unread: 0 });

    const sent = [];
    for (let i = 1; i <= 3; i++) sent.push(await a.connection.invoke("SendMessage", room.id, `unread ${i}`));
    await b.connection.invoke("SendMessage", room.id, "bob's own words are never unread");
    assert.equal((await unreadOf(bob)).unread, 3);
    assert.equal((await unreadOf(alice)).unread, 1);

    const bobPhone = await connected(bob);
    const read = await b.connection.invoke("MarkRead", room.id, sent[1].id);
    assert.deepEqual(read, { roomId: room.id, lastReadMessageId: sent[1].id, unread: 1 });
    await until(() => ofType(bobPhone, "UnreadChanged").some((u) => u.roomId === room.id), "UnreadChanged on bob's other connection");
    assert.deepEqual(ofType(bobPhone, "UnreadChanged").find((u) => u.roomId === room.id), read);
    assert.ok(!ofType(a, "UnreadChanged").some((u) => u.roomId === room.id), "alice hears nothing of bob's marker");
    assert.equal((await unreadOf(bob)).unread, 1);

    // Backwards is a no-op.
    const back = await b.connection.invoke("MarkRead", room.id, sent[0].id);
    assert.equal(back.lastReadMessageId, sent[1].id);
    assert.equal(back.unread, 1);

    // A deleted message no longer counts.
    await a.connection.invoke("DeleteMessage", sent[2].id);
    assert.equal((await unreadOf(bob)).unread, 0);

    // Over REST.
    const more = await a.connection.invoke("SendMessage", room.id, "one more");
    assert.equal((await unreadOf(bob)).unread, 1);
    const rest = await api(app, "POST", `/api/v1/rooms/${room.id}/read`, { token: bob.token, body: { messageId: more.id } });
    assert.equal(rest.status, 200);
    assert.deepEqual(rest.body, { roomId: room.id, lastReadMessageId: more.id, unread: 0 });
  });

  it("refuses read markers for other rooms' messages, unknown messages and non-members", async () => {
    const elsewhere = await a.connection.invoke("SendMessage", general.id, "in general");
    const room = (await api(app, "POST", "/api/v1/rooms", { token: alice.token, body: { name: `markers ${run}` } })).body;
    await assert.rejects(a.connection.invoke("MarkRead", room.id, elsewhere.id), /No such message in this room/);
    await assert.rejects(a.connection.invoke("MarkRead", room.id, 999999999), /No such message in this room/);
    await assert.rejects(c.connection.invoke("MarkRead", general.id, elsewhere.id), /Join the room first/);
    await assert.rejects(a.connection.invoke("MarkRead", room.id), /Failed to invoke/);
    const cases = [
      [alice, room.id, { messageId: elsewhere.id }, 404],
      [carol, general.id, { messageId: elsewhere.id }, 403],
      [alice, room.id, { messageId: "1" }, 422],
      [alice, room.id, {}, 422],
    ];
    for (const [who, roomId, body, status] of cases) {
      const response = await api(app, "POST", `/api/v1/rooms/${roomId}/read`, { token: who.token, body });
      assert.equal(response.status, status, JSON.stringify(body));
      assert.equal(typeof response.body.error, "string");
    }
  });

  it("lists members with who is online, and finds users by name", async () => {
    const room = (await api(app, "POST", "/api/v1/rooms", { token: alice.token, body: { name: `members ${run}` } })).body;
    const frank = await user(app, "m_frank");
    await api(app, "POST", `/api/v1/rooms/${room.id}/participants`, { token: alice.token, body: { userId: frank.id } });
    const members = await api(app, "GET", `/api/v1/rooms/${room.id}/members`, { token: bob.token });
    assert.equal(members.status, 200);
    assert.deepEqual(members.body.map(({ userId, userName, role, online }) => ({ userId, userName, role, online })), [
      { userId: alice.id, userName: alice.userName, role: "owner", online: true },
      { userId: frank.id, userName: frank.userName, role: "member", online: false },
    ].sort((x, y) => x.userName.localeCompare(y.userName)));
    // The same people as the participants list, with the same roles and join times.
    const participants = (await api(app, "GET", `/api/v1/rooms/${room.id}/participants`, { token: bob.token })).body;
    assert.deepEqual(members.body.map(({ online, ...rest }) => rest).sort((x, y) => x.userId - y.userId), participants.sort((x, y) => x.userId - y.userId));
    const secret = (await api(app, "POST", "/api/v1/rooms", { token: alice.token, body: { name: `members secret ${run}`, isPrivate: true } })).body;
    const hidden = await api(app, "GET", `/api/v1/rooms/${secret.id}/members`, { token: bob.token });
    const missing = await api(app, "GET", "/api/v1/rooms/999999999/members", { token: bob.token });
    assert.equal(hidden.status, 404);
    assert.deepEqual(hidden.body, missing.body, "a private room looks like one that does not exist");

    const found = await api(app, "GET", `/api/v1/users/${encodeURIComponent(frank.userName)}`, { token: bob.token });
    assert.deepEqual(found.body, { userId: frank.id, userName: frank.userName });
    assert.equal((await api(app, "GET", `/api/v1/users/nobody_${run}`, { token: bob.token })).status, 404);
    assert.equal((await api(app, "GET", `/api/v1/users/${frank.userName}`)).status, 401);
  });

  it("serves the web UI with a strict content security policy", async () => {
    const page = await fetch(`${app.base}/`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get("content-type"), /^text\/html/);
    assert.match(page.headers.get("content-security-policy"), /script-src 'self'/);
    assert.equal(page.headers.get("x-content-type-options"), "nosniff");
    const html = await page.text();
    assert.match(html, /<script type="module" src="\/static\/app.js">/);
    for (const [path, type] of [["/static/app.js", /^text\/javascript/], ["/static/style.css", /^text\/css/], ["/static/vendor/signalr.min.js", /^text\/javascript/]]) {
      const response = await fetch(`${app.base}${path}`);
      assert.equal(response.status, 200, path);
      assert.match(response.headers.get("content-type"), type, path);
      assert.ok((await response.text()).length > 100, path);
    }
    for (const path of ["/static/nope.js", "/static/%2e%2e/Cargo.toml", "/static/", "/index.html"]) {
      const response = await fetch(`${app.base}${path}`);
      assert.equal(response.status, 404, path);
      assert.equal(typeof (await response.json()).error, "string");
    }
  });
});

describe("messaging rate limits", () => {
  it("counts direct messages with SendMessage, and edits and deletes at the same rate apart", async () => {
    const app = await startApp({ SEND_MESSAGE_RATE: "4/2" });
    const open = [];
    try {
      const [kim, lee] = await Promise.all([user(app, "r_kim"), user(app, "r_lee")]);
      const k = await connect(app, kim.token);
      open.push(k.connection);
      const room = (await api(app, "POST", "/api/v1/rooms", { token: kim.token, body: { name: `rates ${run}` } })).body;
      const sent = [];
      sent.push(await k.connection.invoke("SendMessage", room.id, "one"));
      sent.push(await k.connection.invoke("SendDirectMessage", lee.userName, "two"));
      const rest = await api(app, "POST", "/api/v1/direct", { token: kim.token, body: { userName: lee.userName, content: "three" } });
      assert.equal(rest.status, 201);
      sent.push(await k.connection.invoke("SendMessage", room.id, "four"));
      await assert.rejects(k.connection.invoke("SendDirectMessage", lee.userName, "five"), /Too many messages; try again in [12] s/);
      await assert.rejects(k.connection.invoke("SendMessage", room.id, "five"), /Too many messages/);
      const refused = await api(app, "POST", "/api/v1/direct", { token: kim.token, body: { userName: lee.userName, content: "five" } });
      assert.equal(refused.status, 429);
      assert.match(refused.headers.get("retry-after") ?? "", /^[12]$/);
      assert.match(refused.body.error, /Too many messages/);
      assert.deepEqual((await api(app, "GET", `/api/v1/rooms/${sent[1].roomId}/messages`, { token: lee.token })).body.map((m) => m.content), ["three", "two"], "refused messages were not stored");

      // Edits and deletes have their own allowance: still open, then used up.
      for (let i = 0; i < 3; i++) await k.connection.invoke("EditMessage", sent[0].id, `one, take ${i}`);
      await k.connection.invoke("DeleteMessage", sent[2].id);
      await assert.rejects(k.connection.invoke("EditMessage", sent[0].id, "one too many"), /Too many edits and deletes/);
      await assert.rejects(k.connection.invoke("DeleteMessage", sent[0].id), /Too many edits and deletes/);
      const patch = await api(app, "PATCH", `/api/v1/messages/${sent[0].id}`, { token: kim.token, body: { content: "over REST" } });
      assert.equal(patch.status, 429);
      const history = (await api(app, "GET", `/api/v1/rooms/${room.id}/messages`, { token: kim.token })).body;
      assert.deepEqual(history.map((m) => m.content), ["one, take 2"], "the refused edit and delete changed nothing");

      // The window ends: both work again.
      await sleep(2100);
      await k.connection.invoke("SendDirectMessage", lee.userName, "after the window");
      await k.connection.invoke("EditMessage", sent[0].id, "edited after the window");
    } finally {
      await Promise.all(open.map((conn) => conn.stop().catch(() => {})));
      await app.stop();
    }
  });
});
