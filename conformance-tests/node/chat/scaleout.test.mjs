// Two chat-app processes on one database and one Redis behave as one service.
// Run by `cargo test -p chat-app --test e2e` with CHAT_APP_BIN, CHAT_DATABASE_URL and
// CHAT_REDIS_URL set.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { api, connect, run, sleep, startApp, tcpProxy, until, user } from "./helpers.mjs";
import { splitProxy } from "../test/proxy.mjs";

const REDIS_URL = process.env.CHAT_REDIS_URL;
if (!REDIS_URL) throw new Error("CHAT_REDIS_URL must be set");

describe("two chat-app processes on one Redis", () => {
  let a, b;
  const open = [];
  before(async () => {
    // One service: the same database, Redis, channel prefix (unique to this run) and secret.
    const env = {
      REDIS_URL,
      REDIS_CHANNEL_PREFIX: `ChatApp.ScaleOut.${run}`,
      JWT_SECRET: `scale-out-secret-${run}-0123456789`,
    };
    a = await startApp(env);
    b = await startApp(env);
  });
  after(async () => {
    await Promise.all(open.map((c) => c.stop().catch(() => {})));
    await Promise.all([a?.stop(), b?.stop()]);
  });

  const hub = async (app, who) => {
    const c = await connect(app, who.token);
    open.push(c.connection);
    return c;
  };
  const messages = (c) => c.events.filter((e) => e.name === "ReceiveMessage").map((e) => e.payload.content);

  it("delivers messages, joins and presence across processes", async () => {
    for (const app of [a, b]) {
      const ready = await api(app, "GET", "/health/ready");
      assert.equal(ready.status, 200);
      assert.equal((await api(app, "GET", "/health")).body.backplane.status, "ok");
    }
    const alice = await user(a, "alice");
    const bob = await user(b, "bob");
    const carol = await user(a, "carol");
    const room = (await api(a, "POST", "/api/v1/rooms", { token: alice.token, body: { name: `lobby ${run}` } })).body;

    const aliceA = await hub(a, alice);
    const bobB = await hub(b, bob);
    await aliceA.connection.invoke("JoinRoom", room.id);
    await bobB.connection.invoke("JoinRoom", room.id);
    await until(() => aliceA.events.some((e) => e.name === "UserJoined" && e.payload.userId === bob.id), "alice sees bob join from the other process");

    const sent = await aliceA.connection.invoke("SendMessage", room.id, "hello from A");
    await until(() => messages(bobB).includes("hello from A"), "bob on B receives alice's message from A");
    assert.deepEqual(bobB.events.find((e) => e.name === "ReceiveMessage").payload, sent);
    await bobB.connection.invoke("SendMessage", room.id, "hello from B");
    await until(() => messages(aliceA).includes("hello from B"), "alice on A receives bob's message from B");

    // Presence spans both processes.
    const deadline = Date.now() + 5000;
    let online;
    do {
      online = await aliceA.connection.invoke("OnlineMembers", room.id);
      if (online.length === 2) break;
      await sleep(50);
    } while (Date.now() < deadline);
    assert.deepEqual(online, [String(alice.id), String(bob.id)].sort());

    // A member's new connection on the other process is in the room at once (per-user auto-join).
    // The hub handles a connection's calls only after its connect hook (which joins its rooms)
    // ran, so one round trip tells the test that the hook is done.
    const settled = (c) => c.connection.invoke("OnlineMembers", room.id).catch(() => {});
    const bobA = await hub(a, bob);
    await settled(bobA);
    await bobB.connection.invoke("SendMessage", room.id, "to both of bob's devices");
    await until(() => messages(bobA).includes("to both of bob's devices"), "bob's second device on A");

    // Joining from one process brings the user's connections on the other process along.
    const carolA = await hub(a, carol);
    await settled(carolA);
    const carolB = await hub(b, carol);
    await carolB.connection.invoke("JoinRoom", room.id);
    await aliceA.connection.invoke("SendMessage", room.id, "welcome carol");
    await until(() => messages(carolA).includes("welcome carol") && messages(carolB).includes("welcome carol"), "both of carol's connections");

    // Negotiate with A, connect to B (no session affinity): the shared token key makes it work.
    const proxy = await splitProxy(a, b, "/hubs/chat");
    let dan;
    try {
      const danUser = await user(a, "dan");
      dan = await hub(proxy, danUser);
      await dan.connection.invoke("JoinRoom", room.id);
      await aliceA.connection.invoke("SendMessage", room.id, "hi dan");
      await until(() => messages(dan).includes("hi dan"), "dan, negotiated on A and connected to B");
    } finally {
      await proxy.close();
    }

    // Nothing arrives twice, and history (one database) has every message once.
    await sleep(300);
    for (const c of [aliceA, bobB, bobA, carolA, carolB, dan]) {
      const seen = messages(c);
      assert.equal(new Set(seen).size, seen.length, `duplicates: ${JSON.stringify(seen)}`);
    }
    const history = await api(b, "GET", `/api/v1/rooms/${room.id}/messages`, { token: bob.token });
    assert.deepEqual(history.body.map((m) => m.content).sort(), ["hello from A", "hello from B", "to both of bob's devices", "welcome carol", "hi dan"].sort());

    // Each process's /metrics shows its backplane traffic (counters of its own, never summed
    // across processes): both published and received, and the lag of what they received.
    for (const app of [a, b]) {
      const text = await (await fetch(`${app.base}/metrics`)).text();
      const sample = (name) => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1] ?? 0);
      assert.ok(sample("signalr_backplane_published_total") > 0, text);
      assert.ok(sample("signalr_backplane_received_total") > 0);
      assert.ok(sample("signalr_backplane_lag_seconds_count") > 0);
      assert.equal(sample("signalr_backplane_publish_failures_total"), 0);
    }
  });
});

