// The chat's web UI: plain ES module, no build step. Every piece of user text reaches the page
// through textContent (never innerHTML), so names and messages cannot become markup.

const signalR = window.signalR;
const $ = (id) => document.getElementById(id);

const SESSION_KEY = "chat-session";
const PAGE = 50;
const TYPING_SEND_EVERY_MS = 2000;
const TYPING_SHOWN_MS = 3500;
const ASSISTANT = "gpt";

const state = {
  session: null, // {token, userId, userName, expiresAt}
  connection: null,
  connectionState: "offline",
  rooms: new Map(), // id -> {id, name, isPrivate, createdBy, isMember, unread}
  directs: new Map(), // roomId -> {roomId, userId, userName, unread}
  active: null, // {kind: "room" | "direct", id} or {kind: "pending", userName}
  activeRole: null, // "owner" | "member" in the open room, from its member list
  oldest: null,
  streams: new Map(), // reply id -> list item of a streaming @gpt reply
  typing: new Map(), // userName -> timer
  lastTypingSent: 0,
  restartTimer: null,
};

// ---------------------------------------------------------------- small helpers

/** Builds an element; `text` goes in as textContent, children as nodes or plain text. */
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

let alertTimer;
function showAlert(text) {
  const box = $("alert");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(alertTimer);
  alertTimer = setTimeout(() => { box.hidden = true; }, 6000);
}

function errorText(error) {
  // Hub errors arrive as "An unexpected error occurred invoking 'X' on the server. HubException: text".
  const message = String(error?.message ?? error);
  const hub = /HubException: (.*)$/s.exec(message);
  return hub ? hub[1] : message;
}

