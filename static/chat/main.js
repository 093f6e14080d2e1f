// The chat page: pairing, the session sidebar, the socket with its reconnects,
// the outbox that never loses a message, and the wiring of what render.js draws.

import { api, AuthError, tokenStore } from "./api.js";
import { hideBanner, showBanner } from "./banner.js";
import { Composer } from "./composer.js";
import { Pairing } from "./pairing.js";
import { SidePanel } from "./panels.js";
import { TurnView, flushRendering, onRendered, userMessage } from "./render.js";
import { Sidebar, sessionUrl } from "./sidebar.js";
import { setBusy, setStopping, state } from "./state.js";
import { $, uuid4 } from "./util.js";

const OUTBOX_PREFIX = "construct.outbox.";
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;
const SESSION_REFRESH_MS = 20000;
const RETRYABLE = new Set(["SESSION_BUSY", "RATE_LIMITED"]);
const CLOSE_TOKEN_REVOKED = 4401;

const ui = {
  title: $("session-title"),
  conn: $("conn"),
  connText: $("conn-text"),
  messages: $("messages"),
  statusLine: $("status-line"),
};

// What has not moved out of this file yet, next to what the features share.
Object.assign(state, {
  socket: null,
  opened: false, // the current socket has delivered session_start
  attempt: 0, // reconnect attempts since the last good session_start
  reconnectTimer: null,
  frames: Promise.resolve(), // frames are handled one at a time, in order
  turns: new Map(), // turn_id -> TurnView
  outbox: [], // messages not yet accepted by the server: [{client_id, content, page_context, view}]
  retryTimer: null,
});

// --- Helpers --------------------------------------------------------------------------

function sessionFromUrl() {
  const params = new URLSearchParams(location.search);
  const fromQuery = params.get("session");
  if (fromQuery) return fromQuery;
  const hash = decodeURIComponent(location.hash.slice(1));
  return hash || null;
}

function nearBottom() {
  const m = ui.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 120;
}

let stickToBottom = true;
ui.messages.addEventListener("scroll", () => {
  stickToBottom = nearBottom();
});
onRendered(() => {
  if (stickToBottom) ui.messages.scrollTop = ui.messages.scrollHeight;
});

function appendMessage(node) {
  ui.messages.append(node);
  if (stickToBottom) ui.messages.scrollTop = ui.messages.scrollHeight;
}

// --- Status line, connection indicator -------------------------------------------------

function setStatusLine(text) {
  ui.statusLine.textContent = text || "";
  ui.statusLine.hidden = !text;
}

function setConn(kind, text) {
  ui.conn.dataset.state = kind;
  ui.connText.textContent = text;
}

// --- Pairing ---------------------------------------------------------------------------

const pairing = new Pairing({
  signedIn: () => {
    const id = sessionFromUrl() || uuid4();
    state.sessionId = null;
    switchSession(id, { push: false });
    sidebar.load();
  },
  signedOut: () => {
    state.generation += 1;
    closeSocket();
  },
});

const authFailed = () => pairing.refuse();

// --- The outbox: typed messages are kept until the server has them ----------------------

function saveOutbox() {
  if (!state.sessionId) return;
  const items = state.outbox.map(({ client_id, content, page_context }) => ({ client_id, content, page_context }));
  try {
    if (items.length) localStorage.setItem(OUTBOX_PREFIX + state.sessionId, JSON.stringify(items));
    else localStorage.removeItem(OUTBOX_PREFIX + state.sessionId);
  } catch {
    // storage full or blocked: the outbox still lives in memory
  }
}

function loadOutbox() {
  let items = [];
  try {
    items = JSON.parse(localStorage.getItem(OUTBOX_PREFIX + state.sessionId) || "[]");
  } catch {
    items = [];
  }
  state.outbox = Array.isArray(items) ? items.filter((i) => i && i.client_id && i.content) : [];
}

function drawOutbox() {
  for (const item of state.outbox) {
    if (!item.view) item.view = userMessage(item.content, { status: "Queued" });
    item.view.setStatus(state.opened ? "Queued" : "Waiting for the connection", "queued");
    appendMessage(item.view.el);
  }
}

