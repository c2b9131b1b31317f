// chat-app is safe by default: what an attacker tries on loopback, through REST and the
// official client. Run by `cargo test -p chat-app --test e2e` on SQLite and on PostgreSQL.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import { DATABASE_URL, api, connect, run, signalR, signToken, sleep, startApp, startFails, tcpProxy, until, user } from "./helpers.mjs";

const OLD_BUILT_IN_SECRET = "chat-app-development-secret-do-not-use-in-production";
const SECRET = `safety-secret-${run}-0123456789abcdef`;
const names = (c, event) => c.events.filter((e) => e.name === event).map((e) => e.payload);

describe("no well-known secret", () => {
  it("signs with a generated secret kept across restarts, and says so", async () => {
    const app = await startApp({ RUST_LOG: "warn", JWT_SECRET: undefined });
    try {
      const warning = /JWT_SECRET is not set: (generated|using) (a|the) development secret .*jwt-secret/;
      await until(() => warning.test(app.stderr()), "the start-up warning about the generated secret");
      const alice = await user(app, "keeper");
      // The secret that used to be built in opens nothing.
      const forged = await signToken({ sub: String(alice.id), name: "gpt", exp: Math.floor(Date.now() / 1000) + 3600 }, OLD_BUILT_IN_SECRET);
      assert.equal((await api(app, "GET", "/api/v1/rooms", { token: forged })).status, 401);
      const negotiate = await fetch(`${app.base}/hubs/chat/negotiate?negotiateVersion=1`, { method: "POST", headers: { authorization: `Bearer ${forged}` } });
      assert.equal(negotiate.status, 401);
      const reason = await negotiate.text();
      assert.ok(!/JSON|InvalidSignature|invalid token:/i.test(reason), `no library internals: ${reason}`);
      await app.stop();
      // A restart keeps the secret: the old token still works.
      const again = await startApp({ JWT_SECRET: undefined });
      try {
        assert.equal((await api(again, "GET", "/api/v1/rooms", { token: alice.token })).status, 200);
      } finally {
        await again.stop();
      }
    } finally {
      await app.stop();
    }
  });

  it("refuses to start in production without a secret, under either environment name", async () => {
    for (const env of [{ APP_ENV: "production" }, { ASPNETCORE_ENVIRONMENT: "Production" }]) {
      const result = await startFails({ ...env, JWT_SECRET: undefined });
      assert.equal(result.code, 2, JSON.stringify(env));
      assert.match(result.stderr, /JWT_SECRET is required in production/);
      assert.equal(result.stdout, "", "it never listened");
    }
    const azure = await startFails({ AZURE_SIGNALR_CONNECTION: "Endpoint=https://x.service.signalr.net;AccessKey=abc123secret;Version=1.0;" });
    assert.equal(azure.code, 2);
    assert.match(azure.stderr, /Azure SignalR Service is not supported/);
    assert.ok(!azure.stderr.includes("abc123secret"));
  });

  it("takes identity from the database, never from a name claim", async () => {
    const app = await startApp({ JWT_SECRET: SECRET });
    try {
      const alice = await user(app, "claimer");
      const bob = await user(app, "witness");
      const room = (await api(app, "POST", "/api/v1/rooms", { token: bob.token, body: { name: "claims" } })).body;
      // A validly signed token whose name claim says "gpt".
      const token = await signToken({ sub: String(alice.id), name: "gpt", exp: Math.floor(Date.now() / 1000) + 3600 }, SECRET);
      const a = await connect(app, token);
      const b = await connect(app, bob.token);
      try {
        // Calls are handled only after the connect hook (which puts bob in his rooms) ran: one
        // round trip, or alice's join could reach the room before bob is in it.
        await b.connection.invoke("OnlineMembers", room.id);
        await a.connection.invoke("JoinRoom", room.id);
        const sent = await a.connection.invoke("SendMessage", room.id, "who am i");
        assert.equal(sent.userName, alice.userName);
        await until(() => names(b, "UserJoined").length === 1 && names(b, "ReceiveMessage").length === 1, "events");
        assert.equal(names(b, "UserJoined")[0].userName, alice.userName);
        assert.equal(names(b, "ReceiveMessage")[0].userName, alice.userName);
      } finally {
        await a.connection.stop();
        await b.connection.stop();
      }
      // A token for an account that does not exist, or for the assistant's, opens nothing.
      for (const sub of ["999999999", "not-a-number"]) {
        const t = await signToken({ sub, exp: Math.floor(Date.now() / 1000) + 3600 }, SECRET);
        assert.equal((await api(app, "GET", "/api/v1/rooms", { token: t })).status, 401, sub);
      }
    } finally {
      await app.stop();
    }
  });
});

