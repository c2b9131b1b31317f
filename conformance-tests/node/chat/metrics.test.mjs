// /metrics and the request log of the real chat-app binary, driven by the official client
// over every transport. Run by `cargo test -p chat-app --test e2e metrics` with CHAT_APP_BIN
// and CHAT_DATABASE_URL set.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { readFileSync } from "node:fs";
import { api, connect, run, sleep, startApp, until, user } from "./helpers.mjs";

/** Prometheus text format 0.0.4 as [{name, labels, value}]; throws on a line it cannot read. */
function parse(text) {
  const series = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not Prometheus text: ${line}`);
    const labels = {};
    for (const l of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    series.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return series;
}

/** The sum of the series called `name` whose labels include `labels` (0 when there is none). */
function value(series, name, labels = {}) {
  return series
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
}

async function scrapeText(app, headers = {}) {
  const response = await fetch(`${app.base}/metrics`, { headers });
  assert.equal(response.status, 200);
  assert.ok(response.headers.get("content-type").startsWith("text/plain; version=0.0.4"), response.headers.get("content-type"));
  return response.text();
}

const scrape = async (app) => parse(await scrapeText(app));

/** Scrapes until `check` holds (the server records a close or a completion as it handles it). */
async function scrapeUntil(app, check, what, ms = 5000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const series = await scrape(app);
    if (check(series)) return series;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** An OpenAI-compatible provider that streams a short reply with a usage chunk, or fails
 *  with HTTP 500 when the prompt says [http500]. */
async function startProvider() {
  const requests = [];
  const server = http.createServer(async (req, res) => {
    let raw = "";
    for await (const piece of req) raw += piece;
    const body = JSON.parse(raw);
    requests.push(body);
    if (body.messages[body.messages.length - 1].content.includes("[http500]")) {
      res.writeHead(500, { "content-type": "application/json" });
      return res.end('{"error":{"message":"boom"}}');
    }
    res.writeHead(200, { "content-type": "text/event-stream" });
    for (const text of ["Hi", " there"]) res.write(`data: ${JSON.stringify({ choices: [{ delta: { content: text } }] })}\n\n`);
    res.write(`data: ${JSON.stringify({ choices: [], usage: { prompt_tokens: 21, completion_tokens: 4, total_tokens: 25 } })}\n\n`);
    res.end("data: [DONE]\n\n");
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}/v1`,
    requests,
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); }),
  };
}

const TRANSPORTS = [["WebSockets", "web_sockets"], ["ServerSentEvents", "server_sent_events"], ["LongPolling", "long_polling"]];
const DURATION = "signalr_server_connection_duration_seconds_count";
const ACTIVE = "signalr_server_active_connections";
const INVOCATIONS = "signalr_server_invocations_total";
const REQUESTS = "http_server_request_duration_seconds_count";

