// The @gpt assistant end to end, against a fake provider this test starts: a real HTTP server
// speaking the streaming chat-completions wire format, scripted by markers in the prompt.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { api, connect, sleep, startApp, until, user } from "./helpers.mjs";

const CHUNKS = ["Hello", " there", ", humans", "!"];

/** The fake provider. Markers in the last user message pick its behaviour. */
async function startProvider() {
  const requests = [];
  let active = 0;
  let maxActive = 0;
  const server = http.createServer(async (req, res) => {
    let raw = "";
    for await (const piece of req) raw += piece;
    const body = JSON.parse(raw);
    const record = { body, authorization: req.headers.authorization, url: req.url, closedEarly: false, finished: false };
    requests.push(record);
    active++;
    maxActive = Math.max(maxActive, active);
    res.on("close", () => { active--; if (!record.finished) record.closedEarly = true; });
    const prompt = body.messages[body.messages.length - 1].content;
    const chunk = (text) => `data: ${JSON.stringify({ choices: [{ delta: { content: text } }] })}\n\n`;
    if (prompt.includes("[http500]")) {
      res.writeHead(500, { "content-type": "application/json" });
      record.finished = true;
      return res.end('{"error":{"message":"boom"}}');
    }
    res.writeHead(200, { "content-type": "text/event-stream" });
    res.write(`data: ${JSON.stringify({ choices: [{ delta: { role: "assistant" } }] })}\n\n`);
    const delay = prompt.includes("[slow]") ? 100 : prompt.includes("[long]") ? 50 : 5;
    const count = prompt.includes("[long]") ? 100 : CHUNKS.length;
    for (let i = 0; i < count; i++) {
      if (res.destroyed) return;
      res.write(chunk(CHUNKS[i % CHUNKS.length]));
      await sleep(delay);
      if (i === 0 && prompt.includes("[malformed]")) { record.finished = true; return res.end("data: {oops\n\n"); }
      if (i === 0 && prompt.includes("[cut]")) { record.finished = true; return res.socket.destroy(); }
      if (i === 0 && prompt.includes("[stall]")) { await sleep(3000); record.finished = true; return res.end(); }
    }
    res.write("data: [DONE]\n\n");
    record.finished = true;
    res.end();
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}/v1`,
    requests,
    maxActive: () => maxActive,
    resetMax: () => { maxActive = active; },
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); }),
  };
}

const EVENTS = ["ReceiveMessageChunk", "AssistantError"];

describe("the @gpt assistant", () => {
  let provider;
  let app;
  const open = [];
  const connected = async (who, transport) => {
    const c = await connect(app, who.token, transport, EVENTS);
    open.push(c.connection);
    return c;
  };
  const room = async (owner, name) => (await api(app, "POST", "/api/v1/rooms", { token: owner.token, body: { name } })).body;
  const ofType = (c, name) => c.events.filter((e) => e.name === name).map((e) => e.payload);
  const gptMessages = (c) => ofType(c, "ReceiveMessage").filter((m) => m.userName === "gpt");

  before(async () => {
    provider = await startProvider();
    app = await startApp({
      OPENAI_API_KEY: "test-key",
      OPENAI_BASE_URL: provider.url,
      OPENAI_MODEL: "fake-model",
      ASSISTANT_SYSTEM_PROMPT: "You are the test assistant.",
      ASSISTANT_CONCURRENCY: "2",
      ASSISTANT_RATE_PER_MINUTE: "5",
      ASSISTANT_TIMEOUT_SECS: "1",
    });
  });
  after(async () => {
    await Promise.all(open.map((c) => c.stop().catch(() => {})));
    await app.stop();
    await provider.close();
  });

  it("streams the reply to everyone in the room, in order, then stores it", async () => {
    const alice = await user(app, "ann");
    const bob = await user(app, "ben");
    const general = await room(alice, "gpt room");
    const a = await connected(alice, "WebSockets");
    const b = await connected(bob, "LongPolling");
    await b.connection.invoke("JoinRoom", general.id);
    await a.connection.invoke("SendMessage", general.id, "some context first");
    await a.connection.invoke("SendMessage", general.id, "@gpt say hello");
    await until(() => gptMessages(a).length === 1 && gptMessages(b).length === 1, "the stored reply");
    for (const side of [a, b]) {
      const chunks = ofType(side, "ReceiveMessageChunk");
      assert.deepEqual(chunks.map((c) => c.delta), CHUNKS, "same chunks, same order");
      assert.ok(chunks.every((c) => c.roomId === general.id && c.messageId === chunks[0].messageId));
      assert.equal(gptMessages(side)[0].content, CHUNKS.join(""));
    }
    const history = await api(app, "GET", `/api/v1/rooms/${general.id}/messages?limit=1`, { token: bob.token });
    assert.equal(history.body[0].content, CHUNKS.join(""));
    assert.equal(history.body[0].userName, "gpt");

    // What the provider was asked: model, streaming, system prompt, then the room's history.
    const request = provider.requests.at(-1);
    assert.equal(request.url, "/v1/chat/completions");
    assert.equal(request.authorization, "Bearer test-key");
    assert.equal(request.body.model, "fake-model");
    assert.equal(request.body.stream, true);
    assert.deepEqual(request.body.messages, [
      { role: "system", content: "You are the test assistant." },
      { role: "user", content: `${alice.userName}: some context first` },
      { role: "user", content: `${alice.userName}: @gpt say hello` },
    ]);
  });

  it("ends each kind of fault with an error notice, and the next mention works", async () => {
    const carl = await user(app, "carl");
    const r = await room(carl, "faults");
    const c = await connected(carl);
    for (const fault of ["[http500]", "[malformed]", "[cut]", "[stall]"]) {
      const before = ofType(c, "AssistantError").length;
      await c.connection.invoke("SendMessage", r.id, `@gpt ${fault}`);
      await until(() => ofType(c, "AssistantError").length === before + 1, `notice for ${fault}`, 8000);
      const notice = ofType(c, "AssistantError").at(-1);
      assert.equal(notice.roomId, r.id);
      assert.ok(notice.error.length > 0, fault);
    }
    assert.equal(gptMessages(c).length, 0, "no broken reply was stored");
    await c.connection.invoke("SendMessage", r.id, "@gpt are you ok?");
    await until(() => gptMessages(c).length === 1, "a reply after the faults");
    assert.equal((await api(app, "GET", "/health")).status, 200);
  });

  it("handles mentions in many rooms concurrently, within the limit", async () => {
    const dora = await user(app, "dora");
    const rooms = [await room(dora, "c1"), await room(dora, "c2"), await room(dora, "c3")];
    const d = await connected(dora);
    provider.resetMax();
    const started = Date.now();
    await Promise.all(rooms.map((r) => d.connection.invoke("SendMessage", r.id, "@gpt [slow]")));
    await until(() => gptMessages(d).length === 3, "three replies", 10000);
    assert.equal(provider.maxActive(), 2, "two at a time (ASSISTANT_CONCURRENCY=2)");
    // Three replies of ~0.4 s each, two at a time: well under three in a row.
    assert.ok(Date.now() - started < 1200 + 800, `took ${Date.now() - started} ms`);
  });

  it("limits how often one user can ask, and tells only them", async () => {
    const eve = await user(app, "eve");
    const flo = await user(app, "flo");
    const r = await room(eve, "flood");
    const e = await connected(eve);
    const f = await connected(flo);
    await f.connection.invoke("JoinRoom", r.id);
    for (let i = 0; i < 6; i++) await e.connection.invoke("SendMessage", r.id, `@gpt [http500] ${i}`);
    await until(() => ofType(e, "AssistantError").length === 6, "six notices", 8000);
    assert.ok(ofType(e, "AssistantError").some((n) => /Too many @gpt requests/.test(n.error)), "the sixth is refused by the rate limit");
    await sleep(200);
    assert.equal(ofType(f, "AssistantError").length, 0, "the room sees none of eve's notices");
  });

  it("streams AskAssistant to the caller only, and cancelling closes the upstream request", async () => {
    const fay = await user(app, "fay");
    const gus = await user(app, "gus");
    const r = await room(fay, "ask");
    const f = await connected(fay);
    const g = await connected(gus);
    await g.connection.invoke("JoinRoom", r.id);
    const items = await new Promise((resolve, reject) => {
      const got = [];
      f.connection.stream("AskAssistant", r.id, "hello there").subscribe({
        next: (x) => got.push(x), complete: () => resolve(got), error: reject,
      });
    });
    assert.deepEqual(items, CHUNKS);
    assert.equal(ofType(g, "ReceiveMessageChunk").length, 0, "nobody else sees it");
    assert.equal(provider.requests.at(-1).body.messages.at(-1).content, `${fay.userName}: hello there`);

    const got = [];
    const subscription = f.connection.stream("AskAssistant", r.id, "[long] story").subscribe({
      next: (x) => got.push(x), complete: () => {}, error: () => {},
    });
    await until(() => got.length >= 3, "first chunks");
    const request = provider.requests.at(-1);
    subscription.dispose();
    await until(() => request.closedEarly, "the upstream request to close", 3000);
    assert.ok(!request.finished);
  });
});

describe("the assistant without a key", () => {
  it("tells the requester alone, stores nothing, and ignores addresses", async () => {
    const app = await startApp({ OPENAI_API_KEY: "" });
    try {
      const hal = await user(app, "hal");
      const ida = await user(app, "ida");
      const r = (await api(app, "POST", "/api/v1/rooms", { token: hal.token, body: { name: "nokey" } })).body;
      const h = await connect(app, hal.token, "WebSockets", EVENTS);
      const i = await connect(app, ida.token, "WebSockets", EVENTS);
      await i.connection.invoke("JoinRoom", r.id);
      // An address is no mention: 15 of them, and not one notice or reply.
      for (let n = 0; n < 15; n++) await h.connection.invoke("SendMessage", r.id, `mail bob@gpt.example.com #${n}`);
      await h.connection.invoke("SendMessage", r.id, "@gpt hello?");
      await until(() => h.events.some((e) => e.name === "AssistantError"), "the notice");
      const notices = h.events.filter((e) => e.name === "AssistantError");
      assert.equal(notices.length, 1, "one notice, for the mention only");
      assert.match(notices[0].payload.error, /not available.*OPENAI_API_KEY/);
      await sleep(200);
      assert.equal(i.events.filter((e) => e.name === "AssistantError").length, 0, "the room does not see it");
      const history = await api(app, "GET", `/api/v1/rooms/${r.id}/messages?limit=200`, { token: hal.token });
      assert.equal(history.body.length, 16);
      assert.ok(!history.body.some((m) => m.userName === "gpt"), "nothing stored for the assistant");
      const asked = new Promise((resolve, reject) => {
        h.connection.stream("AskAssistant", r.id, "hi").subscribe({ next: () => {}, complete: resolve, error: reject });
      });
      await assert.rejects(asked, /not available/);
      await h.connection.stop();
      await i.connection.stop();
    } finally {
      await app.stop();
    }
  });
});