function enqueue(content, pageContext) {
  const item = {
    client_id: uuid4(),
    content,
    page_context: pageContext,
    view: userMessage(content),
  };
  state.outbox.push(item);
  saveOutbox();
  stickToBottom = true;
  appendMessage(item.view.el);
  item.view.setStatus(socketReady() ? (state.busy ? "Queued" : "Sending…") : "Waiting for the connection", "queued");
  pump();
}

function socketReady() {
  return state.opened && state.socket && state.socket.readyState === WebSocket.OPEN;
}

/** Send the next queued message when the socket is up and no turn is running. */
function pump() {
  if (!socketReady() || state.busy || state.awaiting || !state.outbox.length) return;
  const item = state.outbox[0];
  const frame = { type: "message", content: item.content, client_id: item.client_id };
  if (item.page_context) frame.page_context = item.page_context;
  state.awaiting = item;
  item.acked = false;
  setBusy(true);
  item.view.setStatus("Sending…", "sending");
  state.socket.send(JSON.stringify(frame));
}

function onAck(frame) {
  const item = state.outbox.find((i) => i.client_id === frame.client_id);
  if (!item) return;
  state.outbox = state.outbox.filter((i) => i !== item);
  saveOutbox();
  if (frame.duplicate) {
    // The server had it already (its first ack was lost with a socket): the
    // history shows it, or its turn will when it starts.
    item.view.el.remove();
    if (state.awaiting === item) {
      state.awaiting = null;
      setBusy(Boolean(state.activeTurn));
      pump();
    }
    return;
  }
  item.acked = true;
  item.view.setStatus("", "");
}

/** An error that belongs to no turn: about the message just sent, or the socket. */
function onLooseError(frame) {
  showBanner(frame.code, frame.message);
  const item = state.awaiting;
  if (!item) return;
  state.awaiting = null;
  setBusy(Boolean(state.activeTurn));
  if (RETRYABLE.has(frame.code)) {
    // Not run: it stays first in the outbox and is sent again shortly.
    if (!state.outbox.includes(item)) state.outbox.unshift(item);
    saveOutbox();
    const seconds = Number(frame.retry_after) || 3;
    item.view.setStatus(`Not sent yet (${frame.code}); retrying in ${seconds} s`, "queued");
    clearTimeout(state.retryTimer);
    state.retryTimer = setTimeout(pump, seconds * 1000);
    return;
  }
  // Refused for good (empty, too large, bad frame): give the text back to edit.
  state.outbox = state.outbox.filter((i) => i !== item);
  saveOutbox();
  item.view.setStatus(`Not sent: ${frame.code}`, "failed");
  composer.giveBack(item.content);
  pump();
}

// --- The socket ------------------------------------------------------------------------

function closeSocket() {
  clearTimeout(state.reconnectTimer);
  clearInterval(countdown);
  clearTimeout(state.retryTimer);
  const socket = state.socket;
  state.socket = null;
  state.opened = false;
  if (socket) {
    socket.onclose = null;
    socket.onmessage = null;
    socket.onerror = null;
    socket.close(1000);
  }
}

function connect() {
  clearTimeout(state.reconnectTimer);
  if (state.socket) return;
  const generation = state.generation;
  const params = new URLSearchParams({ session_id: state.sessionId });
  const resume = state.activeTurn;
  if (resume && !resume.finished) {
    // Only what this page has not seen yet of the running turn is replayed.
    params.set("turn_id", resume.turnId);
    params.set("last_seq", String(resume.lastSeq));
  }
  const protocols = ["construct.v1"];
  const token = tokenStore.get();
  // The token travels as a subprotocol, not in the URL, so no access log sees it.
  if (token) protocols.push(`bearer.${token}`);
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  let socket;
  try {
    socket = new WebSocket(`${scheme}://${location.host}/ws/chat?${params}`, protocols);
  } catch (error) {
    showBanner("", `Could not open the chat socket: ${error.message}`);
    scheduleReconnect();
    return;
  }
  state.socket = socket;
  state.opened = false;
  setConn("connecting", state.attempt ? "Reconnecting…" : "Connecting…");
  socket.onmessage = (event) => {
    if (socket !== state.socket) return;
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      return;
    }
    state.frames = state.frames
      .then(() => handleFrame(frame, generation))
      .catch((error) => console.error("could not handle a frame", frame.type, error));
  };
  socket.onclose = (event) => {
    if (socket !== state.socket) return;
    const wasOpen = state.opened;
    state.socket = null;
    state.opened = false;
    state.frames = state.frames.then(() => onSocketClosed(event, wasOpen, generation));
  };
}

