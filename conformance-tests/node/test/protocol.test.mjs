// The official client's own parsers read the exact bytes our encoder writes for every kind of
// server record (signalr-core/tests/vectors/server-records.json, pinned by a Rust test).
import { it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { JsonHubProtocol, NullLogger } from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

const file = new URL("../../../signalr-core/tests/vectors/server-records.json", import.meta.url);
const { records } = JSON.parse(readFileSync(file, "utf8"));
const parsers = { json: new JsonHubProtocol(), messagepack: new MessagePackHubProtocol() };

// The JS message objects carry empty headers / undefined ids; compare what they mean.
function normalise(value) {
  if (value instanceof Uint8Array) return { $bin: Buffer.from(value).toString("hex") };
  if (Array.isArray(value)) return value.map(normalise);
  if (value && typeof value === "object") {
    const out = {};
    for (const [k, v] of Object.entries(value)) {
      if (v === undefined) continue;
      if (k === "headers" && Object.keys(v).length === 0) continue;
      if (k === "streamIds" && Array.isArray(v) && v.length === 0) continue;
      out[k] = normalise(v);
    }
    return out;
  }
  return value;
}

// The MessagePack parser spells a plain Close as {error: null, allowReconnect: false}; the client
// treats those exactly like absent properties (`if (message.error)`, `allowReconnect ?? false`).
function closeAsMeant(message) {
  if (message.type !== 7) return message;
  const { error, allowReconnect, ...rest } = message;
  return { ...rest, ...(error ? { error } : {}), ...(allowReconnect ? { allowReconnect } : {}) };
}

function parse(protocol, bytes) {
  const input = protocol === "json" ? bytes.toString("utf8") : new Uint8Array(bytes).buffer;
  return parsers[protocol].parseMessages(input, NullLogger.instance).map(normalise).map(closeAsMeant);
}

it("has records for both protocols", () => {
  assert.ok(records.filter((r) => r.protocol === "json").length >= 12);
  assert.ok(records.filter((r) => r.protocol === "messagepack").length >= 13);
});

for (const record of records) {
  it(`the official ${record.protocol} parser reads our "${record.name}"`, () => {
    const bytes = Buffer.from(record.hex, "hex");
    assert.deepEqual(parse(record.protocol, bytes), [record.expect]);
  });
}

it("reads several of our records from one frame", () => {
  for (const protocol of ["json", "messagepack"]) {
    const mine = records.filter((r) => r.protocol === protocol);
    const joined = Buffer.concat(mine.map((r) => Buffer.from(r.hex, "hex")));
    assert.deepEqual(parse(protocol, joined), mine.map((r) => r.expect));
  }
});