describe("secrets stay out of logs", () => {
  it("redacts the database password from start-up errors and retries within bounds", async () => {
    // A port that accepts and never answers, like a database host that went away.
    const silent = createServer(() => {});
    await new Promise((r) => silent.listen(0, "127.0.0.1", r));
    try {
      const url = `postgres://chat:hunter2-db-pass@127.0.0.1:${silent.address().port}/chat`;
      const result = await startFails({ DATABASE_URL: url, DATABASE_CONNECT_ATTEMPTS: "2", DATABASE_ACQUIRE_TIMEOUT_MS: "500" });
      assert.equal(result.code, 2);
      assert.ok(!result.stderr.includes("hunter2-db-pass"), result.stderr);
      assert.match(result.stderr, /chat:\*\*\*@127\.0\.0\.1/);
      assert.match(result.stderr, /attempt 1 of 2.*retrying in 1 s/);
      assert.match(result.stderr, /cannot open the database .*tried 2 times/);
      // Two bounded attempts and a 1 s pause, not a 30 s hang.
      assert.ok(result.ms < 6000, `${result.ms} ms`);
    } finally {
      silent.close();
    }
  });

  it("logs the database URL redacted at start-up", { skip: !DATABASE_URL.startsWith("postgres") }, async () => {
    // Trust authentication ignores the password, so the service starts with it in its URL.
    const withPassword = DATABASE_URL.replace("postgres://postgres@", "postgres://postgres:hunter2-db-pass@");
    const app = await startApp({ DATABASE_URL: withPassword, RUST_LOG: "info" });
    try {
      await until(() => app.stderr().includes("chat-app started"), "the start-up line");
      assert.ok(!app.stderr().includes("hunter2-db-pass"));
      assert.match(app.stderr(), /postgres:\*\*\*@/);
    } finally {
      await app.stop();
    }
  });
});

