// Bytes and instants with the official client, as .NET's conventions have them: over
// MessagePack a Uint8Array is `bin` and a Date the timestamp extension, and both come back as
// the same JS types (also when the hub forwards the received value untouched); over JSON a
// `Binary` result is a base64 string and a `DateTime` result an ISO 8601 string.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { COMBINATIONS, startServer, started } from "./helpers.mjs";

const MILLIS = 1700000000123; // 2023-11-14T22:13:20.123Z

for (const combination of COMBINATIONS) {
  const label = `${combination.transport}, ${combination.protocol}${combination.skipNegotiation ? ", skipNegotiation" : ""}`;

  describe(`per-protocol values (${label})`, () => {
    let server;
    let connection;

    before(async () => {
      server = await startServer();
      ({ connection } = await started(server, combination));
    });
    after(async () => {
      await connection.stop().catch(() => {});
      await server.stop();
    });

    if (combination.protocol === "messagepack") {
      it("a Date and a Uint8Array forwarded untouched come back as a Date and a Uint8Array", async () => {
        const dates = [new Date(MILLIS), new Date(0), new Date(-1), new Date(Date.UTC(3000, 0, 1, 0, 0, 0, 5))];
        for (const date of dates) {
          const echoed = await connection.invoke("Echo", date);
          assert.ok(echoed instanceof Date, `${date.toISOString()} comes back as a Date`);
          assert.equal(echoed.getTime(), date.getTime());
        }
        const bytes = new Uint8Array([0, 1, 2, 254, 255]);
        const [date, bin, nested] = await connection.invoke("Echo", [dates[0], bytes, { when: dates[2] }]);
        assert.ok(date instanceof Date && bin instanceof Uint8Array && nested.when instanceof Date);
        assert.equal(date.getTime(), MILLIS);
        assert.deepEqual([...bin], [...bytes]);
        assert.equal(nested.when.getTime(), -1);
      });

      it("binds a Date to DateTime and a Uint8Array to Binary, and returns them as the same types", async () => {
        const echoed = await connection.invoke("EchoDate", new Date(MILLIS));
        assert.ok(echoed instanceof Date);
        assert.equal(echoed.getTime(), MILLIS);
        assert.equal(await connection.invoke("DateMillis", new Date(-1)), -1);
        const made = await connection.invoke("DateOf", MILLIS);
        assert.ok(made instanceof Date);
        assert.equal(made.getTime(), MILLIS);

        const bytes = await connection.invoke("EchoBinary", new Uint8Array([9, 8, 7]));
        assert.ok(bytes instanceof Uint8Array);
        assert.deepEqual([...bytes], [9, 8, 7]);
        assert.equal(await connection.invoke("BinaryHex", new Uint8Array([0, 255])), "00ff");
        const text = await connection.invoke("BinaryOf", "hi");
        assert.ok(text instanceof Uint8Array);
        assert.deepEqual([...text], [0x68, 0x69]);
      });

      it("refuses a Date outside years 0 to 9999 as a binding error and stays connected", async () => {
        await assert.rejects(connection.invoke("EchoDate", new Date(Date.UTC(10000, 0, 1))), {
          message: /^Failed to invoke 'EchoDate' due to an error on the server\./,
        });
        assert.equal(await connection.invoke("DateMillis", new Date(5)), 5);
      });
    } else {
      it("a Binary result is a base64 string and binds from one", async () => {
        assert.equal(await connection.invoke("BinaryOf", "hi"), "aGk=");
        assert.equal(await connection.invoke("EchoBinary", "AAEC/v8="), "AAEC/v8=");
        assert.equal(await connection.invoke("BinaryHex", "AP8="), "00ff");
        await assert.rejects(connection.invoke("BinaryHex", "not base64!"), {
          message: /^Failed to invoke 'BinaryHex' due to an error on the server\./,
        });
      });

      it("a DateTime result is an ISO 8601 string, and a Date (sent as its ISO text) binds", async () => {
        assert.equal(await connection.invoke("DateOf", MILLIS), "2023-11-14T22:13:20.123Z");
        const date = new Date(MILLIS);
        assert.equal(await connection.invoke("EchoDate", date), date.toISOString());
        assert.equal(await connection.invoke("DateMillis", new Date(-1)), -1);
        assert.equal(new Date(await connection.invoke("DateOf", 0)).getTime(), 0);
        await assert.rejects(connection.invoke("EchoDate", "2023-11-14T22:13:20"), {
          message: /^Failed to invoke 'EchoDate' due to an error on the server\./,
        });
      });
    }
  });
}
