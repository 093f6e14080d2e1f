// The chat page's entry point: it builds the features, wires each one's hooks to the
// others, routes the server's frames, switches sessions and starts the page. No feature
// imports another; they reach each other only through the hooks given here.
//
//   main.js           this wiring
//   features          pairing.js       the card (a code or a password), the token, who is signed in, sign-out
//                     connection.js    the socket: token, resume, frames in order, reconnects
//                     outbox.js        messages kept until the server has them (client_id)
//                     conversation.js  history and turns drawn from frames, the status line
//                     composer.js      the message box, Send/Queue and Stop, page context
//                     attachments.js   files to send: paperclip, drop, paste; chips, upload progress
//                     sidebar.js       the session list: search, rename, delete, new chat
//                     panels.js        the side panel: Live Canvas and operator events
//                     pending.js       which sessions have approvals waiting (the sidebar marks them)
//                     models.js        the model picker and the reasoning switch in the header
//                     welcome.js       an empty chat's greeting and suggestions; "Chat not found"
//   shared helpers    state.js         shared state and its "busy" emitter
//                     banner.js        the error banner: plain words, the code under "Details"
//                     errors.js        error codes and raw texts made into plain sentences
//                     render.js        Markdown made safe, messages, turns, tool cards
//                     approval.js      the approval on a tool card: edit, approve, deny, countdown
//                     branch.js        a message's versions (◀ k/n ▶), edit in place, regenerate
//                     files.js         attached files in a message: thumbnails, download links
//                     api.js           HTTP: pairing, health, the REST API, the stored token
//                     util.js          element lookup, ids
// Imports point one way: main.js -> features -> shared helpers. A feature never imports
// another feature, and a shared helper imports only shared helpers: no cycles.

import { ApiError, AuthError, api } from "./api.js";
import { AttachmentTray } from "./attachments.js";
import { hideBanner, showBanner } from "./banner.js";
import { Composer } from "./composer.js";
import { Connection } from "./connection.js";
import { Conversation } from "./conversation.js";
import { forgetAttachmentImages } from "./files.js";
import { ModelPicker } from "./models.js";
import { Outbox } from "./outbox.js";
import { Pairing } from "./pairing.js";
import { SidePanel } from "./panels.js";
import { PendingApprovals } from "./pending.js";
import { Sidebar, sessionUrl } from "./sidebar.js";
import { state } from "./state.js";
import { $, own, uuid4 } from "./util.js";
import { Welcome } from "./welcome.js";

const SESSION_REFRESH_MS = 20000;

const pairing = new Pairing({
  signedIn: () => {
    const id = sessionFromUrl() || newSessionId();
    state.sessionId = null;
    switchSession(id, { push: false });
    panels.events.restore();
    panels.events.load(() => api.operatorEvents());
    sidebar.load();
    pending.load();
    picker.load();
  },
  signedOut: () => {
    state.generation += 1;
    disconnect();
  },
  // Signed out on purpose: whoever signs in next in this tab sees nothing of this user.
  forget: () => {
    outbox.forgetAll();
    conversation.reset();
    sidebar.clear();
    pending.clear();
    panels.clear();
    composer.clear();
    tray.clear();
    forgetAttachmentImages();
    picker.clear();
    hideBanner();
    state.sessionId = null;
    setTitle("");
    history.replaceState(null, "", location.pathname);
  },
});

const connection = new Connection({
  frame: (frame, generation) => route(frame, generation),
  dropped: () => outbox.offline(),
  revoked: () => pairing.revoked(),
  tokenRefused: async () => (await pairing.tokenRefused()) || (await sessionRefused()),
});

const panels = new SidePanel({
  sessionName: (id) => sidebar.nameOf(id),
  open: (id) => switchSession(id),
});

const conversation = new Conversation({
  takeSent: () => outbox.started(),
  turnStarted: () => sidebar.refresh(), // its state is "running" now
  turnEnded: () => {
    sidebar.refresh();
    outbox.pump();
    // The server names a chat after its first message; the list brings that name to the title.
  },
  toolCall: (name, args, options) => panels.canvas.apply(name, args, options),
  cleared: () => panels.canvas.reset(),
  drawOutbox: () => outbox.draw(),
  notSent: (frame) => outbox.refused(frame),
  authFailed: () => pairing.refuse(),
  ready: () => connection.ready,
  send: (frame) => connection.send(frame),
  approvalsChanged: () => pending.refresh(),
  modelLabel: (id) => picker.label(id),
  answeredBy: (id) => picker.answered(id),
  modelChoice: () => picker.choice(),
  jumped: () => composer.focus(),
  resend: (text) => outbox.add(text, composer.pageContext(), [], picker.choice()),
});

