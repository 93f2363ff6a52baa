// Browser UI of the external chat simulator. Plain JavaScript, no framework
// and no build step. All state lives in `state`; the DOM is built with
// createElement and textContent only, so user content is never parsed as HTML.
//
// REST: GET/POST chats, POST/DELETE chat/:id, PUT/DELETE chat/:id/message/:mid.
// WebSocket ws: sends {type:"sub"|"unsub", id}, receives load, update, delete,
// newChat and error frames. A message is applied only when its version is
// newer than the one held, so frames may arrive in any order (an update before
// the load, a reply to our own POST after the update it caused).
"use strict";

(() => {
  const RECONNECT_BASE_MS = 250; // first retry after a dropped connection
  const RECONNECT_MAX_MS = 5000; // backoff cap: a restarted server is found within 5 s

  const byTestID = (id) => document.querySelector(`[data-testid="${id}"]`);
  const el = {
    conn: byTestID("conn-status"),
    connText: document.querySelector(".conn-text"),
    error: byTestID("error"),
    errorText: byTestID("error-text"),
    dismissError: byTestID("dismiss-error"),
    newChat: byTestID("new-chat"),
    chatList: byTestID("chat-list"),
    noChats: byTestID("no-chats"),
    title: byTestID("chat-title"),
    placeholder: byTestID("placeholder"),
    messages: byTestID("message-list"),
    noMessages: byTestID("no-messages"),
    form: byTestID("compose-form"),
    compose: byTestID("compose"),
    send: byTestID("send"),
  };

  const state = {
    chats: [], // chat ids, in display order
    chatsLoaded: false,
    selected: null, // id of the open chat
    messages: new Map(), // message id → message, of the open chat
    loaded: false, // the load frame of the open chat has arrived
    notice: "", // shown instead of the placeholder text (e.g. the chat was deleted)
    editing: null, // id of the message whose inline editor is open
    ws: null,
    attempt: 0, // reconnect attempts since the last open connection
    retryTimer: 0,
    refreshSeq: 0, // newest GET chats in flight; older answers are dropped
    liveAdds: new Set(), // chats created while a GET chats is in flight
    liveDeletes: new Set(), // chats deleted while a GET chats is in flight
  };

  // ---- small helpers ----

  // h creates an element: attrs sets attributes ("text" sets textContent,
  // "onX" adds a listener), children are appended as nodes or text.
  function h(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (v === true) e.setAttribute(k, "");
      else if (v !== false && v != null) e.setAttribute(k, String(v));
    }
    e.append(...children);
    return e;
  }

  const enc = encodeURIComponent;
  const shortID = (id) => String(id).slice(0, 8);

  // newer reports whether version a is newer than version b. Versions are
  // numbers; digit strings are compared exactly, as a number above 2^53 must
  // be sent as a string to survive JSON in a browser.
  function newer(a, b) {
    if (b === undefined || b === null) return true;
    if (typeof a === "number" && typeof b === "number") return a > b;
    const sa = String(a), sb = String(b);
    if (/^\d+$/.test(sa) && /^\d+$/.test(sb)) return BigInt(sa) > BigInt(sb);
    return sa > sb;
  }

  // instant turns an RFC 3339 time into a sortable [ms, sub-ms digits] pair;
  // the server's timestamps have microseconds, Date only milliseconds.
  function instant(iso) {
    const ms = Date.parse(iso);
    const frac = /\.(\d+)/.exec(String(iso));
    return [Number.isNaN(ms) ? 0 : ms, frac ? frac[1].padEnd(9, "0").slice(3, 9) : "000000"];
  }
  function compareTimes(a, b) {
    const [am, af] = instant(a), [bm, bf] = instant(b);
    return am !== bm ? am - bm : af < bf ? -1 : af > bf ? 1 : 0;
  }

  const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
  function formatTime(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return "";
    return d.toDateString() === new Date().toDateString() ? timeFormat.format(d) : dateTimeFormat.format(d);
  }

  // ---- errors and connection status ----

  function showError(text) {
    el.errorText.textContent = text;
    el.error.hidden = false;
  }
  function hideError() {
    el.error.hidden = true;
    el.errorText.textContent = "";
  }
  el.dismissError.addEventListener("click", hideError);

  function setConn(kind, text) {
    el.conn.dataset.state = kind; // connecting | open | closed
    el.connText.textContent = text;
  }

  // ---- REST ----

  // api calls the REST API and returns the decoded JSON body (null for 204).
  // It throws an Error carrying the server's {"error": "..."} message.
  async function api(method, path, body) {
    let res;
    try {
      res = await fetch(path, {
        method,
        headers: body === undefined ? {} : { "Content-Type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      throw new Error("the server could not be reached");
    }
    const text = res.status === 204 ? "" : await res.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!res.ok) {
      let msg = data && typeof data.error === "string" && data.error ? data.error : `${res.status} ${res.statusText}`.trim();
      const retry = res.headers.get("Retry-After");
      if (res.status === 429 && retry) msg += ` (retry after ${retry} s)`;
      throw new Error(msg);
    }
    return data;
  }

  // ---- WebSocket ----

  function wsOpen() {
    return state.ws !== null && state.ws.readyState === WebSocket.OPEN;
  }
  function wsSend(frame) {
    if (wsOpen()) state.ws.send(JSON.stringify(frame));
  }

  function connect() {
    clearTimeout(state.retryTimer);
    setConn("connecting", state.attempt === 0 ? "Connecting…" : "Reconnecting…");
    const url = new URL("ws", location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.hash = "";
    let ws;
    try {
      ws = new WebSocket(url);
    } catch {
      scheduleReconnect();
      return;
    }
    state.ws = ws;
    ws.addEventListener("open", () => {
      state.attempt = 0;
      setConn("open", "Live");
      // Everything missed while offline comes back: the load of the open
      // chat (merged by version), and the chat list.
      if (state.selected) wsSend({ type: "sub", id: state.selected });
      refreshChats();
    });
    ws.addEventListener("message", (e) => {
      let frame;
      try {
        frame = JSON.parse(e.data);
      } catch {
        return; // not ours to fix; the next load repairs the view
      }
      handleFrame(frame);
    });
    ws.addEventListener("close", () => {
      if (state.ws !== ws) return;
      state.ws = null;
      scheduleReconnect();
    });
  }

  function scheduleReconnect() {
    const base = Math.min(RECONNECT_MAX_MS, RECONNECT_BASE_MS * 2 ** state.attempt);
    const delay = Math.round(base * (0.8 + Math.random() * 0.4)); // jitter: clients do not return in lockstep
    state.attempt++;
    setConn("closed", `Offline, retrying in ${Math.max(1, Math.round(delay / 1000))} s`);
    state.retryTimer = setTimeout(connect, delay);
  }

  function handleFrame(f) {
    if (!f || typeof f !== "object") return;
    switch (f.type) {
      case "load":
        if (f.chatId !== state.selected) return; // a chat we have left since
        applyMessages(f.messages);
        state.loaded = true;
        renderConversation();
        break;
      case "update":
        if (f.chatId !== state.selected) return;
        applyMessages(f.messages);
        renderConversation();
        break;
      case "newChat":
        addChat(f.chatId);
        break;
      case "delete":
        removeChat(f.chatId);
        break;
      case "error":
        if (typeof f.error === "string") showError(f.chatId ? `Chat ${shortID(f.chatId)}: ${f.error}` : f.error);
        if (f.chatId && f.chatId === state.selected && !state.loaded) refreshChats();
        break;
      default:
        break;
    }
  }

  // applyMessages keeps, per message, the version with the highest version.
  function applyMessages(list) {
    if (!Array.isArray(list)) return;
    for (const m of list) {
      if (!m || typeof m.id !== "string") continue;
      const cur = state.messages.get(m.id);
      if (!cur || newer(m.version, cur.version)) state.messages.set(m.id, m);
    }
  }

  // ---- chats ----

  async function refreshChats() {
    const seq = ++state.refreshSeq;
    state.liveAdds.clear();
    state.liveDeletes.clear();
    let ids;
    try {
      ids = await api("GET", "chats");
    } catch (err) {
      if (seq === state.refreshSeq) showError(`Could not load the chats: ${err.message}`);
      return;
    }
    if (seq !== state.refreshSeq || !Array.isArray(ids)) return;
    // Frames that arrived while the request was in flight may be newer than
    // its answer.
    const chats = ids.filter((id) => !state.liveDeletes.has(id));
    for (const id of state.liveAdds) if (!chats.includes(id) && !state.liveDeletes.has(id)) chats.push(id);
    state.chats = chats;
    state.chatsLoaded = true;
    if (state.selected && !chats.includes(state.selected)) {
      selectChat(null, "This chat no longer exists.");
    } else if (!state.selected && location.hash.length > 1 && chats.includes(location.hash.slice(1))) {
      selectChat(location.hash.slice(1));
    }
    renderChats();
  }

  function addChat(id) {
    if (typeof id !== "string" || !id) return;
    state.liveAdds.add(id);
    state.liveDeletes.delete(id);
    if (!state.chats.includes(id)) {
      state.chats.push(id);
      renderChats();
    }
  }

  function removeChat(id) {
    state.liveDeletes.add(id);
    state.liveAdds.delete(id);
    state.chats = state.chats.filter((c) => c !== id);
    if (state.selected === id) selectChat(null, "This chat was deleted.");
    renderChats();
  }

  function selectChat(id, notice = "") {
    if (id === state.selected) return;
    if (state.selected) wsSend({ type: "unsub", id: state.selected });
    state.selected = id;
    state.messages = new Map();
    state.loaded = false;
    state.editing = null;
    state.notice = notice;
    el.messages.replaceChildren();
    el.compose.value = ""; // a draft belongs to the chat it was written in
    if (id) wsSend({ type: "sub", id });
    const url = new URL(location.href);
    url.hash = id ? id : "";
    history.replaceState(null, "", id ? url : url.pathname + url.search);
    renderChats();
    renderConversation();
    if (id) el.compose.focus();
  }

  async function createChat() {
    hideError();
    el.newChat.disabled = true;
    try {
      const chat = await api("POST", "chats");
      if (chat && typeof chat.id === "string") {
        addChat(chat.id);
        selectChat(chat.id);
      }
    } catch (err) {
      showError(`Could not create a chat: ${err.message}`);
    } finally {
      el.newChat.disabled = false;
    }
  }

  async function deleteChat(id, button) {
    hideError();
    button.disabled = true;
    try {
      await api("DELETE", `chat/${enc(id)}`);
      removeChat(id);
    } catch (err) {
      showError(`Could not delete chat ${shortID(id)}: ${err.message}`);
      button.disabled = false;
    }
  }

  function renderChats() {
    const rows = new Map();
    for (const li of el.chatList.children) rows.set(li.dataset.chatId, li);
    let prev = null;
    for (const id of state.chats) {
      let li = rows.get(id);
      rows.delete(id);
      if (!li) li = chatRow(id);
      li.setAttribute("aria-current", String(id === state.selected));
      const next = prev ? prev.nextSibling : el.chatList.firstChild;
      if (li !== next) el.chatList.insertBefore(li, next);
      prev = li;
    }
    for (const li of rows.values()) li.remove();
    el.chatList.dataset.loaded = String(state.chatsLoaded);
    el.noChats.hidden = !state.chatsLoaded || state.chats.length > 0;
  }

  function chatRow(id) {
    const del = h("button", {
      type: "button",
      class: "danger",
      "data-testid": "delete-chat",
      "aria-label": `Delete chat ${shortID(id)}`,
      text: "Delete",
    });
    del.addEventListener("click", (e) => {
      e.stopPropagation();
      deleteChat(id, del);
    });
    const li = h(
      "li",
      { class: "chat-item", "data-testid": "chat-item", "data-chat-id": id, title: id },
      h("button", { type: "button", class: "link chat-open chat-name", "data-testid": "open-chat", text: `Chat ${shortID(id)}` }),
      del,
    );
    li.addEventListener("click", () => selectChat(id)); // the whole row opens the chat
    return li;
  }

  // ---- messages ----

  function renderConversation() {
    const open = state.selected !== null;
    el.title.textContent = open ? `Chat ${state.selected}` : "No chat selected";
    el.placeholder.hidden = open;
    el.placeholder.textContent = state.notice || "Select a chat, or create one with “New chat”.";
    el.form.hidden = !open;
    el.messages.hidden = !open || !state.loaded;
    el.messages.dataset.loaded = String(state.loaded);
    if (open) {
      el.messages.dataset.chatId = state.selected;
      el.form.dataset.chatId = state.selected;
    } else {
      delete el.messages.dataset.chatId;
      delete el.form.dataset.chatId;
    }
    el.noMessages.hidden = !open || !state.loaded || state.messages.size > 0;
    if (!open || !state.loaded) return;

    const list = el.messages;
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    const sorted = [...state.messages.values()].sort(
      (a, b) => compareTimes(a.createdAt, b.createdAt) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
    );
    const rows = new Map();
    for (const li of list.children) rows.set(li.dataset.messageId, li);
    let prev = null;
    for (const m of sorted) {
      let li = rows.get(m.id);
      rows.delete(m.id);
      if (!li) li = messageRow(m.id);
      fillMessageRow(li, m);
      const next = prev ? prev.nextSibling : list.firstChild;
      if (li !== next) list.insertBefore(li, next);
      prev = li;
    }
    for (const li of rows.values()) li.remove();
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  // messageRow builds the fixed structure of one message; fillMessageRow
  // updates it in place, so an open editor keeps its draft and focus.
  function messageRow(id) {
    const li = h("li", { class: "message", "data-testid": "message", "data-message-id": id });
    const content = h("p", { class: "message-content", "data-testid": "message-content" });
    const time = h("time", { "data-testid": "message-time" });
    const edited = h("span", { class: "tag", "data-testid": "edited", text: "edited" });
    const deleted = h("span", { class: "tag deleted", "data-testid": "deleted", text: "message deleted" });
    const editBtn = h("button", { type: "button", "data-testid": "edit", text: "Edit" });
    const deleteBtn = h("button", { type: "button", class: "danger", "data-testid": "delete-message", text: "Delete" });
    const actions = h("span", { class: "message-actions" }, editBtn, deleteBtn);
    editBtn.addEventListener("click", () => openEditor(li));
    deleteBtn.addEventListener("click", () => deleteMessage(li, deleteBtn));
    li.append(content, h("div", { class: "message-meta" }, time, edited, deleted, actions));
    li.parts = { content, time, edited, deleted, actions, editBtn, deleteBtn, form: null };
    return li;
  }

  function fillMessageRow(li, m) {
    const p = li.parts;
    const isDeleted = m.isDeleted === true;
    const isEdited = !isDeleted && compareTimes(m.updatedAt, m.createdAt) > 0;
    li.dataset.version = String(m.version);
    li.dataset.deleted = String(isDeleted);
    li.dataset.edited = String(isEdited);
    p.content.textContent = m.content;
    p.time.dateTime = m.createdAt;
    p.time.textContent = formatTime(m.createdAt);
    p.time.title = `sent ${m.createdAt}` + (m.updatedAt !== m.createdAt ? `, changed ${m.updatedAt}` : "");
    p.edited.hidden = !isEdited;
    p.deleted.hidden = !isDeleted;
    if (isDeleted && state.editing === m.id) closeEditor(li);
    p.actions.hidden = isDeleted || state.editing === m.id;
    p.content.hidden = state.editing === m.id;
  }

  function openEditor(li) {
    const id = li.dataset.messageId;
    if (state.editing && state.editing !== id) {
      const other = el.messages.querySelector(`[data-message-id="${CSS.escape(state.editing)}"]`);
      if (other) closeEditor(other);
    }
    if (li.parts.form) return;
    const m = state.messages.get(id);
    if (!m) return;
    state.editing = id;
    const input = h("textarea", { "data-testid": "edit-input", rows: 2, "aria-label": "Edit message", required: true });
    input.value = m.content;
    const save = h("button", { type: "submit", class: "primary", "data-testid": "save-edit", text: "Save" });
    const cancel = h("button", { type: "button", "data-testid": "cancel-edit", text: "Cancel" });
    const form = h("form", { class: "edit-form", "data-testid": "edit-form" }, input, save, cancel);
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      saveEdit(li, input, save);
    });
    cancel.addEventListener("click", () => closeEditor(li));
    input.addEventListener("keydown", (e) => {
      if (e.key === "Escape") closeEditor(li);
      else if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        form.requestSubmit();
      }
    });
    li.parts.form = form;
    li.parts.content.hidden = true;
    li.parts.actions.hidden = true;
    li.insertBefore(form, li.parts.content);
    input.focus();
    input.setSelectionRange(input.value.length, input.value.length);
  }

  function closeEditor(li) {
    if (li.parts.form) li.parts.form.remove();
    li.parts.form = null;
    li.parts.content.hidden = false;
    li.parts.actions.hidden = li.dataset.deleted === "true";
    if (state.editing === li.dataset.messageId) state.editing = null;
  }

  async function saveEdit(li, input, save) {
    const chatId = state.selected;
    const id = li.dataset.messageId;
    hideError();
    save.disabled = true;
    try {
      const m = await api("PUT", `chat/${enc(chatId)}/message/${enc(id)}`, { content: input.value });
      closeEditor(li);
      if (state.selected === chatId && m && m.id) {
        applyMessages([m]);
        renderConversation();
      }
    } catch (err) {
      showError(`Could not save the edit: ${err.message}`);
      save.disabled = false;
    }
  }

  async function deleteMessage(li, button) {
    const chatId = state.selected;
    const id = li.dataset.messageId;
    hideError();
    button.disabled = true;
    try {
      // 204 with no body: the deleted version arrives as a WebSocket update.
      await api("DELETE", `chat/${enc(chatId)}/message/${enc(id)}`);
    } catch (err) {
      showError(`Could not delete the message: ${err.message}`);
    } finally {
      button.disabled = false;
    }
  }

  async function sendMessage() {
    const chatId = state.selected;
    const content = el.compose.value;
    if (!chatId || content.trim() === "") return;
    hideError();
    el.send.disabled = true;
    try {
      const m = await api("POST", `chat/${enc(chatId)}`, { content });
      if (el.compose.value === content) el.compose.value = "";
      if (state.selected === chatId && m && m.id) {
        applyMessages([m]);
        renderConversation();
        el.messages.scrollTop = el.messages.scrollHeight;
      }
    } catch (err) {
      showError(`Could not send the message: ${err.message}`);
    } finally {
      el.send.disabled = false;
    }
  }

  // ---- wiring ----

  el.newChat.addEventListener("click", createChat);
  el.form.addEventListener("submit", (e) => {
    e.preventDefault();
    sendMessage();
  });
  el.compose.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      el.form.requestSubmit();
    }
  });
  window.addEventListener("hashchange", () => {
    const id = location.hash.slice(1);
    if (id && state.chats.includes(id)) selectChat(id);
  });

  renderChats();
  renderConversation();
  refreshChats();
  connect();
})();
