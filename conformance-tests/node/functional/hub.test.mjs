// TestHub's contract over every transport and protocol pair: results, fire-and-forget calls,
// server-to-client calls, streams both ways, cancellation, error texts, per-protocol values,
// restarts and client results asked for over HTTP.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { signalR, startServer, hub, nextClose, withTimeout, deferred, PAIRS, pairName } from "./support.mjs";

const GREETING = "你好，世界！";

/** Streams `method` and resolves with the error it ends with; an item or a completion fails. */
function streamFailure(connection, method, ...args) {
  const failed = deferred();
  connection.stream(method, ...args).subscribe({
    next: () => failed.reject(new Error("no item was expected")),
    complete: () => failed.reject(new Error("no completion was expected")),
    error: (e) => failed.resolve(e),
  });
  return withTimeout(failed.promise, 5000, `${method} to fail`);
}

describe("TestHub over every transport and protocol", () => {
  let server;
  before(async () => { server = await startServer(); });
  after(async () => { await server.stop(); });

  for (const pair of PAIRS) {
    describe(pairName(pair), () => {
      const open = async (configure) => {
        const connection = hub(`${server.base}/testhub`, pair);
        if (configure) configure(connection);
        const closed = nextClose(connection);
        await withTimeout(connection.start(), 5000, "start");
        return { connection, closed };
      };
      const finish = async ({ connection, closed }) => {
        await withTimeout(connection.stop(), 5000, "stop");
        assert.equal(await closed, undefined, "the connection closes cleanly");
      };

      it("a call returns the text it was given", async () => {
        const c = await open();
        assert.equal(await c.connection.invoke("Echo", GREETING), GREETING);
        await finish(c);
      });

      it("a fire-and-forget call completes without a result", async () => {
        const c = await open();
        assert.equal(await c.connection.send("Echo", GREETING), undefined);
        // The connection still answers afterwards: the send left nothing pending.
        assert.equal(await c.connection.invoke("Echo", "after"), "after");
        await finish(c);
      });

      it("an object sent with send comes back as a client call with the same fields", async () => {
        const got = deferred();
        const c = await open((connection) => connection.on("CustomObject", (value) => got.resolve(value)));
        await c.connection.send("SendCustomObject", { Name: "test", Value: 42 });
        const value = await withTimeout(got.promise, 5000, "CustomObject");
        assert.equal(value.Name, "test");
        assert.equal(value.Value, 42);
        await finish(c);
      });

      it("the server calls a client handler registered in any letter case", async () => {
        const got = deferred();
        const c = await open((connection) => connection.on("mEsSaGe", (text) => got.resolve(text)));
        await c.connection.invoke("InvokeWithString", "你好 SignalR！");
        assert.equal(await withTimeout(got.promise, 5000, "Message"), "你好 SignalR！");
        await finish(c);
      });

      it("a stream delivers its items in order, then completes", async () => {
        const c = await open();
        const items = [];
        const done = deferred();
        c.connection.stream("Stream").subscribe({
          next: (item) => items.push(item),
          complete: () => done.resolve(),
          error: (e) => done.reject(e),
        });
        await withTimeout(done.promise, 5000, "stream completion");
        assert.deepEqual(items, ["a", "b", "c"]);
        await finish(c);
      });

      it("an empty stream completes with no items", async () => {
        const c = await open();
        const items = [];
        const done = deferred();
        c.connection.stream("EmptyStream").subscribe({
          next: (item) => items.push(item),
          complete: () => done.resolve(),
          error: (e) => done.reject(e),
        });
        await withTimeout(done.promise, 5000, "stream completion");
        assert.deepEqual(items, []);
        await finish(c);
      });

      it("disposing a subscription cancels the stream on the server", async () => {
        const cancelled = deferred();
        const c = await open((connection) => connection.on("StreamCanceled", () => cancelled.resolve()));
        const subscription = c.connection.stream("InfiniteStream").subscribe({
          next: () => {}, complete: () => {}, error: (e) => cancelled.reject(e),
        });
        // Wait until the server is running the method before cancelling it.
        assert.equal(await c.connection.invoke("Echo", "ready"), "ready");
        subscription.dispose();
        await withTimeout(cancelled.promise, 5000, "StreamCanceled");
        await finish(c);
      });

      it("a method that throws rejects the call with its exception text", async () => {
        const c = await open();
        await assert.rejects(c.connection.invoke("ThrowException", "An error occurred."), {
          message: "An unexpected error occurred invoking 'ThrowException' on the server. InvalidOperationException: An error occurred.",
        });
        await finish(c);
      });

      it("a streaming method that throws fails the stream with its exception text", async () => {
        const c = await open();
        const error = await streamFailure(c.connection, "StreamThrowException", "An error occurred.");
        assert.equal(error.message, "An unexpected error occurred invoking 'StreamThrowException' on the server. InvalidOperationException: An error occurred.");
        await finish(c);
      });

      for (const method of ["EmptyStream", "Stream"]) {
        it(`invoking the streaming method ${method} is refused`, async () => {
          const c = await open();
          await assert.rejects(c.connection.invoke(method), {
            message: `The client attempted to invoke the streaming '${method}' method with a non-streaming invocation.`,
          });
          await finish(c);
        });
      }

      it("streaming a method that does not stream is refused", async () => {
        const c = await open();
        const error = await streamFailure(c.connection, "Echo", "42");
        assert.equal(error.message, "The client attempted to invoke the non-streaming 'Echo' method with a streaming invocation.");
        await finish(c);
      });

      it("values the client sends keep their per-protocol types on the way back", async () => {
        const c = await open();
        const json = pair.protocol === "json";
        const value = {
          ByteArray: json ? "aGVsbG8=" : new Uint8Array([0x68, 0x65, 0x6c, 0x6c, 0x6f]),
          DateTime: json ? "2002-04-01T10:20:15Z" : new Date(Date.UTC(2002, 3, 1, 10, 20, 15)),
          Guid: "00010203-0405-0607-0706-050403020100",
          IntArray: [1, 2, 3, 255],
          String: "Hello, World!",
        };
        assert.deepEqual(await c.connection.invoke("EchoComplexObject", value), value);
        await finish(c);
      });

      it("values the server builds arrive in the protocol's own types", async () => {
        const c = await open();
        const json = pair.protocol === "json";
        assert.deepEqual(await c.connection.invoke("SendComplexObject"), {
          ByteArray: json ? "AQID" : new Uint8Array([1, 2, 3]),
          DateTime: json ? "2000-01-01T00:00:00Z" : new Date(Date.UTC(2000, 0, 1)),
          Guid: "00010203-0405-0607-0706-050403020100",
          IntArray: [1, 2, 3],
          String: "hello world",
        });
        await finish(c);
      });

      it("a stopped connection starts again and keeps its handlers", async () => {
        let calls = 0;
        const connection = hub(`${server.base}/testhub`, pair);
        connection.on("Message", () => { calls += 1; });
        for (let round = 1; round <= 2; round++) {
          const closed = nextClose(connection);
          await withTimeout(connection.start(), 5000, "start");
          assert.equal(await connection.invoke("Echo", GREETING), GREETING);
          await connection.invoke("InvokeWithString", "ping");
          await withTimeout(connection.stop(), 5000, "stop");
          assert.equal(await closed, undefined);
          assert.equal(calls, round, "the handler bound once is called on every run");
        }
      });

      it("an uploaded stream is read to its end", async () => {
        const c = await open();
        const subject = new signalR.Subject();
        const result = c.connection.invoke("StreamingConcat", subject);
        subject.next("Hello ");
        subject.next("world");
        subject.next("!");
        subject.complete();
        assert.equal(await withTimeout(result, 5000, "concat"), "Hello world!");
        await finish(c);
      });

      it("an upload the client ends with an error fails the call with that error", async () => {
        const c = await open();
        const subject = new signalR.Subject();
        const result = c.connection.invoke("StreamingConcat", subject);
        subject.next("Hello ");
        subject.error(new Error("Something bad"));
        await assert.rejects(withTimeout(result, 5000, "concat"), {
          message: "An unexpected error occurred invoking 'StreamingConcat' on the server. HubException: Something bad",
        });
        await finish(c);
      });

      const askOverHttp = async (connection) => {
        // With negotiation skipped the client never learns its id; ask the server for it.
        const id = connection.connectionId ?? await connection.invoke("GetCallerConnectionId");
        const response = await withTimeout(fetch(`${server.base}/clientresult/${id}`), 5000, "clientresult");
        assert.equal(response.status, 200);
        return response.text();
      };

      it("a client result reaches the HTTP endpoint that asked for it", async () => {
        const c = await open((connection) => connection.on("Result", () => 10));
        assert.equal(await askOverHttp(c.connection), "10");
        await finish(c);
      });

      it("a client handler that throws gives the asker its error text", async () => {
        const c = await open((connection) => connection.on("Result", () => { throw new Error("from callback"); }));
        assert.equal(await askOverHttp(c.connection), "Error: from callback");
        await finish(c);
      });

      it("a client without a handler answers that it gave no result", async () => {
        const c = await open();
        assert.equal(await askOverHttp(c.connection), "Client didn't provide a result.");
        await finish(c);
      });
    });
  }
});