const picker = new ModelPicker({
  authFailed: () => pairing.refuse(),
  loaded: () => conversation.relabelModels(),
});

const outbox = new Outbox({
  ready: () => connection.ready,
  send: (frame) => connection.send(frame),
  show: (node, options) => conversation.append(node, options),
  giveBack: (text) => composer.giveBack(text),
});

const tray = new AttachmentTray({
  error: (text) => showBanner("", text),
  authFailed: () => pairing.refuse(),
});

const composer = new Composer({
  submit: (content, pageContext) => {
    // Typed under "Chat not found": it starts a new chat rather than one under the unknown id.
    if (notFound) switchSession(newSessionId());
    const attachments = tray.take();
    if (attachments === null) {
      showBanner("", "A file is still uploading: send when its chip is ready.", "warning");
      return false;
    }
    outbox.add(content, pageContext, attachments, picker.choice());
    return true;
  },
  stop: () => conversation.stop(),
});

const sidebar = new Sidebar({
  current: () => state.sessionId,
  open: (id) => switchSession(id),
  create: () => switchSession(newSessionId()),
  deleted: (id) => {
    outbox.forget(id);
    if (id === state.sessionId) switchSession(newSessionId());
  },
  named: (id, name) => {
    if (id === state.sessionId) setTitle(name);
  },
  authFailed: () => pairing.refuse(),
  error: (code, text) => showBanner(code, text),
  listed: () => panels.events.relabel(),
});

const welcome = new Welcome({
  fill: (text) => {
    composer.clear();
    composer.giveBack(text);
    composer.focus();
  },
  fresh: () => switchSession(newSessionId()),
});

const pending = new PendingApprovals({
  changed: (counts) => sidebar.markPending(counts),
  authFailed: () => pairing.refuse(),
});

// --- Frames from the server ------------------------------------------------------------

// Frames by type, for the ones that are not about the conversation; every other frame
// (a turn's events, and errors, status and stops outside a turn) goes to conversation.js.
const FRAMES = {
  session_start: sessionStarted,
  ack: (frame) => outbox.ack(frame),
  agent_event: (frame) => {
    panels.events.add(frame.event);
    // An approval asked for or answered in any of this user's sessions: the sidebar's marks.
    if (/^approval_/.test(frame.event?.type)) pending.refresh();
  },
  connected: () => {},
  // The chat's model proposed a title after its first answer (a rename made first wins).
  session_name: (frame) => {
    if (typeof frame.name !== "string" || !frame.name) return;
    if (frame.session_id === state.sessionId) setTitle(frame.name);
    sidebar.setName(frame.session_id, frame.name);
    panels.events.relabel();
  },
};

function route(frame, generation) {
  if (frame.type === "error" && frame.code === "AGENT_INIT_FAILED") return agentInitFailed(frame);
  const handler = own(FRAMES, frame.type);
  return handler ? handler(frame, generation) : conversation.handle(frame);
}

/**
 * No model works on the server: reconnecting cannot help until someone sets one, so the page
 * waits for "Try again" instead of knocking forever. What waits in the outbox stays there.
 */
function agentInitFailed(frame) {
  connection.halt("Not connected: no model");
  showBanner(frame.code, frame.message, "error", {
    action: { label: "Try again", run: () => connection.reconnectNow() },
  });
}

async function sessionStarted(frame, generation) {
  // The id this page opened (the one the socket's URL names).
  const id = state.sessionId;
  if (frame.message_count === 0 && frame.state !== "running" && !madeHere.has(id)
      && !outbox.count() && (await unknownSession(id, generation))) return;
  if (!(await conversation.start(frame, generation))) return;
  if (frame.message_count === 0) welcome.greet();
  connection.started();
  if (frame.name !== undefined) setTitle(frame.name);
  picker.sessionStarted(state.sessionId, frame.model);
  outbox.online();
  sidebar.refresh();
  outbox.pump();
}

// --- The open session ------------------------------------------------------------------

// Ids this tab made up for new chats (kept across a reload). A link can name any id; these
// are new for sure. The server stores a chat only with its first message, so any other id
// with no message is one the REST API does not know either: "Chat not found".
const MADE_HERE_KEY = "construct.newChats";
const madeHere = new Set(readMadeHere());
let notFound = false;

