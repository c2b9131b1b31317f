// Fixed-work load for instruction counts: N connections (skip-negotiation WebSockets, JSON),
// then either K sequential Echo calls on each, or K broadcasts from the first connection that
// every connection receives. Used by fixed-work.sh; prints nothing.
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL(".", import.meta.url));
const require = createRequire(`${here}/../../conformance-tests/node/package.json`);
const signalR = require("@microsoft/signalr");
const [port, n, k] = process.argv.slice(2, 5).map(Number);
const mode = process.argv[5];
const connections = [];
for (let i = 0; i < n; i++) {
  const connection = new signalR.HubConnectionBuilder()
    .withUrl(`http://127.0.0.1:${port}/hub`, { transport: signalR.HttpTransportType.WebSockets, skipNegotiation: true })
    .configureLogging(signalR.LogLevel.None)
    .build();
  await connection.start();
  connections.push(connection);
}
if (mode === "broadcast") {
  let received = 0;
  for (const connection of connections) connection.on("Msg", () => { received++; });
  for (let j = 0; j < k; j++) await connections[0].invoke("Broadcast", "hello");
  while (received < n * k) await new Promise((r) => setTimeout(r, 10));
} else {
  await Promise.all(connections.map(async (c) => { for (let j = 0; j < k; j++) await c.invoke("Echo", "hello world"); }));
}
await Promise.all(connections.map((c) => c.stop()));
