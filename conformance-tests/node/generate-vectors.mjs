// Writes signalr-core/tests/vectors/official-client.json: the exact bytes the official client's
// own protocol implementations write for every message type a client sends. The Rust tests
// decode them, so our parser is checked against an independent implementation.
//
//   node generate-vectors.mjs        (after npm ci; rerun when the pinned client changes)
import { writeFileSync } from "node:fs";
import { JsonHubProtocol, MessageType, VERSION } from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

const bin = (bytes) => new Uint8Array(bytes);
const args = ["text", 42, -7, 3.25, true, false, null, [1, "two"], { a: { b: [null, 1.5] } }];

const messages = [
  ["invocation", { type: MessageType.Invocation, invocationId: "1", target: "Echo", arguments: args }],
  ["non-blocking invocation", { type: MessageType.Invocation, target: "Send", arguments: ["x"] }],
  ["invocation with headers", { type: MessageType.Invocation, invocationId: "2", target: "M", arguments: [], headers: { k: "v", trace: "1" } }],
  ["invocation with stream ids", { type: MessageType.Invocation, invocationId: "3", target: "Upload", arguments: [1], streamIds: ["4", "5"] }],
  ["stream invocation", { type: MessageType.StreamInvocation, invocationId: "6", target: "Counter", arguments: [10, 5] }],
  ["stream item", { type: MessageType.StreamItem, invocationId: "4", item: { n: 1 } }],
  ["null stream item", { type: MessageType.StreamItem, invocationId: "4", item: null }],
  ["completion with result", { type: MessageType.Completion, invocationId: "s1", result: [1, 2] }],
  ["completion with null result", { type: MessageType.Completion, invocationId: "s2", result: null }],
  ["completion with error", { type: MessageType.Completion, invocationId: "s3", error: "Client didn't provide a result." }],
  ["completion without result", { type: MessageType.Completion, invocationId: "4" }],
  ["cancel invocation", { type: MessageType.CancelInvocation, invocationId: "6" }],
  ["ping", { type: MessageType.Ping }],
  ["close", { type: MessageType.Close }],
  ["ack", { type: MessageType.Ack, sequenceId: 1234 }],
  ["sequence", { type: MessageType.Sequence, sequenceId: 70000 }],
];
const binaryOnly = [
  ["invocation with binary", { type: MessageType.Invocation, invocationId: "7", target: "Echo", arguments: [bin([0, 1, 255]), bin([])] }],
];

const hex = (data) => Buffer.from(typeof data === "string" ? Buffer.from(data, "utf8") : new Uint8Array(data)).toString("hex");
// Uint8Array is not JSON; mark it so the Rust side knows to expect MessagePack bin.
const portable = (value) => JSON.parse(JSON.stringify(value, (_, v) =>
  v instanceof Uint8Array ? { $bin: Buffer.from(v).toString("hex") } :
  (v && v.type === "Buffer" && Array.isArray(v.data)) ? { $bin: Buffer.from(v.data).toString("hex") } : v));

const vectors = [];
for (const [protocolName, protocol, list] of [
  ["json", new JsonHubProtocol(), messages],
  ["messagepack", new MessagePackHubProtocol(), [...messages, ...binaryOnly]],
]) {
  for (const [name, message] of list) {
    vectors.push({ name, protocol: protocolName, message: portable(message), hex: hex(protocol.writeMessage(message)) });
  }
}
const out = new URL("../../signalr-core/tests/vectors/official-client.json", import.meta.url);
writeFileSync(out, JSON.stringify({ client: `@microsoft/signalr ${VERSION}`, vectors }, null, 1) + "\n");
console.log(`wrote ${vectors.length} vectors to ${out.pathname}`);