async function api(method, path, body) {
  const headers = {};
  if (state.session) headers.authorization = `Bearer ${state.session.token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  let json;
  try { json = text ? JSON.parse(text) : undefined; } catch { json = undefined; }
  if (response.status === 401 && state.session) {
    signOut("Your session ended; sign in again.");
  }
  if (!response.ok) throw new Error(json?.error ?? `The server answered ${response.status}.`);
  return json;
}

function invoke(method, ...args) {
  if (!state.connection || state.connectionState !== "connected") {
    return Promise.reject(new Error("Not connected; wait for the connection to come back."));
  }
  return state.connection.invoke(method, ...args);
}

function formatTime(iso) {
  const date = new Date(iso);
  const sameDay = date.toDateString() === new Date().toDateString();
  return sameDay
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleString([], { dateStyle: "short", timeStyle: "short" });
}

// ---------------------------------------------------------------- session

function loadSession() {
  try {
    const saved = JSON.parse(localStorage.getItem(SESSION_KEY) ?? "null");
    if (saved && saved.token && new Date(saved.expiresAt) > new Date()) return saved;
  } catch { /* a damaged entry is a signed-out user */ }
  localStorage.removeItem(SESSION_KEY);
  return null;
}

async function authenticate(action, userName, password) {
  const session = await api("POST", `/api/v1/auth/${action}`, { userName, password });
  state.session = { token: session.accessToken, userId: session.userId, userName: session.userName, expiresAt: session.expiresAt };
  localStorage.setItem(SESSION_KEY, JSON.stringify(state.session));
  await enterChat();
}

function signOut(reason) {
  localStorage.removeItem(SESSION_KEY);
  state.session = null;
  const connection = state.connection;
  state.connection = null;
  clearTimeout(state.restartTimer);
  connection?.stop();
  setConnection("offline");
  state.rooms.clear();
  state.directs.clear();
  state.active = null;
  $("chat-view").hidden = true;
  $("session").hidden = true;
  $("auth-view").hidden = false;
  $("auth-error").textContent = reason ?? "";
  $("auth-name").focus();
}

async function enterChat() {
  $("auth-view").hidden = true;
  $("chat-view").hidden = false;
  $("session").hidden = false;
  $("me").textContent = state.session.userName;
  $("auth-password").value = "";
  renderActive();
  await refreshLists();
  await startConnection();
}

// ---------------------------------------------------------------- connection

const CONNECTION_TEXT = {
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  offline: "Offline",
};

function setConnection(value) {
  state.connectionState = value;
  const badge = $("connection");
  badge.dataset.state = value;
  badge.textContent = CONNECTION_TEXT[value];
  $("reconnect").hidden = value !== "offline" || !state.session;
  $("send").disabled = value !== "connected";
}

/** Retries quickly at first, then every 10 s; after a minute it gives up (the page says offline). */
const retryPolicy = {
  nextRetryDelayInMilliseconds(context) {
    if (context.elapsedMilliseconds > 60_000) return null;
    return [0, 1000, 2000, 5000][context.previousRetryCount] ?? 10_000;
  },
};

function buildConnection() {
  const connection = new signalR.HubConnectionBuilder()
    .withUrl("/hubs/chat", { accessTokenFactory: () => state.session?.token ?? "" })
    .withAutomaticReconnect(retryPolicy)
    .withStatefulReconnect()
    .configureLogging(signalR.LogLevel.None)
    .build();
  connection.on("ReceiveMessage", onMessage);
  connection.on("MessageEdited", onEdited);
  connection.on("MessageDeleted", onDeleted);
  connection.on("ReceiveMessageChunk", onChunk);
  connection.on("AssistantError", onAssistantError);
  connection.on("UserTyping", onTyping);
  connection.on("UserJoined", onMembership);
  connection.on("UserLeft", onMembership);
  connection.on("RoomCreated", onRoomCreated);
  connection.on("DirectConversationStarted", onDirectStarted);
  connection.on("UnreadChanged", onUnreadChanged);
  connection.on("RoomAdded", onRoomAdded);
  connection.on("RoomRemoved", onRoomRemoved);
  connection.on("RoomOwnerChanged", onOwnerChanged);
  connection.onreconnecting(() => setConnection("reconnecting"));
  connection.onreconnected(() => { setConnection("connected"); resync(); });
  connection.onclose(() => {
    if (state.connection !== connection) return;
    setConnection("offline");
    scheduleRestart(10_000);
  });
  return connection;
}

async function startConnection() {
  clearTimeout(state.restartTimer);
  if (!state.session) return;
  if (!state.connection) state.connection = buildConnection();
  const connection = state.connection;
  if (connection.state !== signalR.HubConnectionState.Disconnected) return;
  setConnection("connecting");
  try {
    await connection.start();
    if (state.connection !== connection) return;
    setConnection("connected");
    await resync();
  } catch {
    if (state.connection !== connection) return;
    setConnection("offline");
    scheduleRestart(10_000);
  }
}

function scheduleRestart(delay) {
  clearTimeout(state.restartTimer);
  state.restartTimer = setTimeout(startConnection, delay);
}

/** After (re)connecting: what happened meanwhile is in the lists and the history. */
async function resync() {
  try {
    await refreshLists();
    if (state.active && state.active.kind !== "pending") await openConversation(state.active.kind, state.active.id, { keepFocus: true });
  } catch (error) {
    showAlert(errorText(error));
  }
}

// ---------------------------------------------------------------- lists

async function refreshLists() {
  const [rooms, directs] = await Promise.all([api("GET", "/api/v1/rooms"), api("GET", "/api/v1/direct")]);
  state.rooms = new Map(rooms.map((room) => [room.id, room]));
  state.directs = new Map(directs.map((direct) => [direct.roomId, direct]));
  if (state.active?.kind !== "pending" && state.active && !conversation(state.active.id)) state.active = null;
  renderLists();
}

function conversation(roomId) {
  return state.rooms.get(roomId) ?? state.directs.get(roomId);
}

function badge(count) {
  if (!count) return null;
  return el("span", { class: "badge", "aria-label": `${count} unread` }, String(count));
}

function renderLists() {
  const activeId = state.active?.kind === "pending" ? null : state.active?.id;
  const rooms = [...state.rooms.values()].sort((a, b) => Number(b.isMember) - Number(a.isMember) || a.name.localeCompare(b.name));
  $("room-list").replaceChildren(...rooms.map((room) => el("li", {},
    el("button", {
      type: "button", class: `conversation${room.isMember ? "" : " not-joined"}`, "data-room": room.id,
      "aria-current": room.id === activeId ? "true" : null, onclick: () => openConversation("room", room.id),
    },
    el("span", { class: "name" }, room.isPrivate ? "🔒 " : "# ", room.name),
    room.isMember ? badge(room.unread) : el("span", { class: "hint" }, "not joined")))));
  const directs = [...state.directs.values()];
  $("dm-list").replaceChildren(...directs.map((direct) => el("li", {},
    el("button", {
      type: "button", class: "conversation", "data-room": direct.roomId, "data-user": direct.userName,
      "aria-current": direct.roomId === activeId ? "true" : null, onclick: () => openConversation("direct", direct.roomId),
    }, el("span", { class: "name" }, "@ ", direct.userName), badge(direct.unread)))));
  if (!directs.length) $("dm-list").append(el("li", { class: "hint" }, "No direct messages yet."));
}

function setUnread(roomId, unread) {
  const item = conversation(roomId);
  if (!item) return;
  item.unread = unread;
  renderLists();
}

// ---------------------------------------------------------------- the open conversation

function isActive(roomId) {
  return state.active && state.active.kind !== "pending" && state.active.id === roomId;
}

/** Only a private room's owner adds people to it. */
function renderAddMember() {
  const active = state.active;
  const item = active?.kind === "room" ? conversation(active.id) : null;
  $("add-member").hidden = !(item?.isPrivate && item.isMember && state.activeRole === "owner");
}

function renderActive() {
  const active = state.active;
  const item = active && active.kind !== "pending" ? conversation(active.id) : null;
  const title = !active ? "Pick a room"
    : active.kind === "pending" ? `Direct message to ${active.userName}`
    : active.kind === "direct" ? `Direct message with ${item?.userName ?? ""}`
    : `${item?.isPrivate ? "🔒" : "#"} ${item?.name ?? ""}`;
  $("room-title").textContent = title;
  const member = active?.kind === "direct" || active?.kind === "pending" || (item && item.isMember);
  $("join").hidden = !(active?.kind === "room" && item && !item.isMember);
  $("leave").hidden = !(active && active.kind !== "pending" && member);
  renderAddMember();
  $("composer").hidden = !member;
  $("typing").textContent = "";
  renderLists();
}

async function openConversation(kind, roomId, { keepFocus = false } = {}) {
  // Where focus was when the conversation was asked for: if the person has moved on to another
  // field by the time the history arrives, it stays there.
  const focusedAtStart = document.activeElement;
  if (!isActive(roomId)) state.activeRole = null;
  state.active = { kind, id: roomId };
  state.streams.clear();
  for (const timer of state.typing.values()) clearTimeout(timer);
  state.typing.clear();
  renderActive();
  const list = $("messages");
  list.setAttribute("aria-busy", "true");
  list.replaceChildren();
  try {
    const page = await api("GET", `/api/v1/rooms/${roomId}/messages?limit=${PAGE}`);
    if (!isActive(roomId)) return;
    list.replaceChildren(...page.slice().reverse().map(messageItem));
    state.oldest = page.length ? page[page.length - 1].id : null;
    $("older").hidden = page.length < PAGE;
    if (!page.length) list.append(note("No messages yet. Say hello!"));
    list.scrollTop = list.scrollHeight;
    const item = conversation(roomId);
    if (page.length && (kind === "direct" || item?.isMember)) markRead(roomId, page[0].id);
  } catch (error) {
    showAlert(errorText(error));
  } finally {
    list.removeAttribute("aria-busy");
  }
  refreshMembers();
  const focusMoved = document.activeElement !== focusedAtStart && document.activeElement !== document.body;
  if (!keepFocus && !focusMoved && !$("composer").hidden) $("composer-input").focus();
}

function openPendingDirect(userName) {
  const existing = [...state.directs.values()].find((d) => d.userName.toLowerCase() === userName.toLowerCase());
  if (existing) return openConversation("direct", existing.roomId);
  state.active = { kind: "pending", userName };
  renderActive();
  $("messages").replaceChildren(note(`Your first message starts a private conversation with ${userName}.`));
  $("older").hidden = true;
  $("member-list").replaceChildren();
  $("composer-input").focus();
}

async function loadOlder() {
  if (!state.active || state.active.kind === "pending" || state.oldest === null) return;
  const roomId = state.active.id;
  const list = $("messages");
  const page = await api("GET", `/api/v1/rooms/${roomId}/messages?limit=${PAGE}&before=${state.oldest}`);
  if (!isActive(roomId)) return;
  const fromBottom = list.scrollHeight - list.scrollTop;
  list.prepend(...page.slice().reverse().map(messageItem));
  list.scrollTop = list.scrollHeight - fromBottom;
  if (page.length) state.oldest = page[page.length - 1].id;
  $("older").hidden = page.length < PAGE;
}

function note(text) {
  return el("li", { class: "note" }, text);
}

function messageItem(message) {
  const own = state.session && message.userId === state.session.userId;
  const item = el("li", { class: `message${own ? " own" : ""}${message.userName === ASSISTANT ? " assistant" : ""}`, "data-id": message.id });
  const header = el("div", { class: "meta" },
    el("strong", { class: "author" }, message.userName),
    el("time", { datetime: message.createdAt }, formatTime(message.createdAt)),
    el("span", { class: "edited", hidden: !message.editedAt, title: message.editedAt ? `edited ${formatTime(message.editedAt)}` : null }, "(edited)"));
  const content = el("p", { class: "content" }, message.content);
  item.append(header, content);
  if (own) {
    const actions = el("div", { class: "actions" },
      el("button", { type: "button", class: "small secondary edit", "aria-label": "Edit message", onclick: () => startEdit(item, message) }, "Edit"),
      deleteButton(message));
    item.append(actions);
  }
  return item;
}

function deleteButton(message) {
  let armed = null;
  const button = el("button", { type: "button", class: "small secondary delete", "aria-label": "Delete message" }, "Delete");
  button.addEventListener("click", async () => {
    if (!armed) {
      // A second click confirms; a stray click alone deletes nothing.
      button.textContent = "Confirm delete";
      button.setAttribute("aria-label", "Confirm deleting this message");
      button.classList.add("danger");
      armed = setTimeout(() => {
        armed = null;
        button.textContent = "Delete";
        button.setAttribute("aria-label", "Delete message");
        button.classList.remove("danger");
      }, 5000);
      return;
    }
    clearTimeout(armed);
    try {
      await invoke("DeleteMessage", message.id);
    } catch (error) {
      showAlert(errorText(error));
    }
  });
  return button;
}

function startEdit(item, message) {
  if (item.querySelector("form")) return;
  const content = item.querySelector(".content");
  const input = el("textarea", { class: "edit-input", rows: 2, "aria-label": "Edit message" });
  input.value = content.textContent;
  const form = el("form", { class: "edit-form" }, input,
    el("button", { type: "submit", class: "small" }, "Save"),
    el("button", { type: "button", class: "small secondary", onclick: () => finish() }, "Cancel"));
  const finish = () => { form.remove(); content.hidden = false; item.querySelector(".actions").hidden = false; };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const edited = await invoke("EditMessage", message.id, input.value);
      applyEdit(edited);
      finish();
    } catch (error) {
      showAlert(errorText(error));
    }
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") { event.preventDefault(); finish(); }
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); form.requestSubmit(); }
  });
  content.hidden = true;
  item.querySelector(".actions").hidden = true;
  content.after(form);
  input.focus();
}

function messageElement(id) {
  return $("messages").querySelector(`li.message[data-id="${Number(id)}"]`);
}

function applyEdit(message) {
  const item = messageElement(message.id);
  if (!item) return;
  item.querySelector(".content").textContent = message.content;
  const edited = item.querySelector(".edited");
  edited.hidden = !message.editedAt;
  if (message.editedAt) edited.title = `edited ${formatTime(message.editedAt)}`;
}

function appendToLog(node) {
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  list.querySelector(".note:only-child")?.remove();
  list.append(node);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

async function markRead(roomId, messageId) {
  try {
    const read = await invoke("MarkRead", roomId, messageId);
    setUnread(read.roomId, read.unread);
  } catch {
    // Offline: the next visit marks it read.
  }
}

async function refreshMembers() {
  const active = state.active;
  if (!active || active.kind === "pending") return;
  try {
    const members = await api("GET", `/api/v1/rooms/${active.id}/members`);
    if (!isActive(active.id)) return;
    const me = state.session.userId;
    state.activeRole = members.find((member) => member.userId === me)?.role ?? null;
    const owner = active.kind === "room" && state.activeRole === "owner";
    $("member-list").replaceChildren(...members.map((member) => el("li", { class: member.online ? "online" : "offline" },
      el("span", { class: "dot", "aria-hidden": "true" }),
      el("span", { class: "name" }, member.userName),
      member.role === "owner" && active.kind === "room" ? el("span", { class: "hint role" }, "owner") : null,
      el("span", { class: "visually-hidden" }, member.online ? " (online)" : " (offline)"),
      member.userId !== me && member.userName !== ASSISTANT
        ? el("button", { type: "button", class: "small secondary", "aria-label": `Message ${member.userName}`, onclick: () => openPendingDirect(member.userName) }, "Message")
        : null,
      owner && member.userId !== me
        ? el("button", { type: "button", class: "small secondary", "aria-label": `Remove ${member.userName} from this room`, onclick: () => removeMember(active.id, member) }, "Remove")
        : null)));
    renderAddMember();
  } catch {
    // The list stays as it was; the next refresh tries again.
  }
}

async function removeMember(roomId, member) {
  try {
    await api("DELETE", `/api/v1/rooms/${roomId}/participants/${member.userId}`);
  } catch (error) {
    showAlert(errorText(error));
  }
  if (isActive(roomId)) refreshMembers();
}

// ---------------------------------------------------------------- hub events

function onMessage(message) {
  if (!conversation(message.roomId)) {
    // A direct conversation or room this page has not seen yet.
    refreshLists().catch(() => {});
  }
  clearTyping(message.userName);
  if (isActive(message.roomId)) {
    if (message.userName === ASSISTANT) {
      const [first] = [...state.streams.entries()];
      if (first) { first[1].remove(); state.streams.delete(first[0]); }
    }
    if (!messageElement(message.id)) appendToLog(messageItem(message));
    markRead(message.roomId, message.id);
  } else if (message.userId !== state.session?.userId) {
    const item = conversation(message.roomId);
    if (item) setUnread(message.roomId, (item.unread ?? 0) + 1);
  }
}

function onEdited(message) {
  if (isActive(message.roomId)) applyEdit(message);
}

function onDeleted({ roomId, messageId }) {
  if (isActive(roomId)) messageElement(messageId)?.remove();
  else refreshLists().catch(() => {});
}

function onChunk({ messageId, roomId, delta }) {
  if (!isActive(roomId)) return;
  let item = state.streams.get(messageId);
  if (!item) {
    item = el("li", { class: "message assistant streaming", "data-stream": messageId, "aria-busy": "true" },
      el("div", { class: "meta" }, el("strong", { class: "author" }, ASSISTANT), el("span", { class: "hint" }, "is answering…")),
      el("p", { class: "content" }));
    state.streams.set(messageId, item);
    appendToLog(item);
  }
  item.querySelector(".content").textContent += delta;
  const list = $("messages");
  list.scrollTop = list.scrollHeight;
}

function onAssistantError({ roomId, messageId, error }) {
  if (!isActive(roomId)) return;
  const stream = messageId ? state.streams.get(messageId) : null;
  if (stream) { stream.remove(); state.streams.delete(messageId); }
  appendToLog(el("li", { class: "note error" }, `The assistant could not answer: ${error}`));
}

function clearTyping(userName) {
  clearTimeout(state.typing.get(userName));
  state.typing.delete(userName);
  renderTyping();
}

function renderTyping() {
  const names = [...state.typing.keys()];
  $("typing").textContent = names.length === 0 ? ""
    : names.length === 1 ? `${names[0]} is typing…`
    : `${names.join(", ")} are typing…`;
}

function onTyping({ roomId, userName }) {
  if (!isActive(roomId) || userName === state.session?.userName) return;
  clearTimeout(state.typing.get(userName));
  state.typing.set(userName, setTimeout(() => clearTyping(userName), TYPING_SHOWN_MS));
  renderTyping();
}

function onMembership({ roomId }) {
  if (isActive(roomId)) refreshMembers();
}

function onRoomCreated(room) {
  if (state.rooms.has(room.id)) return;
  state.rooms.set(room.id, { ...room, isMember: room.createdBy === state.session?.userId, unread: 0 });
  renderLists();
}

function onDirectStarted({ roomId, userId, userName }) {
  if (!state.directs.has(roomId)) state.directs.set(roomId, { roomId, userId, userName, unread: 0 });
  renderLists();
}

function onUnreadChanged({ roomId, unread }) {
  setUnread(roomId, unread);
}

/** Someone (a private room's owner) added this user: the room is in the list at once. */
function onRoomAdded(room) {
  const known = state.rooms.get(room.id);
  state.rooms.set(room.id, { ...room, isMember: true, unread: known?.isMember ? known.unread : 0 });
  if (isActive(room.id)) {
    renderActive();
    refreshMembers();
  } else {
    renderLists();
  }
}

/** The owner removed this user: a private room leaves the list, a public one is not joined. */
function onRoomRemoved({ roomId }) {
  const item = state.rooms.get(roomId);
  if (!item) return;
  if (item.isPrivate) state.rooms.delete(roomId);
  else state.rooms.set(roomId, { ...item, isMember: false, unread: 0 });
  if (isActive(roomId)) {
    state.active = null;
    renderActive();
    $("messages").replaceChildren(note(`You were removed from ${item.name}.`));
    $("member-list").replaceChildren();
  } else {
    renderLists();
  }
}

function onOwnerChanged({ roomId }) {
  if (isActive(roomId)) refreshMembers();
}

// ---------------------------------------------------------------- forms and buttons

async function send(text) {
  const active = state.active;
  if (!active) return;
  if (active.kind === "pending") {
    const message = await invoke("SendDirectMessage", active.userName, text);
    if (!state.directs.has(message.roomId)) {
      state.directs.set(message.roomId, { roomId: message.roomId, userId: null, userName: active.userName, unread: 0 });
    }
    await refreshLists();
    await openConversation("direct", message.roomId);
    return;
  }
  const message = await invoke("SendMessage", active.id, text);
  if (isActive(message.roomId) && !messageElement(message.id)) appendToLog(messageItem(message));
}

function wireForms() {
  $("auth-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const action = event.submitter?.value === "register" ? "register" : "login";
    $("auth-error").textContent = "";
    try {
      await authenticate(action, $("auth-name").value.trim(), $("auth-password").value);
    } catch (error) {
      $("auth-error").textContent = errorText(error);
    }
  });
  $("logout").addEventListener("click", () => signOut());
  $("reconnect").addEventListener("click", () => startConnection());
  window.addEventListener("online", () => { if (state.connectionState === "offline") startConnection(); });

  $("new-room").addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = $("new-room-name").value.trim();
    if (!name) return;
    try {
      const room = await api("POST", "/api/v1/rooms", { name, isPrivate: $("new-room-private").checked });
      state.rooms.set(room.id, { ...room, isMember: true, unread: 0 });
      $("new-room-name").value = "";
      $("new-room-private").checked = false;
      await openConversation("room", room.id);
    } catch (error) {
      showAlert(errorText(error));
    }
  });
  $("new-dm").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = $("new-dm-name").value.trim();
    if (!name) return;
    $("new-dm-name").value = "";
    openPendingDirect(name);
  });
  $("add-member").addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = $("add-member-name").value.trim();
    if (!name || state.active?.kind !== "room") return;
    try {
      const user = await api("GET", `/api/v1/users/${encodeURIComponent(name)}`);
      await api("POST", `/api/v1/rooms/${state.active.id}/participants`, { userId: user.userId });
      $("add-member-name").value = "";
      refreshMembers();
    } catch (error) {
      showAlert(errorText(error));
    }
  });
  $("join").addEventListener("click", async () => {
    const active = state.active;
    try {
      await invoke("JoinRoom", active.id);
      await refreshLists();
      await openConversation("room", active.id);
    } catch (error) {
      showAlert(errorText(error));
    }
  });
  $("leave").addEventListener("click", async () => {
    const active = state.active;
    try {
      await invoke("LeaveRoom", active.id);
      state.active = null;
      await refreshLists();
      renderActive();
      $("messages").replaceChildren();
      $("member-list").replaceChildren();
    } catch (error) {
      showAlert(errorText(error));
    }
  });
  $("older").addEventListener("click", () => loadOlder().catch((error) => showAlert(errorText(error))));
  $("toggle-members").addEventListener("click", () => {
    const open = $("toggle-members").getAttribute("aria-expanded") !== "true";
    $("toggle-members").setAttribute("aria-expanded", String(open));
    $("chat-view").classList.toggle("members-hidden", !open);
  });

  const input = $("composer-input");
  $("composer").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    try {
      await send(text);
    } catch (error) {
      // Not sent: the text comes back to be sent again, unless something new was typed.
      if (!input.value) input.value = text;
      showAlert(errorText(error));
    }
    input.focus();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  input.addEventListener("input", () => {
    const active = state.active;
    if (!active || active.kind === "pending" || !input.value) return;
    const now = Date.now();
    if (now - state.lastTypingSent < TYPING_SEND_EVERY_MS) return;
    state.lastTypingSent = now;
    invoke("Typing", active.id).catch(() => {});
  });
  // Who is online changes without an event: refresh the open room's members now and then.
  setInterval(() => { if (document.visibilityState === "visible") refreshMembers(); }, 15_000);
}

// ---------------------------------------------------------------- start

function start() {
  wireForms();
  if (window.matchMedia("(max-width: 900px)").matches) {
    $("toggle-members").setAttribute("aria-expanded", "false");
    $("chat-view").classList.add("members-hidden");
  }
  state.session = loadSession();
  setConnection("offline");
  if (state.session) {
    enterChat().catch((error) => showAlert(errorText(error)));
  } else {
    $("auth-view").hidden = false;
    $("auth-name").focus();
  }
}

// signalr.min.js is a deferred classic script; modules run after it.
start();
