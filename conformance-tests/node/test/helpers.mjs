// Shared by the conformance tests: start the Rust server, build official clients, bounded waits.
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { createInterface } from "node:readline";
import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

export { signalR };

const SERVER = process.env.SIGNALR_SERVER_BIN;
if (!SERVER) throw new Error("SIGNALR_SERVER_BIN must point at the conformance-server binary");

/** Starts the conformance server on a free port; resolves once it prints LISTENING. */
export async function startServer(args = []) {
  const child = spawn(SERVER, args, { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d) => { stderr += d; });
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  const port = await withTimeout(new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    lines.on("line", (line) => {
      const m = /^LISTENING (\d+)$/.exec(line);
      if (m) resolve(Number(m[1]));
    });
    child.on("exit", (code) => reject(new Error(`server exited early (${code}): ${stderr}`)));
  }), 10000, "server start");
  return {
    pid: child.pid,
    port,
    url: `http://127.0.0.1:${port}/hub`,
    exited,
    stderr: () => stderr,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    },
  };
}

/** Builds (not starts) a client. `transport` is a HttpTransportType name, or "any" to let the
 *  client negotiate and fall back as it does by default. */
export function client(server, { protocol = "json", transport = "WebSockets", skipNegotiation = false, reconnect = false, accessToken, configure } = {}) {
  const options = {};
  if (accessToken) options.accessTokenFactory = () => accessToken;
  if (transport !== "any") options.transport = signalR.HttpTransportType[transport];
  if (skipNegotiation) options.skipNegotiation = true;
  let builder = new signalR.HubConnectionBuilder()
    .withUrl(server.url, options)
    .configureLogging(signalR.LogLevel.None);
  if (protocol === "messagepack") builder = builder.withHubProtocol(new MessagePackHubProtocol());
  if (reconnect) builder = builder.withAutomaticReconnect([0, 1000, 1000]);
  const connection = builder.build();
  if (configure) configure(connection);
  return connection;
}

/** Starts a client and records every call to the given client methods. */
export async function started(server, options = {}, methods = []) {
  const connection = client(server, options);
  const received = [];
  for (const method of methods) {
    connection.on(method, (...args) => { received.push({ method, args }); });
  }
  const closed = new Promise((resolve) => connection.onclose((error) => resolve(error ?? null)));
  await withTimeout(connection.start(), 5000, "start");
  return { connection, received, closed };
}

export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until `check()` is truthy (polling), failing after `ms`. */
export async function until(check, ms, what) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** Every transport / protocol / negotiation combination the hub tests run under: JSON on all
 *  three transports, MessagePack wherever it can go (not SSE), skipNegotiation on WebSockets. */
export const COMBINATIONS = [
  { transport: "WebSockets", protocol: "json", skipNegotiation: false },
  { transport: "WebSockets", protocol: "json", skipNegotiation: true },
  { transport: "WebSockets", protocol: "messagepack", skipNegotiation: false },
  { transport: "WebSockets", protocol: "messagepack", skipNegotiation: true },
  { transport: "ServerSentEvents", protocol: "json", skipNegotiation: false },
  { transport: "LongPolling", protocol: "json", skipNegotiation: false },
  { transport: "LongPolling", protocol: "messagepack", skipNegotiation: false },
];

/** Connections whose on_disconnected ran on the server: [[connectionId, error], ...]. */
export async function disconnected(server) {
  const response = await fetch(`http://127.0.0.1:${server.port}/admin/disconnected`);
  return response.json();
}

/** An HS256 JWT, as an identity provider would issue it. */
export function jwt(claims, secret) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const body = `${part({ alg: "HS256", typ: "JWT" })}.${part({ iat: now, exp: now + 3600, ...claims })}`;
  const signature = createHmac("sha256", secret).update(body).digest("base64url");
  return `${body}.${signature}`;
}