describe("a Redis outage on one process", () => {
  let a, b, redisProxy;
  const open = [];
  before(async () => {
    const redis = new URL(REDIS_URL);
    redisProxy = await tcpProxy(Number(redis.port || 6379));
    const env = {
      REDIS_CHANNEL_PREFIX: `ChatApp.Outage.${run}`,
      JWT_SECRET: `outage-secret-${run}-0123456789abcdef`,
    };
    a = await startApp({ ...env, REDIS_URL: `redis://127.0.0.1:${redisProxy.port}` });
    b = await startApp({ ...env, REDIS_URL });
  });
  after(async () => {
    await Promise.all(open.map((c) => c.stop().catch(() => {})));
    await Promise.all([a?.stop(), b?.stop()]);
    await redisProxy.close();
  });
  const backplane = async (app) => (await api(app, "GET", "/health")).body.backplane.status;

  it("never reports a stored message as failed, and the other process catches up", async () => {
    const alice = await user(a, "ali");
    const carol = await user(a, "car");
    const bob = await user(b, "bo");
    const room = (await api(a, "POST", "/api/v1/rooms", { token: alice.token, body: { name: `outage ${run}` } })).body;
    const aliceA = await connect(a, alice.token);
    const carolA = await connect(a, carol.token);
    const bobB = await connect(b, bob.token);
    open.push(aliceA.connection, carolA.connection, bobB.connection);
    await carolA.connection.invoke("JoinRoom", room.id);
    await bobB.connection.invoke("JoinRoom", room.id);
    const seen = await aliceA.connection.invoke("SendMessage", room.id, "before");
    await until(() => bobB.events.some((e) => e.name === "ReceiveMessage" && e.payload.id === seen.id), "before, across processes");

    redisProxy.set("refuse");
    const deadline = Date.now() + 10000;
    while ((await backplane(a)) !== "error") {
      assert.ok(Date.now() < deadline, "A notices the outage");
      await sleep(100);
    }
    // Stored, so acknowledged: the sender is not told to resend (which would duplicate it).
    const during = await aliceA.connection.invoke("SendMessage", room.id, "during the outage");
    assert.equal(during.content, "during the outage");
    await until(() => carolA.events.some((e) => e.name === "ReceiveMessage" && e.payload.id === during.id), "members on the same process get it live");
    await sleep(300);
    assert.ok(!bobB.events.some((e) => e.name === "ReceiveMessage" && e.payload.id === during.id), "B could not be reached");

    redisProxy.set("pass");
    while ((await backplane(a)) !== "ok") {
      assert.ok(Date.now() < deadline + 20000, "A recovers");
      await sleep(100);
    }
    const missed = await bobB.connection.invoke("GetMessagesAfter", room.id, seen.id);
    assert.deepEqual(missed.map((m) => m.content), ["during the outage"]);
    const rest = await api(b, "GET", `/api/v1/rooms/${room.id}/messages?after=${seen.id}`, { token: bob.token });
    assert.deepEqual(rest.body, missed);
    const history = await api(b, "GET", `/api/v1/rooms/${room.id}/messages`, { token: bob.token });
    assert.deepEqual(history.body.map((m) => m.content), ["during the outage", "before"], "stored once");
  });
});

describe("limits shared by every process", () => {
  let a, b;
  before(async () => {
    const env = {
      REDIS_URL,
      REDIS_CHANNEL_PREFIX: `ChatApp.Limits.${run}`,
      JWT_SECRET: `limits-secret-${run}-0123456789abcdef`,
      LOGIN_RATE_PER_NAME: "3/60",
      SEND_MESSAGE_RATE: "3/60",
    };
    a = await startApp(env);
    b = await startApp(env);
  });
  after(async () => { await Promise.all([a?.stop(), b?.stop()]); });

  it("counts login guesses and messages across processes", async () => {
    const target = await user(a, "target");
    const guess = (app) => api(app, "POST", "/api/v1/auth/login", { body: { userName: target.userName, password: "wrong guess" } });
    assert.deepEqual([(await guess(a)).status, (await guess(b)).status, (await guess(a)).status, (await guess(b)).status], [401, 401, 401, 429]);

    const sender = await user(a, "sender");
    const room = (await api(a, "POST", "/api/v1/rooms", { token: sender.token, body: { name: `limits ${run}` } })).body;
    const onA = await connect(a, sender.token);
    const onB = await connect(b, sender.token);
    try {
      await onA.connection.invoke("SendMessage", room.id, "1");
      await onB.connection.invoke("SendMessage", room.id, "2");
      await onA.connection.invoke("SendMessage", room.id, "3");
      await assert.rejects(onB.connection.invoke("SendMessage", room.id, "4"), /Too many messages/);
    } finally {
      await onA.connection.stop();
      await onB.connection.stop();
    }
  });
});