describe("accounts", () => {
  let app;
  before(async () => { app = await startApp(); });
  after(async () => { await app.stop(); });
  const register = (userName, password = "long enough") => api(app, "POST", "/api/v1/auth/register", { body: { userName, password } });
  const login = (userName, password = "long enough") => api(app, "POST", "/api/v1/auth/login", { body: { userName, password } });

  it("keeps names unique regardless of case and Unicode form, in any script", async () => {
    assert.equal((await register(`alice_${run}`)).status, 201);
    for (const imitation of [`ALICE_${run}`, `Alice_${run}`, `ａｌｉｃｅ_${run}`]) {
      const response = await register(imitation);
      assert.equal(response.status, 409, imitation);
      assert.deepEqual(Object.keys(response.body), ["error"]);
    }
    const cyrillic = await register(`Ковальчук_${run}`);
    assert.equal(cyrillic.status, 201);
    assert.equal(cyrillic.body.userName, `Ковальчук_${run}`);
    assert.equal((await login(`КОВАЛЬЧУК_${run}`)).status, 200, "log in in any case");
    assert.equal((await login(`ALICE_${run}`)).body.userName, `alice_${run}`);
    for (const reserved of ["gpt", "GPT", "g.p.t", "ＧＰＴ", "gрt", "Admin"]) {
      const response = await register(reserved);
      assert.equal(response.status, 400, reserved);
      assert.match(response.body.error, /reserved/);
    }
  });

  it("bounds passwords and never hashes a huge one", async () => {
    for (const [password, pattern] of [["        ", /only spaces/], ["short", /at least 8/], ["x".repeat(1025), /at most 1024 bytes/]]) {
      const response = await register(`pw_${run}_${password.length}`, password);
      assert.equal(response.status, 400, JSON.stringify(password.slice(0, 10)));
      assert.match(response.body.error, pattern);
    }
    const started = Date.now();
    const huge = await login(`alice_${run}`, "x".repeat(1024 * 1024));
    assert.equal(huge.status, 400);
    assert.ok(Date.now() - started < 1000);
    assert.equal((await register(`pw_${run}_max`, "é".repeat(512))).status, 201, "1,024 bytes is allowed");
  });

  it("costs the same for unknown users as for wrong passwords", async () => {
    // Alternating samples, so that load from other suites weighs on both alike; before the fix
    // an unknown name answered about 100 times faster.
    const samples = { known: [], unknown: [] };
    for (let i = 0; i < 9; i++) {
      for (const [kind, name] of [["known", `alice_${run}`], ["unknown", `nobody_${run}`]]) {
        const started = process.hrtime.bigint();
        assert.equal((await login(name, "wrong password")).status, 401);
        samples[kind].push(Number(process.hrtime.bigint() - started) / 1e6);
      }
    }
    const median = (xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    const [known, unknown] = [median(samples.known), median(samples.unknown)];
    const ratio = unknown / known;
    assert.ok(ratio > 0.33 && ratio < 3, `known ${known} ms, unknown ${unknown} ms`);
  });

  it("hashes off the runtime: 40 concurrent logins do not stall a chat message", async () => {
    const alice = await user(app, "busy");
    const room = (await api(app, "POST", "/api/v1/rooms", { token: alice.token, body: { name: "busy" } })).body;
    const a = await connect(app, alice.token);
    try {
      await a.connection.invoke("SendMessage", room.id, "warm up");
      const logins = Promise.all(Array.from({ length: 40 }, () => login(`alice_${run}`, "wrong password")));
      await sleep(100);
      const started = Date.now();
      await a.connection.invoke("SendMessage", room.id, "while hashing");
      const took = Date.now() - started;
      const answers = await logins;
      assert.ok(answers.every((r) => r.status === 401 || r.status === 503), JSON.stringify(answers.map((r) => r.status)));
      assert.ok(took < 1500, `SendMessage took ${took} ms during 40 logins (5,674 ms before the fix)`);
    } finally {
      await a.connection.stop();
    }
  });
});

describe("throttles, for real at short intervals", () => {
  it("throttles login per name with 429 and Retry-After, then lets the right password in", async () => {
    const app = await startApp({ LOGIN_RATE_PER_NAME: "5/2" });
    try {
      const victim = await user(app, "victim");
      for (let i = 0; i < 5; i++) {
        assert.equal((await api(app, "POST", "/api/v1/auth/login", { body: { userName: victim.userName, password: `guess ${i}!!` } })).status, 401);
      }
      const right = { userName: victim.userName, password: "long enough" };
      const throttled = await fetch(`${app.base}/api/v1/auth/login`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(right) });
      assert.equal(throttled.status, 429, "even the right password waits");
      const retryAfter = Number(throttled.headers.get("retry-after"));
      assert.ok(retryAfter >= 1 && retryAfter <= 2, `Retry-After ${retryAfter}`);
      assert.match((await throttled.json()).error, /Too many attempts/);
      await sleep(retryAfter * 1000 + 100);
      assert.equal((await api(app, "POST", "/api/v1/auth/login", { body: right })).status, 200);
    } finally {
      await app.stop();
    }
  });

  it("throttles registration and login per address", async () => {
    const app = await startApp({ REGISTER_RATE_PER_ADDRESS: "3/60", LOGIN_RATE_PER_ADDRESS: "4/60" });
    try {
      const statuses = [];
      for (let i = 0; i < 4; i++) statuses.push((await api(app, "POST", "/api/v1/auth/register", { body: { userName: `addr${i}_${run}`, password: "long enough" } })).status);
      assert.deepEqual(statuses, [201, 201, 201, 429]);
      const logins = [];
      for (let i = 0; i < 5; i++) logins.push((await api(app, "POST", "/api/v1/auth/login", { body: { userName: `someone${i}_${run}`, password: "long enough" } })).status);
      assert.deepEqual(logins, [401, 401, 401, 401, 429], "spreading guesses over names does not help");
    } finally {
      await app.stop();
    }
  });

  it("limits SendMessage, Typing and joins per user with a clear error", async () => {
    const app = await startApp({ SEND_MESSAGE_RATE: "5/2", TYPING_RATE: "3/60", JOIN_RATE: "4/60" });
    try {
      const alice = await user(app, "flooder");
      const bob = await user(app, "flooded");
      const room = (await api(app, "POST", "/api/v1/rooms", { token: alice.token, body: { name: "flood" } })).body;
      const a = await connect(app, alice.token);
      const b = await connect(app, bob.token);
      try {
        await b.connection.invoke("JoinRoom", room.id);
        for (let i = 0; i < 5; i++) await a.connection.invoke("SendMessage", room.id, `m${i}`);
        await assert.rejects(a.connection.invoke("SendMessage", room.id, "one too many"), /Too many messages; try again in [12] s/);
        for (let i = 0; i < 3; i++) await a.connection.invoke("Typing", room.id);
        await assert.rejects(a.connection.invoke("Typing", room.id), /Too many typing notices/);
        // Bob joined once; three more join/leave calls, then refused.
        await b.connection.invoke("LeaveRoom", room.id);
        await b.connection.invoke("JoinRoom", room.id);
        await b.connection.invoke("LeaveRoom", room.id);
        await assert.rejects(b.connection.invoke("JoinRoom", room.id), /Too many joins and leaves/);
        const history = await api(app, "GET", `/api/v1/rooms/${room.id}/messages?limit=200`, { token: alice.token });
        assert.deepEqual(history.body.map((m) => m.content).reverse(), ["m0", "m1", "m2", "m3", "m4"], "the refused one was not stored");
        // The window ends: sending works again.
        await sleep(2100);
        await a.connection.invoke("SendMessage", room.id, "after the window");
      } finally {
        await a.connection.stop();
        await b.connection.stop();
      }
    } finally {
      await app.stop();
    }
  });
});