describe("chat-app's /metrics and request log", () => {
  let app, provider, alice, bob, room;
  const open = [];
  before(async () => {
    provider = await startProvider();
    app = await startApp({ RUST_LOG: "info", OPENAI_API_KEY: "test-key", OPENAI_BASE_URL: provider.url, OPENAI_MODEL: "fake-model" });
    alice = await user(app, "malice");
    bob = await user(app, "mbob");
    room = (await api(app, "POST", "/api/v1/rooms", { token: alice.token, body: { name: `metrics ${run}` } })).body;
  });
  after(async () => {
    await Promise.all(open.map((c) => c.stop().catch(() => {})));
    await app?.stop();
    await provider?.close();
  });

  for (const [transport, label] of TRANSPORTS) {
    it(`counts connections, their duration and invocations over ${transport}`, async () => {
      const transportIs = { signalr_transport: label };
      const a = await connect(app, alice.token, transport);
      const b = await connect(app, bob.token, transport);
      open.push(a.connection, b.connection);
      let m = await scrape(app);
      assert.equal(value(m, ACTIVE, transportIs), 2);
      assert.equal(value(m, DURATION, transportIs), 0);

      // One scrape is not one instant: the exporter reads gauges before it drains histograms,
      // so a close that lands between the two shows in the duration and not yet in the gauge.
      // Both are waited for together.
      await b.connection.stop();
      m = await scrapeUntil(
        app,
        (m) => value(m, DURATION, transportIs) === 1 && value(m, ACTIVE, transportIs) === 1,
        "the first connection's duration, and one connection left",
      );
      assert.equal(value(m, DURATION, { ...transportIs, signalr_connection_status: "normal_closure" }), 1);

      // A method the hub does not have is counted under `_unknown`, never under the name sent.
      const unknown = { signalr_method: "_unknown", signalr_invocation_outcome: "unknown_method" };
      const unknownBefore = value(m, INVOCATIONS, unknown);
      const made_up = `NoSuchMethod_${run}_${label}`;
      await assert.rejects(a.connection.invoke(made_up, 1));
      m = await scrapeUntil(app, (m) => value(m, INVOCATIONS, unknown) === unknownBefore + 1, "the unknown method's count");
      // Registered methods are counted by name and outcome.
      const ok = { signalr_method: "OnlineMembers", signalr_invocation_outcome: "ok" };
      const okBefore = value(m, INVOCATIONS, ok);
      await a.connection.invoke("OnlineMembers", room.id);
      const failed = { signalr_method: "GetMessagesAfter", signalr_invocation_outcome: "error" };
      const failedBefore = value(m, INVOCATIONS, failed);
      await assert.rejects(a.connection.invoke("GetMessagesAfter", 999999999, 0), /Join the room first/);
      m = await scrapeUntil(app, (m) => value(m, INVOCATIONS, ok) === okBefore + 1 && value(m, INVOCATIONS, failed) === failedBefore + 1, "the named methods' counts");
      assert.ok(value(m, "signalr_server_invocation_duration_seconds_count", ok) >= 1);
      // The three invocations (a read is counted once its batch is handled, which may be
      // after the completion went out).
      m = await scrapeUntil(app, (m) => value(m, "signalr_server_messages_received_total", transportIs) >= 3, "the messages received");
      assert.ok(value(m, "signalr_server_bytes_received_total", transportIs) > 0);
      assert.ok(value(m, "signalr_server_messages_sent_total", transportIs) >= 3);
      assert.ok(value(m, "signalr_server_bytes_sent_total", transportIs) > 0);
      assert.ok(!m.some((s) => Object.values(s.labels).includes(made_up)), "a name a client sent became a label");

      await a.connection.stop();
      m = await scrapeUntil(
        app,
        (m) => value(m, DURATION, transportIs) === 2 && value(m, ACTIVE, transportIs) === 0,
        "the second connection's duration, and none left",
      );
    });
  }

  it("counts assistant replies, failures and tokens", async () => {
    const a = await connect(app, alice.token, "WebSockets", ["AssistantError"]);
    open.push(a.connection);
    const room_ = { kind: "room" };
    await a.connection.invoke("SendMessage", room.id, "@gpt hello");
    await until(() => a.events.some((e) => e.name === "ReceiveMessage" && e.payload.userName === "gpt"), "the reply");
    let m = await scrapeUntil(app, (m) => value(m, "chat_assistant_requests_total", { ...room_, outcome: "ok" }) === 1, "the reply's count");
    assert.equal(provider.requests[0].stream_options?.include_usage, true, "usage is asked for");
    assert.equal(value(m, "chat_assistant_tokens_total", { type: "input" }), 21);
    assert.equal(value(m, "chat_assistant_tokens_total", { type: "output" }), 4);

    await a.connection.invoke("SendMessage", room.id, "@gpt [http500]");
    await until(() => a.events.some((e) => e.name === "AssistantError"), "the failure notice");
    m = await scrapeUntil(app, (m) => value(m, "chat_assistant_failures_total", { ...room_, reason: "http_status" }) === 1, "the failure's count");
    assert.equal(value(m, "chat_assistant_requests_total", { ...room_, outcome: "error" }), 1);
    assert.equal(value(m, "chat_assistant_duration_seconds_count", room_), 2);
    assert.equal(value(m, "chat_assistant_in_flight"), 0);
  });

  it("labels HTTP requests by route template and keeps query strings out of metrics and logs", async () => {
    const secret = `leak${run}secret`;
    assert.equal((await fetch(`${app.base}/api/v1/rooms/987654321/messages?access_token=${secret}`)).status, 401);
    assert.equal((await fetch(`${app.base}/no/such/path/5550123?access_token=${secret}`)).status, 404);
    const negotiate = await fetch(`${app.base}/hubs/chat/negotiate?negotiateVersion=1&access_token=${secret}`, { method: "POST" });
    assert.equal(negotiate.status, 401);
    const text = await scrapeText(app);
    const m = parse(text);
    const labelled = (route, status, method = "GET") =>
      value(m, REQUESTS, { http_request_method: method, http_route: route, http_response_status_code: status });
    assert.equal(labelled("/api/v1/rooms/{id}/messages", "401"), 1);
    assert.equal(labelled("_unmatched", "404"), 1);
    assert.equal(labelled("/hubs/chat/negotiate", "401", "POST"), 1);
    // Every transport's negotiate and connection requests so far.
    assert.ok(labelled("/hubs/chat/negotiate", "200", "POST") >= 6);
    assert.ok(value(m, REQUESTS, { http_route: "/hubs/chat" }) >= 6);
    assert.ok(value(m, REQUESTS, { http_route: "/api/v1/auth/register", http_response_status_code: "201" }) >= 2);
    for (const needle of [secret, "access_token", "987654321", "5550123", alice.token, bob.token]) {
      assert.ok(!text.includes(needle), `/metrics shows ${needle === secret ? "a query string" : needle}`);
    }
    // The database pool, sampled at the scrape: SQLite's one connection.
    assert.equal(value(m, "chat_db_pool_max_size"), 1);
    assert.equal(value(m, "chat_db_pool_size"), 1);
    assert.ok(value(m, "chat_db_pool_idle") <= 1);

    const logged = "path=/api/v1/rooms/987654321/messages";
    await until(() => app.stderr().includes(logged), "the request's log line");
    const line = app.stderr().split("\n").find((l) => l.includes(logged));
    for (const part of [/ INFO /, /method=GET/, /status=401/, /latency_ms=\d/]) assert.match(line, part);
    assert.match(app.stderr(), /path=\/hubs\/chat\/negotiate\b.*status=401/);
    assert.ok(!app.stderr().includes(secret), "a query string reached the log");
  });

  it("logs no access token of a client that sent it in the query (WebSockets, SSE)", async () => {
    // The transport tests above connected with both tokens in the query string.
    for (const token of [alice.token, bob.token]) assert.ok(!app.stderr().includes(token), "an access token reached the log");
    assert.ok(!app.stderr().includes("access_token"));
    assert.match(app.stderr(), /path=\/hubs\/chat\}.*status=101/);
  });
});

