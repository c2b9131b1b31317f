// Shared by the functional suite: starts functional-server, builds official clients for each
// transport and protocol, and waits with bounds so a broken server fails fast instead of hanging.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { createRequire } from "node:module";
import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

export { signalR, MessagePackHubProtocol };

const require = createRequire(import.meta.url);
// Not exported from the package index; Microsoft's own functional tests reach in the same way.
export const { HttpConnection } = require("@microsoft/signalr/dist/cjs/HttpConnection");
export const { getUserAgentHeader } = require("@microsoft/signalr/dist/cjs/Utils");

const SERVER = process.env.FUNCTIONAL_SERVER_BIN;
if (!SERVER) throw new Error("FUNCTIONAL_SERVER_BIN must point at the functional-server binary");

/** Starts the functional server on a free port; resolves once it prints LISTENING. */
export async function startServer() {
  const child = spawn(SERVER, [], { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d) => { stderr += d; });
  const exited = new Promise((resolve) => child.on("exit", resolve));
  const port = await withTimeout(new Promise((resolve, reject) => {
    createInterface({ input: child.stdout }).on("line", (line) => {
      const m = /^LISTENING (\d+)$/.exec(line);
      if (m) resolve(Number(m[1]));
    });
    child.on("exit", (code) => reject(new Error(`server exited early (${code}): ${stderr}`)));
  }), 10000, "server start");
  const base = `http://127.0.0.1:${port}`;
  return {
    base,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    },
  };
}

/** The pairs Microsoft's suite runs every hub case under: JSON on every transport, MessagePack
 *  where binary can travel (not Server-Sent Events), plus WebSockets without negotiate. */
export const PAIRS = [
  { transport: "WebSockets", protocol: "json" },
  { transport: "WebSockets", protocol: "messagepack" },
  { transport: "WebSockets", protocol: "json", skipNegotiation: true },
  { transport: "WebSockets", protocol: "messagepack", skipNegotiation: true },
  { transport: "ServerSentEvents", protocol: "json" },
  { transport: "LongPolling", protocol: "json" },
  { transport: "LongPolling", protocol: "messagepack" },
];

export const TRANSPORTS = ["WebSockets", "ServerSentEvents", "LongPolling"];

export const pairName = ({ transport, protocol, skipNegotiation }) =>
  `${protocol} over ${transport}${skipNegotiation ? " (negotiate skipped)" : ""}`;

/** Builds (does not start) a hub connection. `transport` undefined lets the client choose. */
export function hub(url, { transport, protocol = "json", skipNegotiation = false, reconnect = false, options = {} } = {}) {
  const settings = { ...options };
  if (transport) settings.transport = signalR.HttpTransportType[transport];
  if (skipNegotiation) settings.skipNegotiation = true;
  let builder = new signalR.HubConnectionBuilder()
    .withUrl(url, settings)
    .configureLogging(signalR.LogLevel.None);
  if (protocol === "messagepack") builder = builder.withHubProtocol(new MessagePackHubProtocol());
  if (reconnect) builder = builder.withAutomaticReconnect([0, 100, 500]);
  return builder.build();
}

/** Resolves with the close error (undefined for a clean close) the next time it closes. */
export function nextClose(connection) {
  return new Promise((resolve) => connection.onclose((error) => resolve(error)));
}

export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A promise with its resolve and reject in hand. */
export function deferred() {
  let resolve, reject;
  const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
  return { promise, resolve, reject };
}

/** An ILogger that keeps every line, to see what the client chose to log. */
export function recordingLogger() {
  const lines = [];
  return { lines, log(_level, message) { lines.push(String(message)); } };
}