describe("rooms", () => {
  let app;
  let owner, member, outsider;
  const open = [];
  before(async () => {
    app = await startApp();
    owner = await user(app, "owner");
    member = await user(app, "member");
    outsider = await user(app, "outsider");
  });
  after(async () => {
    await Promise.all(open.map((c) => c.stop().catch(() => {})));
    await app.stop();
  });
  const hub = async (who) => {
    const c = await connect(app, who.token, "WebSockets", ["RoomAdded", "RoomRemoved", "RoomOwnerChanged"]);
    open.push(c.connection);
    // One round trip: the connect hook (joining the user's rooms) has run.
    await c.connection.invoke("GetMessagesAfter", 0, 0).catch(() => {});
    return c;
  };
  const create = async (who, name, isPrivate) => (await api(app, "POST", "/api/v1/rooms", { token: who.token, body: { name, isPrivate } })).body;

  it("answers 404 about private rooms to non-members, everywhere", async () => {
    const secret = await create(owner, "hidden", true);
    const paths = [
      ["GET", `/api/v1/rooms/${secret.id}/messages`],
      ["GET", `/api/v1/rooms/${secret.id}/participants`],
      ["POST", `/api/v1/rooms/${secret.id}/participants`, { userId: outsider.id }],
      ["DELETE", `/api/v1/rooms/${secret.id}/participants/${owner.id}`],
      ["GET", `/api/v1/rooms/${secret.id}/members`],
      ["POST", `/api/v1/rooms/${secret.id}/read`, { messageId: 1 }],
    ];
    for (const [method, path, body] of paths) {
      const hidden = await api(app, method, path.replace(String(secret.id), "999999999"), { token: outsider.token, body });
      const real = await api(app, method, path, { token: outsider.token, body });
      assert.equal(real.status, 404, `${method} ${path}`);
      assert.deepEqual(real.body, hidden.body, "the same answer as for a room that does not exist");
    }
    const o = await hub(outsider);
    for (const method of ["JoinRoom", "Typing", "OnlineMembers"]) {
      const hiddenError = await o.connection.invoke(method, 999999999).catch((e) => e.message);
      const realError = await o.connection.invoke(method, secret.id).catch((e) => e.message);
      assert.equal(realError, hiddenError, method);
    }
  });

  it("has an owner who adds and removes members, with events for real changes only", async () => {
    const secret = await create(owner, "owned", true);
    const o = await hub(owner);
    const m = await hub(member);
    const x = await hub(outsider);
    const participants = await api(app, "GET", `/api/v1/rooms/${secret.id}/participants`, { token: owner.token });
    assert.equal(participants.status, 200);
    assert.deepEqual(participants.body.map((p) => [p.userId, p.userName, p.role]), [[owner.id, owner.userName, "owner"]]);

    // Added over REST: the member hears RoomAdded, the room UserJoined, and messages flow at once.
    const added = await api(app, "POST", `/api/v1/rooms/${secret.id}/participants`, { token: owner.token, body: { userId: member.id } });
    assert.equal(added.status, 201);
    await until(() => names(m, "RoomAdded").length === 1 && names(o, "UserJoined").length === 1, "RoomAdded and UserJoined");
    assert.equal(names(m, "RoomAdded")[0].id, secret.id);
    assert.equal(names(o, "UserJoined")[0].userId, member.id);
    await o.connection.invoke("SendMessage", secret.id, "welcome");
    await until(() => names(m, "ReceiveMessage").some((msg) => msg.content === "welcome"), "the welcome");
    // Adding again changes nothing and tells nobody.
    assert.equal((await api(app, "POST", `/api/v1/rooms/${secret.id}/participants`, { token: owner.token, body: { userId: member.id } })).status, 200);
    // A member who is not the owner adds nobody.
    assert.equal((await api(app, "POST", `/api/v1/rooms/${secret.id}/participants`, { token: member.token, body: { userId: outsider.id } })).status, 403);

    // The outsider's LeaveRoom (20 times) and the member's repeated JoinRoom announce nothing.
    for (let i = 0; i < 20; i++) await x.connection.invoke("LeaveRoom", secret.id);
    for (let i = 0; i < 3; i++) await m.connection.invoke("JoinRoom", secret.id);
    await sleep(200);
    assert.equal(names(o, "UserLeft").length, 0);
    assert.equal(names(o, "UserJoined").length, 1);

    // The owner removes the member: UserLeft to the room, RoomRemoved to them, no more access.
    assert.equal((await api(app, "DELETE", `/api/v1/rooms/${secret.id}/participants/${member.id}`, { token: owner.token })).status, 204);
    await until(() => names(o, "UserLeft").length === 1 && names(m, "RoomRemoved").length === 1, "UserLeft and RoomRemoved");
    assert.equal((await api(app, "GET", `/api/v1/rooms/${secret.id}/messages`, { token: member.token })).status, 404);
    await o.connection.invoke("SendMessage", secret.id, "after removal");
    await sleep(200);
    assert.ok(!names(m, "ReceiveMessage").some((msg) => msg.content === "after removal"));
    assert.equal((await api(app, "DELETE", `/api/v1/rooms/${secret.id}/participants/${member.id}`, { token: owner.token })).status, 404);
  });

  it("lets members leave and rejoin public rooms, hands ownership on, and closes an empty private room", async () => {
    const lobby = await create(owner, "lobby", false);
    const m = await hub(member);
    const o = await hub(owner);
    await m.connection.invoke("JoinRoom", lobby.id);
    await m.connection.invoke("LeaveRoom", lobby.id);
    await m.connection.invoke("JoinRoom", lobby.id);
    await until(() => names(o, "UserJoined").filter((e) => e.roomId === lobby.id).length === 2, "two real joins");
    // The owner leaves: the longest-standing member owns the room now.
    await o.connection.invoke("LeaveRoom", lobby.id);
    await until(() => names(m, "RoomOwnerChanged").some((e) => e.roomId === lobby.id && e.userId === member.id), "RoomOwnerChanged");
    const roles = (await api(app, "GET", `/api/v1/rooms/${lobby.id}/participants`, { token: member.token })).body;
    assert.deepEqual(roles.map((p) => [p.userId, p.role]), [[member.id, "owner"]]);

    const solo = await create(owner, "solo", true);
    assert.equal((await api(app, "DELETE", `/api/v1/rooms/${solo.id}/participants/${owner.id}`, { token: owner.token })).status, 204);
    // Nobody could ever reach it again: it is gone, for its former owner too.
    assert.equal((await api(app, "GET", `/api/v1/rooms/${solo.id}/messages`, { token: owner.token })).status, 404);
    assert.ok(!(await api(app, "GET", "/api/v1/rooms", { token: owner.token })).body.some((r) => r.id === solo.id));
  });
});

