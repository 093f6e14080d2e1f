// The chat page: pairing, the session sidebar, the socket with its reconnects,
// the outbox that never loses a message, and the wiring of what render.js draws.

import { api, AuthError } from "./api.js";
import { hideBanner, showBanner } from "./banner.js";
import { Composer } from "./composer.js";
import { Connection } from "./connection.js";
import { Outbox } from "./outbox.js";
import { Pairing } from "./pairing.js";
import { SidePanel } from "./panels.js";
import { TurnView, flushRendering, onRendered, userMessage } from "./render.js";
import { Sidebar, sessionUrl } from "./sidebar.js";
import { setBusy, setStopping, state } from "./state.js";
import { $, uuid4 } from "./util.js";

const SESSION_REFRESH_MS = 20000;

const ui = {
  title: $("session-title"),
  messages: $("messages"),
  statusLine: $("status-line"),
};

// What has not moved out of this file yet, next to what the features share.
Object.assign(state, {
  turns: new Map(), // turn_id -> TurnView
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

// --- Status line -----------------------------------------------------------------------

function setStatusLine(text) {
  ui.statusLine.textContent = text || "";
  ui.statusLine.hidden = !text;
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
    disconnect();
  },
});

const authFailed = () => pairing.refuse();

// --- The outbox and the socket --------------------------------------------------------

const outbox = new Outbox({
  ready: () => connection.ready,
  send: (frame) => connection.send(frame),
  show: (node, { follow = false } = {}) => {
    if (follow) stickToBottom = true;
    appendMessage(node);
  },
  giveBack: (text) => composer.giveBack(text),
});

const connection = new Connection({
  frame: (frame, generation) => handleFrame(frame, generation),
  dropped: () => outbox.offline(),
  revoked: () => pairing.revoked(),
  tokenRefused: () => pairing.tokenRefused(),
});

/** Leave the open session's socket: nothing of it may fire later. */
function disconnect() {
  connection.close();
  outbox.cancelRetry();
}

// --- Frames from the server ------------------------------------------------------------

async function handleFrame(frame, generation) {
  switch (frame.type) {
    case "session_start":
      await onSessionStart(frame, generation);
      return;
    case "ack":
      outbox.ack(frame);
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
  connection.started();
  if (frame.name !== undefined) setTitle(frame.name);
  if (frame.state === "error" || frame.state === "interrupted") {
    showBanner("", frame.state === "interrupted"
      ? "The last answer in this session was interrupted (the server restarted while it ran)."
      : "The last answer in this session ended with an error.", "warning");
  }
  setBusy(Boolean(state.activeTurn && !state.activeTurn.finished));
  outbox.online();
  sidebar.refresh();
  outbox.pump();
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
  outbox.draw();
  flushRendering();
  stickToBottom = true;
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

function resetConversation() {
  ui.messages.replaceChildren();
  state.turns.clear();
  state.activeTurn = null;
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
    const sent = outbox.started();
    if (sent) {
      // The message this page sent has started its turn.
      view.question = sent.content;
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
  outbox.pump();
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
      outbox.refused(frame);
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
    outbox.forget(id);
    if (id === state.sessionId) switchSession(uuid4());
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
  if (id === state.sessionId && connection.socket) return;
  state.generation += 1;
  disconnect();
  state.sessionId = id;
  resetConversation();
  hideBanner();
  setTitle("");
  outbox.load();
  outbox.draw();
  if (push) history.pushState({ session: id }, "", sessionUrl(id));
  else history.replaceState({ session: id }, "", sessionUrl(id));
  connection.open();
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
  submit: (content, pageContext) => outbox.add(content, pageContext),
  stop: () => stopTurn(),
});

function stopTurn() {
  if (!state.busy || !connection.ready) return;
  setStopping(true);
  setStatusLine("Stopping…");
  connection.send({ type: "stop" });
}

// --- Start -----------------------------------------------------------------------------

setInterval(() => {
  if (document.visibilityState === "visible" && state.signedIn) sidebar.load();
}, SESSION_REFRESH_MS);

// For tests and for the curious: the live state and the current socket.
window.__construct = {
  state,
  get socket() {
    return connection.socket;
  },
  reconnectNow: () => connection.reconnectNow(),
};

pairing.start();