function readMadeHere() {
  try {
    const ids = JSON.parse(sessionStorage.getItem(MADE_HERE_KEY) || "[]");
    return Array.isArray(ids) ? ids.filter((id) => typeof id === "string") : [];
  } catch {
    return [];
  }
}

function newSessionId() {
  const id = uuid4();
  madeHere.add(id);
  try {
    sessionStorage.setItem(MADE_HERE_KEY, JSON.stringify([...madeHere].slice(-50)));
  } catch {
    // No storage (private mode): a reload of a new chat's address then says "not found".
  }
  return id;
}

/** True when the open id is no chat of this user: the page says so instead of a blank chat. */
async function unknownSession(id, generation) {
  try {
    await api.session(id);
    return false;
  } catch (error) {
    if (error instanceof AuthError) {
      pairing.refuse();
      return true;
    }
    if (!(error instanceof ApiError && error.status === 404)) return false; // cannot tell: open it
  }
  if (generation !== state.generation || id !== state.sessionId) return true;
  disconnect();
  connection.show("offline", "Not connected: no such chat");
  conversation.reset();
  notFound = true;
  setTitle("Chat not found");
  welcome.notFound();
  sidebar.draw();
  return true;
}

/**
 * The socket was refused though the token is good. The socket makes a session it does not
 * know, so when the REST API does not know it either, the id is another user's: open a new
 * chat instead of knocking on it forever. True when that is what happened.
 */
async function sessionRefused() {
  const id = state.sessionId;
  if (madeHere.has(id)) return false;
  try {
    await api.session(id);
    return false; // ours: refused for another reason (too many sockets); retry later
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 404) || id !== state.sessionId) return false;
  }
  switchSession(newSessionId(), { push: false });
  showBanner("", "That conversation is not one of yours, or it no longer exists: here is a new chat.", "warning");
  return true;
}

function sessionFromUrl() {
  const params = new URLSearchParams(location.search);
  const fromQuery = params.get("session");
  if (fromQuery) return fromQuery;
  const hash = decodeURIComponent(location.hash.slice(1));
  return hash || null;
}

function setTitle(name) {
  state.sessionName = name || "";
  $("session-title").textContent = state.sessionName || "New chat";
  document.title = `${state.sessionName || "New chat"} · Construct`;
}

/** Leave the open session's socket: nothing of it may fire later. */
function disconnect() {
  connection.close();
  outbox.cancelRetry();
}

function switchSession(id, { push = true } = {}) {
  if (id === state.sessionId && connection.socket) return;
  state.generation += 1;
  disconnect();
  state.sessionId = id;
  notFound = false;
  welcome.hide();
  tray.clear();
  conversation.reset();
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

// --- Keys for the whole page ------------------------------------------------------------

// Esc inside these closes them itself (a rename, an edit, an approval's arguments).
const OWN_ESCAPE = ".rename-input, .edit-box, .approval-args, .confirm";

document.addEventListener("keydown", (event) => {
  if (!state.signedIn || event.isComposing) return;
  const key = event.key.toLowerCase();
  if (key === "o" && event.shiftKey && (event.ctrlKey || event.metaKey) && !event.altKey) {
    // Ctrl+Shift+O (Cmd+Shift+O on a Mac), the shortcut chat apps use for it: a new chat.
    event.preventDefault();
    switchSession(newSessionId());
    return;
  }
  if (key !== "escape" || event.defaultPrevented || event.target.closest?.(OWN_ESCAPE)) return;
  // The uppermost first: the sessions drawer (narrow screens) lies over the side panel.
  if (sidebar.isOpen()) {
    event.preventDefault();
    sidebar.setOpen(false);
    if ($("sidebar").contains(document.activeElement)) $("menu-toggle").focus();
  } else if (panels.isOpen()) {
    event.preventDefault();
    const inside = $("sidepanel").contains(document.activeElement);
    panels.hide();
    if (inside) composer.focus();
  }
});

// A tap beside the open sessions drawer (on its backdrop) closes it.
$("drawer-backdrop").addEventListener("click", () => sidebar.setOpen(false));

window.addEventListener("popstate", () => {
  const id = sessionFromUrl();
  if (id && id !== state.sessionId) switchSession(id, { push: false });
});

setInterval(() => {
  if (document.visibilityState === "visible" && state.signedIn) sidebar.load();
}, SESSION_REFRESH_MS);

// For tests and for the curious: the shared state and the current socket.
window.__construct = {
  state,
  get socket() {
    return connection.socket;
  },
  reconnectNow: () => connection.reconnectNow(),
};

pairing.start();
