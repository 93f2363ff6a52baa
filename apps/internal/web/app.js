// The internal chat UI. Rules it keeps whatever the network does:
// - a message is shown at the highest version seen, never an older one
//   (loads and updates are both applied by version);
// - updates that arrive before a chat's load are buffered and applied
//   after it;
// - the WebSocket reconnects with backoff, re-subscribes and reloads, so
//   nothing missed while disconnected stays missing.
"use strict";

const app = {
  ws: null,
  backoffMs: 500,
  chats: new Map(),     // id -> version of the chat's last event
  current: null,        // the chat shown
  msgs: new Map(),      // id -> message, the current chat's
  loaded: false,        // the current chat's load has arrived since (re)subscribing
  pending: [],          // updates that came before the load
  chatDeleted: false,
  stalled: "",          // why this instance's live path is stalled, as it reports ("" when it is not)
  stats: { applied: 0, stale: 0, buffered: 0, frames: 0 },
};
window.chatApp = app; // for tests and curious people
app.handle = (frame) => handle(frame); // as if the frame came from the server

const $ = (id) => document.getElementById(id);

function connect() {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const ws = new WebSocket(scheme + location.host + "/ws");
  app.ws = ws;
  ws.onopen = () => {
    app.backoffMs = 500;
    showLive();
    loadChats();
    if (app.current) subscribe(app.current, true);
  };
  ws.onmessage = (e) => {
    let frame;
    try { frame = JSON.parse(e.data); } catch { return; }
    handle(frame);
  };
  ws.onclose = (e) => {
    if (app.ws !== ws) return;
    setConn("down", "reconnecting in " + Math.round(app.backoffMs / 100) / 10 + " s" + (e.reason ? " (" + e.reason + ")" : ""));
    setTimeout(connect, app.backoffMs);
    app.backoffMs = Math.min(app.backoffMs * 2, 10000);
  };
}

function send(frame) {
  if (app.ws && app.ws.readyState === WebSocket.OPEN) app.ws.send(JSON.stringify(frame));
}

// subscribe shows chat id: its load replaces nothing newer than what is shown
// (a reconnect's reload keeps the versions already seen).
function subscribe(id, again) {
  if (app.current && app.current !== id) {
    send({ type: "unsub", id: app.current });
    app.msgs = new Map();
    app.chatDeleted = false;
  }
  app.current = id;
  app.loaded = false;
  app.pending = [];
  $("loading").hidden = false;
  send({ type: "sub", id });
  if (!again) render();
}

// apply keeps m if it is newer than the message shown.
function apply(m) {
  const old = app.msgs.get(m.id);
  if (old && old.version >= m.version) { app.stats.stale++; return; }
  app.msgs.set(m.id, m);
  app.stats.applied++;
}

function handle(f) {
  app.stats.frames++;
  switch (f.type) {
    case "load":
      if (f.chatId !== app.current) return;
      for (const m of f.messages || []) apply(m);
      app.chatDeleted = app.chatDeleted || !!f.deleted;
      app.loaded = true;
      for (const m of app.pending) apply(m);
      app.pending = [];
      $("loading").hidden = true;
      break;
    case "update":
      if (f.chatId !== app.current) return;
      if (!app.loaded) {
        app.pending.push(...(f.messages || []));
        app.stats.buffered += (f.messages || []).length;
        return;
      }
      for (const m of f.messages || []) apply(m);
      break;
    case "newChat":
      if (!app.chats.has(f.chatId)) app.chats.set(f.chatId, 0);
      renderChats();
      return;
    case "delete":
      app.chats.delete(f.chatId);
      if (f.chatId === app.current) {
        app.chatDeleted = true;
        for (const m of app.msgs.values()) m.isDeleted = true;
      }
      renderChats();
      break;
    case "error":
      if (f.chatId && f.chatId === app.current && !app.loaded) {
        // Nothing stored yet (or the load failed): show what arrives live.
        app.loaded = true;
        for (const m of app.pending) apply(m);
        app.pending = [];
        $("loading").hidden = true;
      }
      console.warn("server:", f.error, f.chatId || "");
      break;
    default:
      return;
  }
  render();
}

