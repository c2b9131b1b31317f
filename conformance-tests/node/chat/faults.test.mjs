// chat-app is honest under database faults: PostgreSQL behind a proxy this test can silence.
// Run by `cargo test -p chat-app --test e2e` with CHAT_DATABASE_URL naming a PostgreSQL database.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { DATABASE_URL, api, connect, startApp, tcpProxy, until, user } from "./helpers.mjs";

const database = new URL(DATABASE_URL);
const timed = async (what) => {
  const started = Date.now();
  const result = await what();
  return { result, ms: Date.now() - started };
};

describe("a database outage", () => {
  let proxy, app;
  before(async () => {
    proxy = await tcpProxy(Number(database.port || 5432));
    const url = new URL(DATABASE_URL);
    url.host = `127.0.0.1:${proxy.port}`;
    app = await startApp({ DATABASE_URL: url.toString(), DATABASE_ACQUIRE_TIMEOUT_MS: "1000" });
  });
  after(async () => {
    await app.stop();
    await proxy.close();
  });

  it("is reported within 2 s with a reason, and every call answers within the acquire timeout", async () => {
    const alice = await user(app, "outage");
    const room = (await api(app, "POST", "/api/v1/rooms", { token: alice.token, body: { name: "outage" } })).body;
    const a = await connect(app, alice.token);
    try {
      await a.connection.invoke("SendMessage", room.id, "before");
      // The database host stops answering: open connections stall, new ones hang.
      proxy.set("blackhole");
      const health = await timed(() => api(app, "GET", "/health"));
      assert.ok(health.ms < 2000, `/health took ${health.ms} ms`);
      assert.equal(health.result.status, 503);
      assert.equal(health.result.body.database.status, "error");
      assert.match(health.result.body.database.error, /no answer within|no connection became available|unreachable/);
      const ready = await timed(() => api(app, "GET", "/health/ready"));
      assert.ok(ready.ms < 2000, `/health/ready took ${ready.ms} ms`);
      assert.equal(ready.result.status, 503);
      assert.match(ready.result.body.reason, /^database: /);
      const rest = await timed(() => api(app, "GET", "/api/v1/rooms", { token: alice.token }));
      assert.equal(rest.result.status, 503);
      assert.deepEqual(rest.result.body, { error: "The database is unavailable." });
      assert.ok(rest.ms < 3500, `REST took ${rest.ms} ms`);
      const send = await timed(() => a.connection.invoke("SendMessage", room.id, "during").then(() => "sent", (e) => e.message));
      assert.match(send.result, /unavailable; nothing was saved/);
      assert.ok(send.ms < 3500, `SendMessage took ${send.ms} ms`);
      assert.equal((await api(app, "GET", "/health/live")).status, 200, "alive all along");

      // The database comes back (its stalled connections are reset): so does the service.
      proxy.set("pass");
      proxy.cut();
      const deadline = Date.now() + 10000;
      while ((await api(app, "GET", "/health")).status !== 200) {
        assert.ok(Date.now() < deadline, "healthy again");
        await new Promise((r) => setTimeout(r, 100));
      }
      await a.connection.invoke("SendMessage", room.id, "after");
      const history = await api(app, "GET", `/api/v1/rooms/${room.id}/messages`, { token: alice.token });
      assert.deepEqual(history.body.map((m) => m.content), ["after", "before"], "nothing reported failed was stored");
    } finally {
      await a.connection.stop();
    }
  });
});