describe("hygiene", () => {
  let app;
  before(async () => { app = await startApp(); });
  after(async () => { await app.stop(); });

  it("refuses control characters the same way on every database", async () => {
    const alice = await user(app, "nul");
    const room = (await api(app, "POST", "/api/v1/rooms", { token: alice.token, body: { name: "nul" } })).body;
    const a = await connect(app, alice.token);
    try {
      for (const content of ["nul\u0000byte", "bell\u0007", "esc\u001b[31m"]) {
        await assert.rejects(a.connection.invoke("SendMessage", room.id, content), /control characters/);
      }
      const kept = await a.connection.invoke("SendMessage", room.id, "tab\tand\r\nlines");
      assert.equal(kept.content, "tab\tand\nlines");
      const history = await api(app, "GET", `/api/v1/rooms/${room.id}/messages`, { token: alice.token });
      assert.deepEqual(history.body.map((m) => m.content), ["tab\tand\nlines"]);
      assert.equal((await api(app, "GET", "/health")).status, 200);
    } finally {
      await a.connection.stop();
    }
    const badRoom = await api(app, "POST", "/api/v1/rooms", { token: alice.token, body: { name: "x\u0000y" } });
    assert.equal(badRoom.status, 400);
  });

  it("answers every error as {error} JSON in its own words", async () => {
    const alice = await user(app, "errors");
    const cases = [
      ["GET", "/api/v1/rooms/abc/messages", { token: alice.token }, 400],
      ["DELETE", "/api/v1/rooms", { token: alice.token }, 405],
      ["PUT", "/api/v1/auth/login", {}, 405],
      ["POST", "/api/v1/auth/login", { body: { userName: 7, password: "x" } }, 422],
      ["POST", "/api/v1/auth/login", { raw: "{not json" }, 400],
      ["GET", `/api/v1/rooms/1/messages?limit=abc`, { token: alice.token }, 400],
      ["GET", "/api/v1/rooms", { token: "not-a-token" }, 401],
      ["GET", "/no/such/endpoint", {}, 404],
    ];
    for (const [method, path, options, status] of cases) {
      const response = await fetch(`${app.base}${path}`, {
        method,
        headers: { ...(options.token ? { authorization: `Bearer ${options.token}` } : {}), "content-type": "application/json" },
        body: options.raw ?? (options.body ? JSON.stringify(options.body) : undefined),
      });
      assert.equal(response.status, status, `${method} ${path}`);
      assert.match(response.headers.get("content-type") ?? "", /application\/json/, `${method} ${path}`);
      const body = await response.json();
      assert.deepEqual(Object.keys(body), ["error"]);
      assert.ok(!/invalid type|expected|line \d+ column|serde|Failed to deserialize/i.test(body.error), body.error);
    }
  });

  it("catches up with ?after= and GetMessagesAfter", async () => {
    const alice = await user(app, "catchup");
    const room = (await api(app, "POST", "/api/v1/rooms", { token: alice.token, body: { name: "catch up" } })).body;
    const a = await connect(app, alice.token);
    try {
      const sent = [];
      for (let i = 1; i <= 4; i++) sent.push(await a.connection.invoke("SendMessage", room.id, `c${i}`));
      const after = await api(app, "GET", `/api/v1/rooms/${room.id}/messages?after=${sent[1].id}`, { token: alice.token });
      assert.equal(after.status, 200);
      assert.deepEqual(after.body.map((m) => m.content), ["c3", "c4"], "oldest first");
      assert.deepEqual(await a.connection.invoke("GetMessagesAfter", room.id, sent[0].id), sent.slice(1));
      assert.equal((await api(app, "GET", `/api/v1/rooms/${room.id}/messages?after=1&before=9`, { token: alice.token })).status, 400);
    } finally {
      await a.connection.stop();
    }
  });
});

