// Shared by the chat-app end-to-end tests: start the real binary, call its REST API, connect.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import * as signalR from "@microsoft/signalr";

export { signalR };
const BIN = process.env.CHAT_APP_BIN;
// "default": run as a new user would, with no DATABASE_URL, in CHAT_WORKDIR (chat.db appears there).
export const DATABASE_URL = process.env.CHAT_DATABASE_URL;
const WORKDIR = process.env.CHAT_WORKDIR;
if (!BIN || !DATABASE_URL) throw new Error("CHAT_APP_BIN and CHAT_DATABASE_URL must be set");
export const run = Math.random().toString(36).slice(2, 8);

// The suites register and chat from one address far faster than people do: generous limits,
// unless a test sets its own.
const TEST_RATES = {
  LOGIN_RATE_PER_ADDRESS: "10000/60", LOGIN_RATE_PER_NAME: "1000/60", REGISTER_RATE_PER_ADDRESS: "10000/60",
  SEND_MESSAGE_RATE: "1000/10", TYPING_RATE: "1000/10", JOIN_RATE: "1000/60",
};

export async function startApp(extraEnv = {}) {
  const env = { ...process.env, LISTEN_ADDR: "127.0.0.1:0", DATABASE_URL, RUST_LOG: "warn", MAX_MESSAGE_CHARS: "200", ...TEST_RATES, ...extraEnv };
  if (DATABASE_URL === "default" && !("DATABASE_URL" in extraEnv)) delete env.DATABASE_URL;
  for (const [key, value] of Object.entries(env)) if (value === undefined) delete env[key];
  // Single process: a REDIS_URL from the surrounding CI environment must not reach it.
  if (!("REDIS_URL" in extraEnv)) delete env.REDIS_URL;
  const child = spawn(BIN, [], { env, cwd: WORKDIR, stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d) => { stderr += d; });
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  const base = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`chat-app did not start: ${stderr}`)), 15000);
    createInterface({ input: child.stdout }).on("line", (line) => {
      const m = /listening on (http:\/\/\S+)/.exec(line);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    child.on("exit", (code) => reject(new Error(`chat-app exited (${code}): ${stderr}`)));
  });
  return { base, child, exited, stderr: () => stderr, async stop() { child.kill("SIGTERM"); return exited; } };
}

export async function api(app, method, path, { token, body, raw } = {}) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined || raw !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(`${app.base}${path}`, {
    method, headers, body: raw ?? (body === undefined ? undefined : JSON.stringify(body)),
  });
  const text = await response.text();
  let json;
  try { json = text ? JSON.parse(text) : undefined; } catch { json = text; }
  return { status: response.status, headers: response.headers, body: json };
}

export async function connect(app, token, transport = "WebSockets", extraEvents = []) {
  const connection = new signalR.HubConnectionBuilder()
    .withUrl(`${app.base}/hubs/chat`, { accessTokenFactory: () => token, transport: signalR.HttpTransportType[transport] })
    .configureLogging(signalR.LogLevel.None)
    .build();
  const events = [];
  for (const name of ["ReceiveMessage", "UserJoined", "UserLeft", "UserTyping", ...extraEvents]) {
    connection.on(name, (payload) => events.push({ name, payload }));
  }
  await connection.start();
  return { connection, events };
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export async function until(check, what, ms = 5000) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** Registers a fresh user; returns {id, userName, token}. */
export async function user(app, name) {
  const response = await api(app, "POST", "/api/v1/auth/register", { body: { userName: `${name}_${run}`, password: "long enough" } });
  if (response.status !== 201) throw new Error(`register ${name}: ${response.status} ${JSON.stringify(response.body)}`);
  return { id: response.body.userId, userName: response.body.userName, token: response.body.accessToken };
}

/** An HS256 JWT signed with `secret` (to forge tokens as an attacker would). */
export async function signToken(claims, secret) {
  const { createHmac } = await import("node:crypto");
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const unsigned = `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}`;
  return `${unsigned}.${createHmac("sha256", secret).update(unsigned).digest("base64url")}`;
}

/** Runs the binary expecting it to refuse to start; resolves {code, stderr, ms}. */
export async function startFails(extraEnv, ms = 20000) {
  const env = { ...process.env, LISTEN_ADDR: "127.0.0.1:0", DATABASE_URL, RUST_LOG: "info", ...extraEnv };
  if (env.DATABASE_URL === "default") delete env.DATABASE_URL;
  for (const [key, value] of Object.entries(extraEnv)) if (value === undefined) delete env[key];
  if (!("REDIS_URL" in extraEnv)) delete env.REDIS_URL;
  const started = Date.now();
  const child = spawn(BIN, [], { env, cwd: WORKDIR, stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  let stdout = "";
  child.stderr.on("data", (d) => { stderr += d; });
  child.stdout.on("data", (d) => { stdout += d; });
  const timer = setTimeout(() => child.kill("SIGKILL"), ms);
  const code = await new Promise((resolve) => child.on("exit", (c) => resolve(c)));
  clearTimeout(timer);
  return { code, stderr, stdout, ms: Date.now() - started };
}

/** A TCP proxy on loopback to `targetPort` that can cut every socket, refuse new ones, or
 *  swallow them (accept and never answer, like a host that went away). */
export async function tcpProxy(targetPort) {
  const net = await import("node:net");
  const sockets = new Set();
  let mode = "pass";
  const server = net.createServer((client) => {
    client.on("error", () => {});
    if (mode === "refuse") return client.destroy();
    sockets.add(client);
    client.on("close", () => sockets.delete(client));
    if (mode === "blackhole") return;
    const upstream = net.connect(targetPort, "127.0.0.1");
    sockets.add(upstream);
    upstream.on("error", () => {});
    upstream.on("close", () => { sockets.delete(upstream); client.destroy(); });
    client.on("close", () => upstream.destroy());
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = server.address().port;
  return {
    port,
    base: `http://127.0.0.1:${port}`,
    cut() { for (const s of sockets) s.destroy(); },
    /** "pass", "refuse" (and cut what is open) or "blackhole" (open sockets stall too). */
    set(next) {
      mode = next;
      if (next === "refuse") this.cut();
      if (next === "blackhole") for (const s of sockets) { s.unpipe?.(); s.pause(); }
    },
    close() { this.cut(); return new Promise((r) => server.close(r)); },
  };
}