async function onSocketClosed(event, wasOpen, generation) {
  if (generation !== state.generation) return;
  // A message sent but not acknowledged is still in the outbox: it goes again,
  // with the same client_id, so the server runs it at most once.
  if (state.awaiting) {
    state.awaiting = null;
    setBusy(Boolean(state.activeTurn));
  }
  for (const item of state.outbox) item.view?.setStatus("Waiting for the connection", "queued");
  if (event.code === CLOSE_TOKEN_REVOKED) {
    pairing.revoked();
    return;
  }
  setConn("offline", "Disconnected");
  if (!wasOpen && (await pairing.tokenRefused())) return;
  if (generation !== state.generation) return;
  scheduleReconnect();
}

let countdown = null;

function scheduleReconnect() {
  clearTimeout(state.reconnectTimer);
  clearInterval(countdown);
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** state.attempt);
  const delay = Math.round(base * (0.8 + Math.random() * 0.4));
  state.attempt += 1;
  const until = Date.now() + delay;
  const tick = () => {
    const left = Math.ceil((until - Date.now()) / 1000);
    if (!state.socket) setConn("offline", left > 0 ? `Reconnecting in ${left} s…` : "Reconnecting…");
  };
  tick();
  countdown = setInterval(tick, 1000);
  state.reconnectTimer = setTimeout(() => {
    clearInterval(countdown);
    connect();
  }, delay);
}

function reconnectNow() {
  if (state.socket || !state.signedIn) return;
  state.attempt = 0;
  connect();
}

window.addEventListener("online", reconnectNow);
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") reconnectNow();
});

// --- Frames from the server ------------------------------------------------------------

async function handleFrame(frame, generation) {
  if (generation !== state.generation || !frame || typeof frame !== "object") return;
  switch (frame.type) {
    case "session_start":
      await onSessionStart(frame, generation);
      return;
    case "ack":
      onAck(frame);
      return;
    case "agent_event":
      events.add(frame.event);
      return;
    case "connected":
      return;
    default:
      if (typeof frame.turn_id === "string") onTurnEvent(frame);
      else onLooseFrame(frame);
  }
}

async function onSessionStart(frame, generation) {
  const resuming = state.activeTurn && !state.activeTurn.finished && frame.turn_id === state.activeTurn.turnId;
  if (!resuming) {
    // First open, or the page missed a turn's end while away: draw what the server has.
    await loadConversation(frame, generation);
    if (generation !== state.generation) return;
  }
  state.opened = true;
  state.attempt = 0;
  setConn("online", "Connected");
  if (frame.name !== undefined) setTitle(frame.name);
  if (frame.state === "error" || frame.state === "interrupted") {
    showBanner("", frame.state === "interrupted"
      ? "The last answer in this session was interrupted (the server restarted while it ran)."
      : "The last answer in this session ended with an error.", "warning");
  }
  setBusy(Boolean(state.activeTurn && !state.activeTurn.finished));
  for (const item of state.outbox) item.view?.setStatus(state.busy ? "Queued" : "Sending…", "queued");
  sidebar.refresh();
  pump();
}