describe("stateful reconnect", () => {
  let app, proxy, alice, bob, room;
  before(async () => {
    app = await startApp();
    proxy = await tcpProxy(Number(new URL(app.base).port));
    alice = await user(app, "cut");
    bob = await user(app, "sender");
    room = (await api(app, "POST", "/api/v1/rooms", { token: alice.token, body: { name: "cuts" } })).body;
  });
  after(async () => {
    await proxy.close();
    await app.stop();
  });
  const client = (stateful) => {
    let builder = new signalR.HubConnectionBuilder()
      .withUrl(`${proxy.base}/hubs/chat`, { accessTokenFactory: () => alice.token, transport: signalR.HttpTransportType.WebSockets })
      .withAutomaticReconnect([0, 300, 300, 300, 300, 300, 300, 300, 300, 300])
      .configureLogging(signalR.LogLevel.None);
    if (stateful) builder = builder.withStatefulReconnect();
    const connection = builder.build();
    const received = [];
    let reconnecting = 0;
    connection.on("ReceiveMessage", (m) => received.push(m));
    connection.onreconnecting(() => { reconnecting++; });
    return { connection, received, reconnecting: () => reconnecting };
  };

  it("is on by default: messages sent while the socket was dead for 1 s arrive after the cut", async () => {
    const a = client(true);
    await a.connection.start();
    const b = await connect(app, bob.token);
    try {
      await b.connection.invoke("JoinRoom", room.id);
      await b.connection.invoke("SendMessage", room.id, "before");
      await until(() => a.received.some((m) => m.content === "before"), "before the cut");
      // The socket goes dead (what the server writes is swallowed) for a second, then drops.
      proxy.set("blackhole");
      const during = [];
      for (let i = 0; i < 5; i++) {
        during.push(`during ${i}`);
        await b.connection.invoke("SendMessage", room.id, `during ${i}`);
        await sleep(200);
      }
      proxy.set("pass");
      proxy.cut();
      await b.connection.invoke("SendMessage", room.id, "after");
      await until(() => a.received.some((m) => m.content === "after"), "after the cut", 10000);
      assert.deepEqual(a.received.map((m) => m.content), ["before", ...during, "after"], "nothing lost, nothing twice, in order");
      assert.equal(a.reconnecting(), 0, "the same connection resumed");
    } finally {
      await b.connection.stop();
      await a.connection.stop();
    }
  });

  it("after a full reconnect, GetMessagesAfter returns what was missed", async () => {
    const a = client(false);
    await a.connection.start();
    const b = await connect(app, bob.token);
    try {
      const last = await b.connection.invoke("SendMessage", room.id, "seen");
      await until(() => a.received.some((m) => m.id === last.id), "seen");
      proxy.set("refuse");
      for (let i = 0; i < 3; i++) await b.connection.invoke("SendMessage", room.id, `missed ${i}`);
      await sleep(500);
      proxy.set("pass");
      await until(() => a.connection.state === signalR.HubConnectionState.Connected && a.reconnecting() === 1, "a new connection", 10000);
      const missed = await a.connection.invoke("GetMessagesAfter", room.id, last.id);
      assert.deepEqual(missed.map((m) => m.content), ["missed 0", "missed 1", "missed 2"]);
      assert.ok(!a.received.some((m) => m.content.startsWith("missed")), "the live copies were lost with the old connection");
    } finally {
      await b.connection.stop();
      await a.connection.stop();
    }
  });
});