async function loadChats() {
  try {
    const resp = await fetch("/chats");
    if (!resp.ok) return;
    for (const c of await resp.json()) app.chats.set(c.id, c.version);
    $("chats").dataset.loaded = "true";
    renderChats();
  } catch { /* the WebSocket's reconnect will call again */ }
}

function renderChats() {
  const ul = $("chats");
  ul.replaceChildren();
  for (const id of [...app.chats.keys()].sort()) {
    const li = document.createElement("li");
    li.textContent = id;
    li.dataset.testid = "chat-item";
    li.dataset.chatId = id;
    if (id === app.current) li.className = "current";
    li.onclick = () => subscribe(id, false);
    ul.append(li);
  }
  $("no-chats").hidden = app.chats.size > 0;
}

function render() {
  renderChats();
  $("chat-title").textContent = app.current ? "Chat " + app.current : "Pick a chat";
  $("chat-deleted").hidden = !app.chatDeleted;
  const ul = $("messages");
  ul.dataset.chatId = app.current || "";
  ul.dataset.loaded = String(app.loaded);
  ul.replaceChildren();
  const msgs = [...app.msgs.values()].sort((a, b) =>
    a.createdAt < b.createdAt ? -1 : a.createdAt > b.createdAt ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  for (const m of msgs) {
    const li = document.createElement("li");
    const deleted = m.isDeleted || app.chatDeleted;
    const edited = m.updatedAt !== m.createdAt && !deleted;
    li.dataset.testid = "message";
    li.dataset.messageId = m.id;
    li.dataset.version = String(m.version);
    li.dataset.deleted = String(deleted);
    li.dataset.edited = String(edited);
    if (deleted) li.classList.add("deleted");
    const content = document.createElement("span");
    content.className = "content";
    content.dataset.testid = "message-content";
    content.textContent = deleted ? "(deleted)" : m.content;
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = "v" + m.version + (edited ? " · edited" : "");
    li.append(content, meta);
    ul.append(li);
  }
}

// showLive shows the open connection as live, or as stalled while the
// instance reports its live path stalled (connected, but no updates flow).
function showLive() {
  if (!app.ws || app.ws.readyState !== WebSocket.OPEN) return;
  if (app.stalled) setConn("stalled", "stalled: updates are delayed (" + app.stalled + ")");
  else setConn("live", "live");
}

function setConn(cls, text) {
  const el = $("conn");
  el.className = "conn " + cls;
  el.dataset.state = cls === "live" ? "open" : cls === "stalled" ? "stalled" : "closed";
  el.textContent = text;
}

async function pollSyncStatus() {
  try {
    const resp = await fetch("/api/sync-status");
    const s = await resp.json();
    const el = $("sync-status");
    if (!s.available) {
      el.textContent = "sync: " + (s.error || "unavailable");
    } else {
      const st = s.status;
      const lag = typeof st.lagSeconds === "number" ? st.lagSeconds.toFixed(1) + " s" : "?";
      const poll = st.lastPoll && !st.lastPoll.startsWith("0001") ? new Date(st.lastPoll).toLocaleTimeString() : "never";
      el.textContent = "sync: " + st.state + (st.worker ? " on " + st.worker : "") +
        (st.cluster ? " → kafka " + st.cluster : "") + " · lag " + lag + " · last poll " + poll;
    }
  } catch { $("sync-status").textContent = "sync: unknown"; }
  setTimeout(pollSyncStatus, 3000);
}

// pollInstanceStatus asks this instance whether its live path delivers.
async function pollInstanceStatus() {
  try {
    const resp = await fetch("/api/instance-status");
    const s = await resp.json();
    app.stalled = s.stalled || "";
    showLive();
  } catch { /* the connection indicator says what the WebSocket knows */ }
  setTimeout(pollInstanceStatus, 2000);
}

connect();
pollSyncStatus();
pollInstanceStatus();