async function loadConversation(start, generation) {
  resetConversation();
  let messages = [];
  if (start.message_count > 0) {
    try {
      messages = (await api.messages(state.sessionId)).messages || [];
    } catch (error) {
      if (error instanceof AuthError) {
        authFailed();
        return;
      }
      showBanner("", `Could not load the history: ${error.message}`);
    }
  }
  if (generation !== state.generation) return;
  const running = start.state === "running" && typeof start.turn_id === "string" ? start.turn_id : null;
  renderHistory(messages, running);
  if (running) {
    // The server replays this turn's events right after session_start.
    state.activeTurn = newTurn(running);
  }
  drawOutbox();
  flushRendering();
  stickToBottom = true;
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

function resetConversation() {
  ui.messages.replaceChildren();
  state.turns.clear();
  state.activeTurn = null;
  state.awaiting = null;
  canvas.reset();
  setStatusLine("");
  setBusy(false);
}

/** The saved messages, grouped into user messages and assistant turns. */
function renderHistory(messages, runningTurnId) {
  let view = null;
  let key = null;
  for (const message of messages) {
    const data = message.data && typeof message.data === "object" ? message.data : {};
    // The running turn's own events are replayed over the socket: keep only its question.
    if (runningTurnId && message.turn_id === runningTurnId && message.role !== "user") continue;
    if (message.role === "user") {
      view = null;
      appendMessage(userMessage(message.content, { createdAt: message.created_at }).el);
      continue;
    }
    if (message.role !== "assistant" && message.role !== "tool") continue;
    const turnKey = message.turn_id || `seq-${message.seq}`;
    if (!view || key !== turnKey) {
      view = new TurnView(message.turn_id || null, { live: false, createdAt: message.created_at });
      key = turnKey;
      if (message.turn_id) state.turns.set(message.turn_id, view);
      appendMessage(view.el);
    }
    if (message.role === "assistant") {
      if (data.thinking) view.think(data.thinking);
      if (message.content) view.chunk(message.content);
      for (const call of Array.isArray(data.tool_calls) ? data.tool_calls : []) {
        view.toolCall(call.id, call.name, call.arguments);
        canvas.apply(call.name, call.arguments, { show: false });
      }
      if (data.stopped) view.setNote("Stopped: the reply was cut short here", "stopped");
      if (data.error) view.setNote(`Ended with an error (${data.error})`, "error");
    } else {
      view.toolResult(data.tool_call_id, data.name, message.content, data.is_error);
    }
  }
  for (const turn of state.turns.values()) turn.finish("history");
}

function newTurn(turnId) {
  const view = new TurnView(turnId);
  state.turns.set(turnId, view);
  appendMessage(view.el);
  return view;
}

function onTurnEvent(frame) {
  let view = state.turns.get(frame.turn_id);
  if (view && view.finished) return; // a late repeat of a turn already drawn whole
  if (!view) {
    view = newTurn(frame.turn_id);
    if (state.awaiting) {
      // The message this page sent has started its turn.
      view.question = state.awaiting.content;
      state.awaiting.view.setStatus("", "");
      state.outbox = state.outbox.filter((i) => i !== state.awaiting);
      saveOutbox();
      state.awaiting = null;
    } else {
      // A turn started elsewhere (another tab): show the question it answers.
      insertQuestion(view, state.generation);
    }
    state.activeTurn = view;
    setBusy(true);
    sidebar.refresh(); // its state is "running" now
  }
  if (!view.accept(frame.seq)) return;
  switch (frame.type) {
    case "chunk":
      view.chunk(frame.content);
      break;
    case "thinking":
      view.think(frame.content);
      break;
    case "tool_call":
      view.toolCall(frame.id, frame.name, frame.args);
      canvas.apply(frame.name, frame.args);
      break;
    case "tool_result":
      view.toolResult(frame.id, frame.name, frame.output, frame.is_error);
      break;
    case "operator_status":
      setStatusLine(statusText(frame));
      break;
    case "chunk_reset":
      // The text is checked against done.full_response below; nothing to clear.
      break;
    case "done":
      view.finish("done", frame.full_response);
      endTurn(view);
      // A session nobody named yet is named after the first question this page asked in it.
      if (!state.sessionName && view.question) sidebar.nameAfter(state.sessionId, view.question);
      break;
    case "stopped":
      view.finish("stopped", frame.full_response, "Stopped: the reply so far is kept in history");
      endTurn(view);
      break;
    case "error":
      view.finish("error", null, `Ended with an error (${frame.code})`);
      showBanner(frame.code, frame.message);
      endTurn(view);
      break;
    default:
      break;
  }
}

function endTurn(view) {
  flushRendering();
  if (state.activeTurn === view) state.activeTurn = null;
  setStatusLine("");
  setBusy(Boolean(state.awaiting));
  sidebar.refresh();
  pump();
}

async function insertQuestion(view, generation) {
  try {
    const { messages } = await api.messages(state.sessionId);
    if (generation !== state.generation) return;
    for (const message of messages || []) {
      if (message.role === "user" && message.turn_id === view.turnId) {
        view.el.before(userMessage(message.content, { createdAt: message.created_at }).el);
      }
    }
  } catch (error) {
    if (error instanceof AuthError) authFailed();
  }
}

function statusText(frame) {
  const phase = frame.phase ? String(frame.phase) : "";
  const detail = frame.detail ? String(frame.detail) : "";
  return [phase, detail].filter(Boolean).join(" — ");
}

function onLooseFrame(frame) {
  switch (frame.type) {
    case "error":
      onLooseError(frame);
      break;
    case "operator_status":
      setStatusLine(statusText(frame));
      break;
    case "stopped":
      // "No turn is running": nothing to stop here.
      setStopping(false);
      setStatusLine(frame.message || "");
      setBusy(Boolean(state.activeTurn || state.awaiting));
      break;
    default:
      break;
  }
}

// --- Sessions sidebar ------------------------------------------------------------------

const sidebar = new Sidebar({
  current: () => state.sessionId,
  open: (id) => switchSession(id),
  create: () => switchSession(uuid4()),
  deleted: (id) => {
    try {
      localStorage.removeItem(OUTBOX_PREFIX + id);
    } catch {
      // nothing kept
    }
    if (id === state.sessionId) {
      state.outbox = [];
      switchSession(uuid4());
    }
  },
  named: (id, name) => {
    if (id === state.sessionId) setTitle(name);
  },
  authFailed: () => authFailed(),
  error: (code, text) => showBanner(code, text),
});

function setTitle(name) {
  state.sessionName = name || "";
  ui.title.textContent = state.sessionName || "New chat";
  document.title = `${state.sessionName || "New chat"} · Construct`;
}

function switchSession(id, { push = true } = {}) {
  if (id === state.sessionId && state.socket) return;
  state.generation += 1;
  closeSocket();
  state.sessionId = id;
  state.attempt = 0;
  resetConversation();
  hideBanner();
  setTitle("");
  loadOutbox();
  drawOutbox();
  if (push) history.pushState({ session: id }, "", sessionUrl(id));
  else history.replaceState({ session: id }, "", sessionUrl(id));
  connect();
  sidebar.draw();
  sidebar.setOpen(false);
  composer.focus();
}

window.addEventListener("popstate", () => {
  const id = sessionFromUrl();
  if (id && id !== state.sessionId) switchSession(id, { push: false });
});

// --- Side panel: Live Canvas and operator events ---------------------------------------

const panels = new SidePanel();
const { canvas, events } = panels;

// --- Composer --------------------------------------------------------------------------

const composer = new Composer({
  submit: (content, pageContext) => enqueue(content, pageContext),
  stop: () => stopTurn(),
});

function stopTurn() {
  if (!state.busy || !socketReady()) return;
  setStopping(true);
  setStatusLine("Stopping…");
  state.socket.send(JSON.stringify({ type: "stop" }));
}

// --- Start -----------------------------------------------------------------------------

setInterval(() => {
  if (document.visibilityState === "visible" && state.signedIn) sidebar.load();
}, SESSION_REFRESH_MS);

// For tests and for the curious: the live state and the current socket.
window.__construct = {
  state,
  get socket() {
    return state.socket;
  },
  reconnectNow,
};

pairing.start();
