// The internal chat UI. Rules it keeps whatever the network does:
// - a message is shown at the highest version seen, never an older one
//   (loads, pages and updates are all applied by version), also after
//   switching to another chat and back: the messages of the last
//   KEPT_CHATS chats shown are kept, and are each message's floor;
// - updates that arrive before a chat's load are buffered and applied
//   after it;
// - a chat shows its newest page (the load) and asks for older pages
//   ("more") when scrolled to the top, keeping the scroll position;
// - a load or page that fails (an error frame: the database failing over,
//   the connection's rate exceeded) is retried with capped backoff and
//   shown as "retrying…", never as loaded and empty;
// - the WebSocket reconnects with backoff, re-subscribes and reloads, so
//   nothing missed while disconnected stays missing.
"use strict";

// KEPT_CHATS bounds the chats whose messages (the version floors) are kept
// after switching away from them.
const KEPT_CHATS = 20;
// RETRY_MIN_MS and RETRY_MAX_MS bound the backoff of a failed load or page.
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 10000;
// MORE_AT_PX: within this distance of the top, the older page is asked.
const MORE_AT_PX = 40;

const app = {
  ws: null,
  backoffMs: 500,
  chats: new Map(),     // id -> version of the chat's last event
  current: null,        // the chat shown
  msgs: new Map(),      // id -> message, the current chat's (also the floor)
  kept: new Map(),      // chat id -> its msgs map, the last KEPT_CHATS shown
  loaded: false,        // the current chat's load has arrived since (re)subscribing
  pending: [],          // updates that came before the load
  chatDeleted: false,
  hasMore: false,       // older messages than the shown ones exist
  before: "",           // the cursor of the next older page
  oldest: null,         // the oldest message of the pages received: older ones (updates) are not shown yet
  moreInFlight: false,  // a "more" is asked and not answered
  retryMs: RETRY_MIN_MS,
  retryTimer: null,
  scrollToBottom: false,
  stalled: "",          // why this instance's live path is stalled, as it reports ("" when it is not)
  stats: { applied: 0, stale: 0, buffered: 0, frames: 0, retries: 0, pages: 0 },
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
// or was shown before (a reconnect's reload, a switch back to the chat, keep
// the versions already seen).
function subscribe(id, again) {
  if (app.current && app.current !== id) {
    send({ type: "unsub", id: app.current });
    app.chatDeleted = false;
  }
  if (app.current !== id) {
    app.msgs = app.kept.get(id) || new Map();
    app.kept.delete(id);
    app.kept.set(id, app.msgs); // the most recent last
    while (app.kept.size > KEPT_CHATS) app.kept.delete(app.kept.keys().next().value);
  }
  app.current = id;
  app.loaded = false;
  app.pending = [];
  app.hasMore = false;
  app.before = "";
  app.oldest = null;
  app.moreInFlight = false;
  clearTimeout(app.retryTimer);
  app.retryMs = RETRY_MIN_MS;
  showLoading("Loading…");
  send({ type: "sub", id });
  if (!again) render();
}

// askMore asks for the page before the oldest shown, once at a time.
function askMore() {
  if (!app.loaded || !app.hasMore || app.moreInFlight || !app.before) return;
  app.moreInFlight = true;
  $("more-status").hidden = false;
  $("more-status").textContent = "Loading older messages…";
  send({ type: "more", chatId: app.current, before: app.before });
}

// retry runs again, after the current backoff (doubling, capped), a request
// of chat id that failed: shown as retrying meanwhile.
function retry(id, why, again) {
  app.stats.retries++;
  const ms = app.retryMs;
  app.retryMs = Math.min(app.retryMs * 2, RETRY_MAX_MS);
  clearTimeout(app.retryTimer);
  app.retryTimer = setTimeout(() => { if (app.current === id) again(); }, ms);
  return "retrying in " + Math.round(ms / 100) / 10 + " s (" + why + ")…";
}

function showLoading(text) {
  const el = $("loading");
  el.hidden = !text;
  el.textContent = text || "";
  el.dataset.state = !text ? "done" : text.startsWith("retrying") ? "retrying" : "loading";
}

// before reports whether message a comes before b in display order.
function before(a, b) {
  return a.createdAt < b.createdAt || (a.createdAt === b.createdAt && a.id < b.id);
}

// takePage applies a load's or page's messages and keeps its bounds.
function takePage(f) {
  for (const m of f.messages || []) {
    apply(m);
    if (!app.oldest || before(m, app.oldest)) app.oldest = m;
  }
  app.hasMore = !!f.hasMore;
  app.before = f.before || "";
  app.chatDeleted = app.chatDeleted || !!f.deleted;
  app.retryMs = RETRY_MIN_MS;
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
      takePage(f);
      app.loaded = true;
      for (const m of app.pending) apply(m);
      app.pending = [];
      showLoading("");
      app.scrollToBottom = true;
      break;
    case "page":
      if (f.chatId !== app.current || !app.moreInFlight) return;
      app.moreInFlight = false;
      app.stats.pages++;
      takePage(f);
      $("more-status").hidden = true;
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
      console.warn("server:", f.error, f.chatId || "", f.code || "");
      if (!f.chatId || f.chatId !== app.current) break;
      if (f.request === "more" && app.moreInFlight) {
        // Still hasMore: asked again after the backoff.
        const id = app.current;
        $("more-status").textContent = retry(id, f.error, () => { app.moreInFlight = false; askMore(); });
      } else if (!app.loaded && f.code === "unknownChat") {
        // Nothing stored yet: show what arrives live.
        app.loaded = true;
        for (const m of app.pending) apply(m);
        app.pending = [];
        showLoading("");
      } else if (!app.loaded) {
        // The load failed (the database failing over, too many requests):
        // not loaded and empty — asked again after the backoff.
        const id = app.current;
        showLoading(retry(id, f.error, () => { showLoading("Loading…"); send({ type: "sub", id }); }));
      }
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

// render shows the current chat's messages from the oldest page received
// on (an update of an older message waits for its page), keeping the
// message at the top of the view where it was — or the view at the bottom
// if it was there, or after a load.
function render() {
  renderChats();
  $("chat-title").textContent = app.current ? "Chat " + app.current : "Pick a chat";
  $("chat-deleted").hidden = !app.chatDeleted;
  const ul = $("messages");
  const atBottom = ul.scrollHeight - ul.scrollTop - ul.clientHeight < 5;
  let anchor = null, anchorOffset = 0;
  for (const li of ul.children) {
    if (li.offsetTop + li.offsetHeight > ul.scrollTop) {
      anchor = li.dataset.messageId;
      anchorOffset = li.offsetTop - ul.scrollTop;
      break;
    }
  }
  ul.dataset.chatId = app.current || "";
  ul.dataset.loaded = String(app.loaded);
  ul.dataset.hasMore = String(app.loaded && app.hasMore);
  ul.replaceChildren();
  const shown = !app.loaded ? [] : [...app.msgs.values()].filter((m) => !app.hasMore || !app.oldest || !before(m, app.oldest));
  const msgs = shown.sort((a, b) => before(a, b) ? -1 : before(b, a) ? 1 : 0);
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
  const kept = anchor && !app.scrollToBottom && !atBottom && ul.querySelector(`[data-message-id="${CSS.escape(anchor)}"]`);
  if (kept) ul.scrollTop = kept.offsetTop - anchorOffset;
  else ul.scrollTop = ul.scrollHeight;
  app.scrollToBottom = false;
  // A page too short to scroll: ask for the older one at once.
  if (ul.scrollTop < MORE_AT_PX) askMore();
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

$("messages").addEventListener("scroll", () => {
  if ($("messages").scrollTop < MORE_AT_PX) askMore();
});
connect();
pollSyncStatus();
pollInstanceStatus();
