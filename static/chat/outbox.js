// The outbox: messages typed but not yet accepted by the server. They are kept in
// localStorage per session (a reload or a dropped socket loses none), sent one at a time
// with a client_id (the server runs each at most once, however often it arrives), held
// back while a turn runs, and retried when the server is busy.

import { showBanner } from "./banner.js";
import { userMessage } from "./render.js";
import { setBusy, state } from "./state.js";
import { uuid4 } from "./util.js";

const OUTBOX_PREFIX = "construct.outbox.";
const RETRYABLE = new Set(["SESSION_BUSY", "RATE_LIMITED"]);

export class Outbox {
  /**
   * `hooks`: ready() -> the socket can send now; send(frame); show(node, {follow}) puts a
   * message at the end of the conversation; giveBack(text) returns a refused text to edit
   * (false: the box holds something else).
   */
  constructor(hooks) {
    this.hooks = hooks;
    this.items = []; // [{client_id, content, page_context, attachments, view}], oldest first
    this.retryTimer = null;
  }

  /** How many messages wait for the open session. */
  count() {
    return this.items.length;
  }

  /** The open session's outbox, from storage (after a session switch). */
  load() {
    state.awaiting = null;
    let items = [];
    try {
      items = JSON.parse(localStorage.getItem(OUTBOX_PREFIX + state.sessionId) || "[]");
    } catch {
      items = [];
    }
    this.items = Array.isArray(items) ? items.filter((i) => i && i.client_id && i.content) : [];
  }

  save() {
    if (!state.sessionId) return;
    const items = this.items.map(({ client_id, content, page_context, attachments, choice }) => ({
      client_id, content, page_context, attachments, choice,
    }));
    try {
      if (items.length) localStorage.setItem(OUTBOX_PREFIX + state.sessionId, JSON.stringify(items));
      else localStorage.removeItem(OUTBOX_PREFIX + state.sessionId);
    } catch {
      // storage full or blocked: the outbox still lives in memory
    }
  }

  /** A session was deleted: its outbox goes too. */
  forget(sessionId) {
    try {
      localStorage.removeItem(OUTBOX_PREFIX + sessionId);
    } catch {
      // nothing kept
    }
    if (sessionId === state.sessionId) this.items = [];
  }

  /** Signed out: no message of that user waits in this browser, for any session. */
  forgetAll() {
    this.cancelRetry();
    this.items = [];
    state.awaiting = null;
    try {
      for (const key of Object.keys(localStorage)) {
        if (key.startsWith(OUTBOX_PREFIX)) localStorage.removeItem(key);
      }
    } catch {
      // nothing kept
    }
  }

  /** The waiting messages, under the conversation. */
  draw() {
    for (const item of this.items) {
      if (!item.view) item.view = userMessage(item.content, { status: "Queued", attachments: item.attachments });
      item.view.setStatus(this.hooks.ready() ? "Queued" : "Waiting for the connection", "queued");
      this.hooks.show(item.view.el);
    }
  }

  /**
   * A message typed, with the files attached to it and the model it asks for (`choice`:
   * {model?, reasoning?}): kept, shown, and sent when its turn comes.
   */
  add(content, pageContext, attachments = [], choice = {}) {
    const item = {
      client_id: uuid4(), content, page_context: pageContext, attachments, choice,
      view: userMessage(content, { attachments }),
    };
    this.items.push(item);
    this.save();
    this.hooks.show(item.view.el, { follow: true });
    item.view.setStatus(this.hooks.ready() ? (state.busy ? "Queued" : "Sending…") : "Waiting for the connection", "queued");
    this.pump();
  }

  /** Send the next queued message when the socket is up and no turn is running. */
  pump() {
    if (!this.hooks.ready() || state.busy || state.awaiting || !this.items.length) return;
    const item = this.items[0];
    const frame = { type: "message", content: item.content, client_id: item.client_id };
    if (item.page_context) frame.page_context = item.page_context;
    if (Array.isArray(item.attachments) && item.attachments.length) frame.attachments = item.attachments.map((a) => a.id);
    const choice = item.choice && typeof item.choice === "object" ? item.choice : {};
    if (typeof choice.model === "string") frame.model = choice.model;
    if (typeof choice.reasoning === "string") frame.reasoning = choice.reasoning;
    state.awaiting = item;
    item.acked = false;
    setBusy(true);
    item.view.setStatus("Sending…", "sending");
    this.hooks.send(frame);
  }

  /** The server's `ack` of a client_id. */
  ack(frame) {
    const item = this.items.find((i) => i.client_id === frame.client_id);
    if (!item) return;
    this.items = this.items.filter((i) => i !== item);
    this.save();
    if (frame.duplicate) {
      // The server had it already (its first ack was lost with a socket): the
      // history shows it, or its turn will when it starts.
      item.view.el.remove();
      if (state.awaiting === item) {
        state.awaiting = null;
        setBusy(Boolean(state.activeTurn));
        this.pump();
      }
      return;
    }
    item.acked = true;
    item.view.setStatus("", "");
  }

  /** A turn started: if it answers the message sent, hand that over (else null). */
  started() {
    const item = state.awaiting;
    if (!item) return null;
    item.view.setStatus("", "");
    this.items = this.items.filter((i) => i !== item);
    this.save();
    state.awaiting = null;
    return item;
  }

  /** An error that belongs to no turn: about the message just sent, or the socket. */
  refused(frame) {
    showBanner(frame.code, frame.message);
    const item = state.awaiting;
    if (!item) return;
    state.awaiting = null;
    setBusy(Boolean(state.activeTurn));
    if (RETRYABLE.has(frame.code)) {
      // Not run: it stays first in the outbox and is sent again shortly.
      if (!this.items.includes(item)) this.items.unshift(item);
      this.save();
      const seconds = Number(frame.retry_after) || 3;
      item.view.setStatus(`Not sent yet (${frame.code}); retrying in ${seconds} s`, "queued");
      clearTimeout(this.retryTimer);
      this.retryTimer = setTimeout(() => this.pump(), seconds * 1000);
      return;
    }
    // Refused for good (empty, too large, bad frame): the text goes back into the box to
    // edit, and leaves the conversation, where it never was. Only when the box holds
    // something new does it stay, marked, so that nothing typed is lost.
    this.items = this.items.filter((i) => i !== item);
    this.save();
    if (this.hooks.giveBack(item.content)) item.view.el.remove();
    else item.view.setStatus(`Not sent: ${frame.code}`, "failed");
    this.pump();
  }

  /** The socket dropped. */
  offline() {
    // A message sent but not acknowledged is still in the outbox: it goes again,
    // with the same client_id, so the server runs it at most once.
    if (state.awaiting) {
      state.awaiting = null;
      setBusy(Boolean(state.activeTurn));
    }
    for (const item of this.items) item.view?.setStatus("Waiting for the connection", "queued");
  }

  /** The session started on a socket: what waits is queued, or about to be sent. */
  online() {
    for (const item of this.items) item.view?.setStatus(state.busy ? "Queued" : "Sending…", "queued");
  }

  /** No retry may fire for a session this page has left. */
  cancelRetry() {
    clearTimeout(this.retryTimer);
  }
}
