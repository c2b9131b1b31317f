// The compose stack through its load balancer, with the official @microsoft/signalr client
// (run by deploy/smoke.sh, which sets the variables below). All traffic goes through the load
// balancer; the replicas' own addresses serve only to count which one holds each connection.
import { createRequire } from "node:module";
import { execSync } from "node:child_process";
import assert from "node:assert/strict";

const require = createRequire(new URL("../../conformance-tests/node/package.json", import.meta.url));
const signalR = require("@microsoft/signalr");

const LB = process.env.SMOKE_LB;
const REPLICAS = (process.env.SMOKE_REPLICAS ?? "").split(",").filter(Boolean);
const STOP_REPLICA_1 = process.env.SMOKE_STOP_REPLICA_1;
if (!LB || REPLICAS.length !== 2 || !STOP_REPLICA_1) {
  throw new Error("SMOKE_LB, SMOKE_REPLICAS (two) and SMOKE_STOP_REPLICA_1 must be set");
}
const run = Math.random().toString(36).slice(2, 8);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(check, what, ms = 15000) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

async function request(base, method, path, { token, body } = {}) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(`${base}${path}`, { method, headers, body: body && JSON.stringify(body) });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : undefined };
}
const counts = async () =>
  Promise.all(REPLICAS.map(async (r) => (await request(r, "GET", "/health")).body.connections));

for (const [i, replica] of REPLICAS.entries()) {
  const health = (await request(replica, "GET", "/health")).body;
  assert.equal(health.backplane.status, "ok", `replica ${i + 1} is on the Redis backplane`);
  assert.equal(health.database.status, "ok", `replica ${i + 1} reaches PostgreSQL`);
}

const users = [];
for (const name of ["alice", "bob", "carol"]) {
  const r = await request(LB, "POST", "/api/v1/auth/register", { body: { userName: `${name}_${run}`, password: "smoke test password" } });
  assert.equal(r.status, 201, `register ${name}: ${JSON.stringify(r.body)}`);
  users.push({ name, token: r.body.accessToken });
}
const room = await request(LB, "POST", "/api/v1/rooms", { token: users[0].token, body: { name: `smoke ${run}` } });
assert.equal(room.status, 201);
const roomId = room.body.id;

// Two connections per transport, opened one at a time so each can be attributed to a replica.
const transports = ["WebSockets", "ServerSentEvents", "LongPolling"];
const clients = [];
for (let i = 0; i < transports.length * 2; i++) {
  const transport = transports[i % transports.length];
  const user = users[i % users.length];
  const connection = new signalR.HubConnectionBuilder()
    .withUrl(`${LB}/hubs/chat`, { accessTokenFactory: () => user.token, transport: signalR.HttpTransportType[transport] })
    .withAutomaticReconnect([0, 250, 500, 1000, 2000, 2000, 2000])
    .configureLogging(signalR.LogLevel.None)
    .build();
  const client = { transport, user: user.name, connection, received: [], reconnected: false };
  connection.on("ReceiveMessage", (m) => client.received.push(m.content));
  connection.onreconnected(() => { client.reconnected = true; });
  const before = await counts();
  await connection.start();
  await until(async () => (await counts()).some((n, r) => n > before[r]), "the new connection to show on a replica");
  const after = await counts();
  client.replica = after.findIndex((n, r) => n > before[r]) + 1;
  await connection.invoke("JoinRoom", roomId);
  clients.push(client);
}
const table = () => clients.map((c) => `${c.transport}/${c.user}@${c.replica}`).join(" ");
console.log(`connections (transport/user@replica): ${table()}`);
for (const replica of [1, 2]) {
  assert.ok(clients.some((c) => c.replica === replica), `some connection is on replica ${replica}`);
}
// Server-Sent Events and long polling only work if every request of a connection reaches the
// replica holding it: the hash on the id query parameter.
for (const c of clients.filter((c) => c.transport !== "WebSockets")) {
  assert.equal(c.connection.state, signalR.HubConnectionState.Connected, `${c.transport} stays connected`);
}

async function everyoneReceives(content, from) {
  const started = Date.now();
  await from.connection.invoke("SendMessage", roomId, content);
  await until(async () => clients.every((c) => c.received.includes(content)), `every connection to receive "${content}"`);
  return Date.now() - started;
}
const sender = clients.find((c) => c.replica === 1);
const ms = await everyoneReceives(`hello from replica 1 (${run})`, sender);
console.log(`a message sent on replica 1 reached all ${clients.length} connections on both replicas in ${ms} ms`);

// SIGTERM to replica 1: its clients get a Close with allowReconnect and come back through the
// load balancer to replica 2; nothing else is needed of them.
const onOne = clients.filter((c) => c.replica === 1);
const stopped = Date.now();
execSync(STOP_REPLICA_1, { stdio: "ignore" });
console.log(`replica 1 stopped (SIGTERM, drained) in ${Date.now() - stopped} ms`);
await until(() => onOne.every((c) => c.reconnected && c.connection.state === signalR.HubConnectionState.Connected), "replica 1's clients to reconnect", 30000);
const onTwo = (await request(REPLICAS[1], "GET", "/health")).body.connections;
assert.equal(onTwo, clients.length, "every connection is now on replica 2");
console.log(`${onOne.length} connections moved to replica 2 (${onOne.map((c) => c.transport).join(", ")})`);
const survivor = clients.find((c) => c.replica === 2);
const ms2 = await everyoneReceives(`after the drain (${run})`, survivor);
console.log(`a message after the drain reached all ${clients.length} connections in ${ms2} ms`);

await Promise.all(clients.map((c) => c.connection.stop()));
console.log("smoke: ok");