/** Metric families this single-process run on SQLite does not cause: no Redis (scaleout.test.mjs
 *  checks the backplane's), no refused
 *  handshake, no slow client, no database fault. */
const NOT_CAUSED_HERE = [
  /^signalr_backplane_/, /^signalr_server_handshake_refusals_total$/, /^signalr_server_slow_client_closes_total$/, /^chat_db_errors_total$/,
  // The provider here is unreachable, so it reports no usage (the first suite counts tokens).
  /^chat_assistant_tokens_total$/,
];

describe("the Grafana dashboard", () => {
  it("queries metrics under the names the service exports", async () => {
    const dashboard = JSON.parse(readFileSync(new URL("../../../deploy/grafana/signalr-chat.json", import.meta.url)));
    const family = (name) => name.replace(/_(bucket|count|sum)$/, "");
    const queried = new Set();
    for (const panel of dashboard.panels) {
      for (const target of panel.targets ?? []) for (const m of target.expr.matchAll(/([a-zA-Z_:][a-zA-Z0-9_:]*)\{/g)) queried.add(family(m[1]));
    }
    assert.ok(queried.size >= 20, [...queried].join(" "));
    const app = await startApp({ RUST_LOG: "warn", OPENAI_API_KEY: "test-key", OPENAI_BASE_URL: "http://127.0.0.1:9/v1", ASSISTANT_TIMEOUT_SECS: "2" });
    try {
      // Cause what one process can: connections over each transport, calls, a refusal, a
      // failed assistant reply (nothing listens on port 9).
      const someone = await user(app, "dash");
      const room = (await api(app, "POST", "/api/v1/rooms", { token: someone.token, body: { name: `dash ${run}` } })).body;
      for (const [transport] of TRANSPORTS) {
        const c = await connect(app, someone.token, transport, ["AssistantError"]);
        await c.connection.invoke("OnlineMembers", room.id);
        if (transport === "WebSockets") {
          await c.connection.invoke("SendMessage", room.id, "@gpt are you there");
          await until(() => c.events.some((e) => e.name === "AssistantError"), "the assistant's failure", 5000);
        }
        await c.connection.stop();
      }
      assert.equal((await fetch(`${app.base}/hubs/chat/negotiate?negotiateVersion=1`, { method: "POST", headers: { authorization: "Bearer forged" } })).status, 401);
      const exported = new Set((await scrapeUntil(app, (m) => value(m, "chat_assistant_requests_total") === 1, "the failed reply")).map((s) => family(s.name)));
      for (const name of queried) {
        if (NOT_CAUSED_HERE.some((pattern) => pattern.test(name))) continue;
        assert.ok(exported.has(name), `the dashboard queries ${name}, which /metrics does not show`);
      }
    } finally {
      await app.stop();
    }
  });
});

describe("who may read /metrics", () => {
  it("needs the bearer token when METRICS_TOKEN is set", async () => {
    const token = `scrape-${run}-0123456789`;
    const app = await startApp({ METRICS_TOKEN: token });
    try {
      for (const headers of [{}, { authorization: `Bearer ${token}x` }, { authorization: token }, { authorization: `Basic ${token}` }]) {
        const refused = await fetch(`${app.base}/metrics`, { headers });
        assert.equal(refused.status, 401, JSON.stringify(headers));
        assert.match(refused.headers.get("www-authenticate"), /^Bearer/);
        assert.ok(!(await refused.text()).includes("signalr_"));
      }
      const text = await scrapeText(app, { authorization: `Bearer ${token}` });
      assert.ok(text.includes("chat_db_pool_max_size 1"));
      assert.ok(!app.stderr().includes(token));
    } finally {
      await app.stop();
    }
  });

  it("is off in production without a token", async () => {
    const app = await startApp({ APP_ENV: "production", JWT_SECRET: `production-secret-${run}-0123456789abcdef` });
    try {
      assert.equal((await fetch(`${app.base}/metrics`)).status, 404);
      assert.equal((await fetch(`${app.base}/health/live`)).status, 200);
    } finally {
      await app.stop();
    }
  });
});
