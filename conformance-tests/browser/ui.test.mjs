// chat-app's web UI in headless Chromium: two people, each in their own browser context, use
// the page as a person would (forms, buttons, the keyboard) against the real binary. The @gpt
// provider is a fake this test starts. Run by `cargo test -p chat-app --test browser`.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { mkdirSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { chromium } from "playwright-core";

const BIN = process.env.CHAT_APP_BIN;
const WORKDIR = process.env.CHAT_WORKDIR;
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const SHOTS = process.env.SCREENSHOT_DIR;
if (!BIN || !WORKDIR || !SHOTS) throw new Error("CHAT_APP_BIN, CHAT_WORKDIR and SCREENSHOT_DIR must be set");
const run = Math.random().toString(36).slice(2, 7);
const DATABASE_URL = `sqlite://${path.join(WORKDIR, `browser-${run}.db`)}?mode=rwc`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A streaming chat-completions server; its reply comes in slowly enough to watch. */
const REPLY = ["Hello", " there", ", humans", "!"];
async function startProvider() {
  const requests = [];
  const server = http.createServer(async (req, res) => {
    let raw = "";
    for await (const piece of req) raw += piece;
    requests.push({ body: JSON.parse(raw), authorization: req.headers.authorization });
    res.writeHead(200, { "content-type": "text/event-stream" });
    for (const delta of REPLY) {
      res.write(`data: ${JSON.stringify({ choices: [{ delta: { content: delta } }] })}\n\n`);
      await sleep(400);
    }
    res.end("data: [DONE]\n\n");
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${server.address().port}/v1`, requests, close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }) };
}

/** Starts the binary on `listen` (port 0 the first time); resolves once it listens. */
async function startApp(listen, provider) {
  const env = {
    ...process.env, LISTEN_ADDR: listen, DATABASE_URL, RUST_LOG: "warn",
    OPENAI_API_KEY: "browser-test-key", OPENAI_BASE_URL: provider.url, OPENAI_MODEL: "fake",
    // One address registers and chats faster than people do: generous rate limits.
    LOGIN_RATE_PER_ADDRESS: "10000/60", LOGIN_RATE_PER_NAME: "1000/60", REGISTER_RATE_PER_ADDRESS: "10000/60",
    SEND_MESSAGE_RATE: "1000/10", TYPING_RATE: "1000/10", JOIN_RATE: "1000/60",
  };
  delete env.REDIS_URL;
  const child = spawn(BIN, [], { env, cwd: WORKDIR, stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d) => { stderr += d; });
  const exited = new Promise((resolve) => child.on("exit", resolve));
  const base = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`chat-app did not start: ${stderr}`)), 15000);
    createInterface({ input: child.stdout }).on("line", (line) => {
      const m = /listening on (http:\/\/\S+)/.exec(line);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    child.on("exit", (code) => reject(new Error(`chat-app exited (${code}): ${stderr}`)));
  });
  return { base, stop: async () => { child.kill("SIGTERM"); await exited; } };
}

describe("the web UI in Chromium", () => {
  let provider, app, browser;
  const pageErrors = [];
  const people = {};
  const shot = (page, name) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: false });
  /**
   * Waits until `selector` matches an element whose text contains `text`. On a timeout the
   * error also says what the page showed: its last alert and the open conversation's title.
   */
  const seeText = async (page, selector, text, timeout = 10000) => {
    try {
      await page.locator(selector, { hasText: text }).first().waitFor({ timeout });
    } catch (error) {
      const read = (selector) => page.locator(selector).first().textContent({ timeout: 1000 }).catch(() => null);
      const [alert, title] = [await read("#alert"), await read("#room-title")];
      throw new Error(`${error.message}\n(the page's last alert: ${JSON.stringify(alert)}; conversation title: ${JSON.stringify(title)})`, { cause: error });
    }
  };
  const connectionState = (page) => page.locator("#connection").getAttribute("data-state");
  const send = async (page, text) => {
    await page.fill("#composer-input", text);
    await page.press("#composer-input", "Enter");
  };
  const roomButton = (page, name) => page.locator("#room-list button.conversation", { hasText: name });
  const badgeOf = (button) => button.locator(".badge");

  before(async () => {
    mkdirSync(SHOTS, { recursive: true });
    provider = await startProvider();
    app = await startApp("127.0.0.1:0", provider);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--headless", "--no-sandbox", "--disable-gpu"] });
  });
  after(async () => {
    await browser?.close();
    await app?.stop();
    await provider?.close();
  });

  it("two people register and see they are connected", async () => {
    for (const [who, viewport] of [["alice", { width: 1280, height: 800 }], ["bob", { width: 1100, height: 760 }]]) {
      const context = await browser.newContext({ viewport });
      const page = await context.newPage();
      page.on("pageerror", (error) => pageErrors.push(`${who}: ${error.message}`));
      // The strict Content-Security-Policy must not block the page's own work (the WebSocket).
      page.on("console", (message) => {
        if (/Content Security Policy/i.test(message.text())) pageErrors.push(`${who}: ${message.text()}`);
      });
      await page.goto(app.base);
      await page.getByLabel("User name").fill(`${who}_${run}`);
      await page.getByLabel("Password", { exact: true }).fill("long enough password");
      await page.getByRole("button", { name: "Register" }).click();
      await page.locator('#connection[data-state="connected"]').waitFor();
      assert.equal(await page.locator("#me").textContent(), `${who}_${run}`);
      people[who] = { page, name: `${who}_${run}` };
    }
    // A wrong password is refused on the page, politely.
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(app.base);
    await page.getByLabel("User name").fill(people.alice.name);
    await page.getByLabel("Password", { exact: true }).fill("not the password");
    await page.getByRole("button", { name: "Log in" }).click();
    await seeText(page, "#auth-error", "Wrong userName or password");
    await context.close();
  });

  it("creates a room, the other joins, and they chat both ways with typing shown", async () => {
    const { alice, bob } = people;
    await alice.page.getByLabel("New room").fill(`lobby ${run}`);
    await alice.page.getByRole("button", { name: "Create room" }).click();
    await seeText(alice.page, "#room-title", `lobby ${run}`);
    // Bob's list hears of the new room at once (RoomCreated), not on a reload.
    await roomButton(bob.page, `lobby ${run}`).click();
    await bob.page.getByRole("button", { name: "Join room" }).click();
    await bob.page.locator("#composer").waitFor();

    await send(alice.page, "Hello Bob");
    await seeText(bob.page, "#messages .content", "Hello Bob");
    await bob.page.locator("#composer-input").pressSequentially("Hi Al", { delay: 30 });
    await seeText(alice.page, "#typing", `${bob.name} is typing`);
    await bob.page.locator("#composer-input").pressSequentially("ice");
    await bob.page.press("#composer-input", "Enter");
    await seeText(alice.page, "#messages .content", "Hi Alice");
    await seeText(bob.page, "#messages .message.own .content", "Hi Alice");
    await shot(alice.page, "01-chat");
  });

  it("shows markup in messages as text", async () => {
    const { alice, bob } = people;
    const hostile = `<img src=x onerror="window.__pwned=1"><b>bold?</b>`;
    await send(alice.page, hostile);
    await seeText(bob.page, "#messages .content", "<img src=x");
    assert.equal(await bob.page.locator("#messages .content", { hasText: "<img" }).textContent(), hostile);
    assert.equal(await bob.page.locator("#messages img, #messages b").count(), 0);
    assert.equal(await bob.page.evaluate(() => window.__pwned), undefined);
    assert.equal(await alice.page.evaluate(() => window.__pwned), undefined);
  });

  it("edits and deletes one's own messages, and the other sees both", async () => {
    const { alice, bob } = people;
    const mine = alice.page.locator("#messages li.message.own", { hasText: "Hello Bob" });
    await mine.getByRole("button", { name: "Edit message" }).click();
    const editor = mine.getByRole("textbox", { name: "Edit message" });
    await editor.fill("Hello Bob (now edited)");
    await editor.press("Enter");
    await seeText(bob.page, "#messages .content", "Hello Bob (now edited)");
    const edited = bob.page.locator("#messages li.message", { hasText: "Hello Bob (now edited)" });
    assert.ok(await edited.locator(".edited").isVisible(), "marked as edited");
    // Bob cannot edit Alice's message: he has no button for it.
    assert.equal(await edited.getByRole("button", { name: "Edit message" }).count(), 0);

    const hostile = alice.page.locator("#messages li.message.own", { hasText: "<img" });
    await hostile.getByRole("button", { name: "Delete message" }).click();
    await hostile.getByRole("button", { name: "Confirm deleting this message" }).click();
    await bob.page.locator("#messages li.message", { hasText: "<img" }).waitFor({ state: "detached" });
    await alice.page.locator("#messages li.message", { hasText: "<img" }).waitFor({ state: "detached" });
    await shot(bob.page, "02-edited-and-deleted");
  });

  it("counts unread messages in the room list, and clears them when read", async () => {
    const { alice, bob } = people;
    await bob.page.getByLabel("New room").fill(`quiet ${run}`);
    await bob.page.getByRole("button", { name: "Create room" }).click();
    await seeText(bob.page, "#room-title", `quiet ${run}`);
    await send(alice.page, "are you there?");
    await send(alice.page, "hello?");
    const lobby = roomButton(bob.page, `lobby ${run}`);
    await badgeOf(lobby).filter({ hasText: "2" }).waitFor();
    assert.equal(await badgeOf(lobby).getAttribute("aria-label"), "2 unread");
    await shot(bob.page, "03-unread");
    await lobby.click();
    await seeText(bob.page, "#messages .content", "hello?");
    await badgeOf(lobby).waitFor({ state: "detached" });
    // The marker is on the server: a reload shows no unread messages either.
    await bob.page.reload();
    await bob.page.locator('#connection[data-state="connected"]').waitFor();
    await roomButton(bob.page, `lobby ${run}`).waitFor();
    assert.equal(await badgeOf(roomButton(bob.page, `lobby ${run}`)).count(), 0);
    await roomButton(bob.page, `lobby ${run}`).click();
    await seeText(bob.page, "#messages .content", "hello?");
  });

  it("shows who is online, and pages back through long histories", async () => {
    const { alice, bob } = people;
    await roomButton(alice.page, `lobby ${run}`).click();
    await alice.page.locator("#member-list li.online", { hasText: bob.name }).waitFor();
    // A room with more history than one page (50).
    await alice.page.getByLabel("New room").fill(`archive ${run}`);
    await alice.page.getByRole("button", { name: "Create room" }).click();
    await seeText(alice.page, "#room-title", `archive ${run}`);
    for (let i = 1; i <= 60; i++) {
      await send(alice.page, `old ${i}`);
      await alice.page.locator("#messages .content", { hasText: new RegExp(`^old ${i}$`) }).waitFor();
    }
    await roomButton(alice.page, `lobby ${run}`).click();
    await roomButton(alice.page, `archive ${run}`).click();
    await seeText(alice.page, "#messages .content", "old 60");
    assert.equal(await alice.page.locator("#messages .content", { hasText: /^old 1$/ }).count(), 0);
    assert.equal(await alice.page.locator("#messages li.message").count(), 50);
    await alice.page.getByRole("button", { name: "Load older messages" }).click();
    await alice.page.locator("#messages li.message .content", { hasText: /^old 1$/ }).waitFor();
    assert.equal(await alice.page.locator("#messages li.message").count(), 60);
    assert.ok(await alice.page.getByRole("button", { name: "Load older messages" }).isHidden());
  });

  it("exchanges a direct message, listed apart from rooms", async () => {
    const { alice, bob } = people;
    await roomButton(alice.page, `lobby ${run}`).click();
    await alice.page.getByRole("button", { name: `Message ${bob.name}` }).click();
    await seeText(alice.page, "#room-title", `Direct message to ${bob.name}`);
    await send(alice.page, "psst, just you and me");
    await seeText(alice.page, "#room-title", `Direct message with ${bob.name}`);
    const fromAlice = bob.page.locator("#dm-list button.conversation", { hasText: alice.name });
    await badgeOf(fromAlice).filter({ hasText: "1" }).waitFor();
    assert.equal(await roomButton(bob.page, alice.name).count(), 0, "not among the rooms");
    await fromAlice.click();
    await seeText(bob.page, "#messages .content", "psst, just you and me");
    await badgeOf(fromAlice).waitFor({ state: "detached" });
    await send(bob.page, "got it");
    await seeText(alice.page, "#messages .content", "got it");
    await shot(alice.page, "04-direct-message");
  });

  it("creates a private room that others see only once its owner adds them, and until removed", async () => {
    const { alice, bob } = people;
    await alice.page.getByLabel("New room").fill(`secret ${run}`);
    await alice.page.getByLabel(/Private/).check();
    await alice.page.getByRole("button", { name: "Create room" }).click();
    await seeText(alice.page, "#room-title", `secret ${run}`);
    await alice.page.locator("#member-list li", { hasText: "owner" }).waitFor();
    await sleep(300);
    assert.equal(await roomButton(bob.page, `secret ${run}`).count(), 0, "not announced to others");
    await alice.page.getByLabel("Add someone to this private room").fill(bob.name);
    await alice.page.getByRole("button", { name: "Add", exact: true }).click();
    await alice.page.locator("#member-list li", { hasText: bob.name }).waitFor();
    // RoomAdded: in bob's list at once, before anything is said there.
    await roomButton(bob.page, `secret ${run}`).waitFor();
    await send(alice.page, "welcome to the secret room");
    await badgeOf(roomButton(bob.page, `secret ${run}`)).filter({ hasText: "1" }).waitFor();
    // Bob is a member, not the owner: he cannot add people.
    await roomButton(bob.page, `secret ${run}`).click();
    await seeText(bob.page, "#messages .content", "welcome to the secret room");
    await bob.page.locator("#member-list li", { hasText: alice.name }).filter({ hasText: "owner" }).waitFor();
    assert.equal(await bob.page.locator("#add-member").isVisible(), false, "no add form for a member");
    // The owner removes him: RoomRemoved takes the room off his page.
    await alice.page.getByRole("button", { name: `Remove ${bob.name} from this room` }).click();
    await seeText(bob.page, "#messages .note", "You were removed from");
    await roomButton(bob.page, `secret ${run}`).waitFor({ state: "detached" });
    await alice.page.locator("#member-list li", { hasText: bob.name }).waitFor({ state: "detached" });
  });

  it("streams an @gpt reply into the room as it is written", async () => {
    const { alice, bob } = people;
    await roomButton(alice.page, `lobby ${run}`).click();
    await roomButton(bob.page, `lobby ${run}`).click();
    await seeText(bob.page, "#room-title", `lobby ${run}`);
    await send(alice.page, "@gpt please say hello");
    const streaming = bob.page.locator("#messages li.streaming .content");
    await streaming.filter({ hasText: "Hello" }).waitFor();
    const partial = await streaming.textContent();
    assert.ok(partial.length < REPLY.join("").length, `seen while streaming: ${partial}`);
    await shot(bob.page, "05-gpt-streaming");
    const final = bob.page.locator("#messages li.message.assistant:not(.streaming) .content", { hasText: REPLY.join("") });
    await final.waitFor();
    assert.equal(await bob.page.locator("#messages li.streaming").count(), 0, "the stored reply replaced the stream");
    await seeText(alice.page, "#messages li.message.assistant .content", REPLY.join(""));
    assert.equal(provider.requests.length, 1);
    assert.equal(provider.requests[0].authorization, "Bearer browser-test-key");
    assert.ok(provider.requests[0].body.messages.some((m) => m.content.includes("@gpt please say hello")));
  });

  it("leaves focus where the person moved it while a history loads", async () => {
    const { alice } = people;
    // A slow history: the person has moved on to another field before it arrives.
    let arrived;
    const loaded = new Promise((resolve) => { arrived = resolve; });
    await alice.page.route("**/api/v1/rooms/*/messages?limit=*", async (route) => {
      await new Promise((resolve) => setTimeout(resolve, 400));
      await route.continue();
      arrived();
    });
    try {
      await roomButton(alice.page, `lobby ${run}`).click();
      await alice.page.getByLabel("New room").focus();
      await alice.page.keyboard.type("typed while loading");
      await loaded;
      await alice.page.locator("#messages[aria-busy]").waitFor({ state: "detached" });
      await alice.page.keyboard.type(", and after");
      assert.equal(await alice.page.evaluate(() => document.activeElement.id), "new-room-name");
      assert.equal(await alice.page.getByLabel("New room").inputValue(), "typed while loading, and after");
      assert.equal(await alice.page.locator("#composer-input").inputValue(), "");
    } finally {
      await alice.page.unroute("**/api/v1/rooms/*/messages?limit=*");
      await alice.page.getByLabel("New room").fill("");
    }
    // Without a detour, the message box gets focus once the history is in, as before.
    await roomButton(alice.page, `lobby ${run}`).click();
    await alice.page.waitForFunction(() => document.activeElement?.id === "composer-input");
  });

  it("fits a phone screen and works from the keyboard", async () => {
    const { bob } = people;
    await bob.page.setViewportSize({ width: 390, height: 844 });
    const overflow = await bob.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `no sideways scrolling (${overflow}px too wide)`);
    assert.ok(await bob.page.locator("#composer-input").isVisible());
    // Tab from the message box reaches Send; Enter on it sends.
    await bob.page.locator("#composer-input").fill("sent from the keyboard");
    await bob.page.locator("#composer-input").focus();
    await bob.page.keyboard.press("Tab");
    assert.equal(await bob.page.evaluate(() => document.activeElement.id), "send");
    await bob.page.keyboard.press("Enter");
    await seeText(people.alice.page, "#messages .content", "sent from the keyboard");
    await shot(bob.page, "06-phone");
    await bob.page.setViewportSize({ width: 1100, height: 760 });
  });

  it("shows the reconnect indicator while the server restarts, then carries on", async () => {
    const { alice, bob } = people;
    const port = new URL(app.base).port;
    await app.stop();
    for (const { page } of [alice, bob]) {
      await page.waitForFunction(() => ["reconnecting", "offline"].includes(document.getElementById("connection").dataset.state));
    }
    assert.ok(["reconnecting", "offline"].includes(await connectionState(alice.page)));
    assert.match(await alice.page.locator("#connection").textContent(), /Reconnecting|Offline/);
    await shot(alice.page, "07-reconnecting");
    app = await startApp(`127.0.0.1:${port}`, provider);
    for (const { page } of [alice, bob]) {
      await page.locator('#connection[data-state="connected"]').waitFor({ timeout: 20000 });
    }
    await send(alice.page, "back after the restart");
    await seeText(bob.page, "#messages .content", "back after the restart");
    await shot(bob.page, "08-reconnected");
    assert.deepEqual(pageErrors, []);
  });
});
