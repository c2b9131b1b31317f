// Streaming both ways, cancellation and client results with the official client.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { signalR, startServer, started, sleep, until, withTimeout } from "./helpers.mjs";

const COMBINATIONS = [
  { transport: "WebSockets", protocol: "json" },
  { transport: "WebSockets", protocol: "messagepack" },
  { transport: "LongPolling", protocol: "json" },
];

/** Collects a server stream: resolves with the items, rejects with the stream's error. */
function collect(stream) {
  const items = [];
  const done = new Promise((resolve, reject) => {
    stream.subscribe({
      next: (item) => items.push(item),
      complete: () => resolve(items),
      error: (e) => { e.items = items; reject(e); },
    });
  });
  return { items, done };
}

const toNumbers = (items) => items.map(Number);

for (const combination of COMBINATIONS) {
  describe(`streams and client results (${combination.transport}, ${combination.protocol})`, () => {
    let server;
    const open = [];
    const connect = async (methods = []) => {
      const c = await started(server, combination, methods);
      open.push(c.connection);
      return c;
    };
    before(async () => { server = await startServer(); });
    after(async () => {
      await Promise.all(open.map((c) => c.stop().catch(() => {})));
      await server.stop();
    });

    it("delivers a 1,000-item server stream complete and in order", async () => {
      const { connection } = await connect();
      const items = await withTimeout(collect(connection.stream("Counter", 1000, 0)).done, 20000, "stream");
      assert.deepEqual(toNumbers(items), Array.from({ length: 1000 }, (_, i) => i + 1));
    });

    it("delivers the items of a failing stream, then its error", async () => {
      const { connection } = await connect();
      const error = await withTimeout(collect(connection.stream("FailAfter", 5)).done, 5000, "stream").then(
        () => assert.fail("the stream should fail"),
        (e) => e,
      );
      assert.deepEqual(toNumbers(error.items), [1, 2, 3, 4, 5]);
      assert.equal(error.message, "An error occurred on the server while streaming results. HubException: the producer broke");
      assert.equal(await connection.invoke("Add", 1, 1), 2, "the connection is still usable");
    });

    it("stops the server producer promptly when the client cancels", async () => {
      const { connection } = await connect();
      const received = [];
      const subscription = connection.stream("Endless", 20).subscribe({
        next: (item) => received.push(item),
        complete: () => {},
        error: () => {},
      });
      await until(() => received.length >= 3, 5000, "first items");
      assert.equal((await connection.invoke("StreamState")).active, 1);
      const cancelledAt = Date.now();
      subscription.dispose();
      let state;
      const deadline = Date.now() + 2000;
      do {
        state = await connection.invoke("StreamState");
        if (state.active !== 0) await sleep(20);
      } while (state.active !== 0 && Date.now() < deadline);
      assert.equal(state.active, 0, "the producer is gone");
      assert.ok(Number(state.lastStopMs) - cancelledAt < 1000, `stopped ${Number(state.lastStopMs) - cancelledAt} ms after the cancel`);
      const countAtStop = received.length;
      await sleep(200);
      assert.equal(received.length, countAtStop, "no items after the cancel");
    });

    it("sums an uploaded stream", async () => {
      const { connection } = await connect();
      const subject = new signalR.Subject();
      const result = connection.invoke("Sum", subject);
      for (let i = 1; i <= 100; i++) subject.next(i);
      subject.complete();
      assert.equal(Number(await withTimeout(result, 5000, "sum")), 5050);
    });

    it("uploads a stream and streams results back in one call", async () => {
      const { connection } = await connect();
      const subject = new signalR.Subject();
      const { done } = collect(connection.stream("Doubles", subject));
      for (const n of [1, 2, 3, 4]) {
        subject.next(n);
        await sleep(5);
      }
      subject.complete();
      assert.deepEqual(toNumbers(await withTimeout(done, 5000, "doubles")), [2, 4, 6, 8]);
    });

    it("an upload stream the client fails reaches the method as an error", async () => {
      const { connection } = await connect();
      const subject = new signalR.Subject();
      const result = connection.invoke("Sum", subject);
      subject.next(1);
      subject.error(new Error("client gave up"));
      await assert.rejects(withTimeout(result, 5000, "sum"), /client gave up/);
    });

    it("round-trips a client result asked from a hub method", async () => {
      const { connection } = await connect();
      connection.on("GetAnswer", (question, n) => `${question}:${n * 2}`);
      // With one invocation slot per client (the default) this would deadlock if the waiting
      // method kept its slot.
      assert.equal(await withTimeout(connection.invoke("AskCaller", "GetAnswer", ["q", 21]), 5000, "client result"), "q:42");
    });

    it("reports a client that throws", async () => {
      const { connection } = await connect();
      connection.on("Explode", () => { throw new Error("client says no"); });
      await assert.rejects(withTimeout(connection.invoke("AskCaller", "Explode", []), 5000, "client result"), /client says no/);
      connection.on("Nothing", () => undefined);
      await assert.rejects(connection.invoke("AskCaller", "Nothing", []), /Client didn't provide a result\./);
    });

    it("asks a client from outside the hub, and fails at once when it disconnects mid-call", async () => {
      const c = await connect();
      const id = await c.connection.invoke("GetConnectionId");
      c.connection.on("Ping2", (x) => x + 1);
      const ask = (method) => fetch(`http://127.0.0.1:${server.port}/admin/ask`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ connectionId: id, method, args: [41] }),
      }).then((r) => r.json());
      assert.deepEqual(await ask("Ping2"), { result: 42 });

      c.connection.on("Hang", () => new Promise(() => {}));
      const pending = ask("Hang");
      await sleep(200);
      const stoppedAt = Date.now();
      await c.connection.stop();
      const answer = await withTimeout(pending, 3000, "the failed client result");
      assert.equal(answer.kind, "closed");
      assert.equal(answer.error, `Connection '${id}' disconnected.`);
      assert.ok(Date.now() - stoppedAt < 2000);
    });
  });
}
