// The conversation: the saved history and each running turn drawn into the message list,
// the status line under it, and the newest message kept in view. Frames reach a handler
// through one of the two tables below, by type: a new kind of frame is one more entry there.

import { AuthError, api } from "./api.js";
import { showBanner } from "./banner.js";
import { TurnView, flushRendering, onRendered, userMessage } from "./render.js";
import { setBusy, setStopping, state } from "./state.js";
import { $, own } from "./util.js";

/** Frames of a turn (they carry turn_id and seq), by type: what each does. `this` is the Conversation. */
const TURN_FRAMES = {
  chunk(view, frame) {
    view.chunk(frame.content);
  },
  thinking(view, frame) {
    view.think(frame.content);
  },
  tool_call(view, frame) {
    view.toolCall(frame.id, frame.name, frame.args);
    this.hooks.toolCall(frame.name, frame.args);
  },
  tool_result(view, frame) {
    view.toolResult(frame.id, frame.name, frame.output, frame.is_error);
  },
  operator_status(view, frame) {
    this.setStatus(statusText(frame));
  },
  chunk_reset() {
    // The text is checked against done.full_response below; nothing to clear.
  },
  done(view, frame) {
    view.finish("done", frame.full_response);
    this.endTurn(view, "done");
  },
  stopped(view, frame) {
    view.finish("stopped", frame.full_response, "Stopped: the reply so far is kept in history");
    this.endTurn(view, "stopped");
  },
  error(view, frame) {
    view.finish("error", null, `Ended with an error (${frame.code})`);
    showBanner(frame.code, frame.message);
    this.endTurn(view, "error");
  },
};

/** Frames outside any turn (no turn_id), by type. `this` is the Conversation. */
const SESSION_FRAMES = {
  error(frame) {
    this.hooks.notSent(frame);
  },
  operator_status(frame) {
    this.setStatus(statusText(frame));
  },
  stopped(frame) {
    // "No turn is running": nothing to stop here.
    setStopping(false);
    this.setStatus(frame.message || "");
    setBusy(Boolean(state.activeTurn || state.awaiting));
  },
};

function statusText(frame) {
  const phase = frame.phase ? String(frame.phase) : "";
  const detail = frame.detail ? String(frame.detail) : "";
  return [phase, detail].filter(Boolean).join(" — ");
}

export class Conversation {
  /**
   * `hooks`: takeSent() -> the outbox item a new turn answers, or null; turnStarted();
   * turnEnded(view, end) with end "done", "stopped" or "error"; toolCall(name, args, options);
   * cleared(); drawOutbox(); notSent(frame) for an error outside a turn; authFailed();
   * ready() -> the socket can send now; send(frame).
   */
  constructor(hooks) {
    this.hooks = hooks;
    this.list = $("messages");
    this.statusLine = $("status-line");
    this.turns = new Map(); // turn_id -> TurnView
    this.stick = true; // keep the newest message in view (unless the reader scrolled up)
    this.list.addEventListener("scroll", () => {
      this.stick = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 120;
    });
    onRendered(() => {
      if (this.stick) this.list.scrollTop = this.list.scrollHeight;
    });
  }

  /** Put a message at the end; `follow` scrolls to it even if the reader had scrolled up. */
  append(node, { follow = false } = {}) {
    if (follow) this.stick = true;
    this.list.append(node);
    if (this.stick) this.list.scrollTop = this.list.scrollHeight;
  }

  setStatus(text) {
    this.statusLine.textContent = text || "";
    this.statusLine.hidden = !text;
  }

  reset() {
    this.list.replaceChildren();
    this.turns.clear();
    state.activeTurn = null;
    this.hooks.cleared();
    this.setStatus("");
    setBusy(false);
  }

  /**
   * session_start: draw the history, unless the page is resuming the turn it shows.
   * False when the page moved on meanwhile (another session, or the pairing card).
   */
  async start(frame, generation) {
    const running = state.activeTurn;
    if (!(running && !running.finished && frame.turn_id === running.turnId)) {
      // First open, or the page missed a turn's end while away: draw what the server has.
      await this.load(frame, generation);
      if (generation !== state.generation) return false;
    }
    if (frame.state === "error" || frame.state === "interrupted") {
      showBanner("", frame.state === "interrupted"
        ? "The last answer in this session was interrupted (the server restarted while it ran)."
        : "The last answer in this session ended with an error.", "warning");
    }
    setBusy(Boolean(state.activeTurn && !state.activeTurn.finished));
    return true;
  }

  async load(start, generation) {
    this.reset();
    let messages = [];
    if (start.message_count > 0) {
      try {
        messages = (await api.messages(state.sessionId)).messages || [];
      } catch (error) {
        if (error instanceof AuthError) {
          this.hooks.authFailed();
          return;
        }
        showBanner("", `Could not load the history: ${error.message}`);
      }
    }
    if (generation !== state.generation) return;
    const running = start.state === "running" && typeof start.turn_id === "string" ? start.turn_id : null;
    this.drawHistory(messages, running);
    if (running) {
      // The server replays this turn's events right after session_start.
      state.activeTurn = this.newTurn(running);
    }
    this.hooks.drawOutbox();
    flushRendering();
    this.stick = true;
    this.list.scrollTop = this.list.scrollHeight;
  }

  /** The saved messages, grouped into user messages and assistant turns. */
  drawHistory(messages, runningTurnId) {
    let view = null;
    let key = null;
    for (const message of messages) {
      const data = message.data && typeof message.data === "object" ? message.data : {};
      // The running turn's own events are replayed over the socket: keep only its question.
      if (runningTurnId && message.turn_id === runningTurnId && message.role !== "user") continue;
      if (message.role === "user") {
        view = null;
        this.append(userMessage(message.content, { createdAt: message.created_at, attachments: data.attachments }).el);
        continue;
      }
      if (message.role !== "assistant" && message.role !== "tool") continue;
      const turnKey = message.turn_id || `seq-${message.seq}`;
      if (!view || key !== turnKey) {
        view = new TurnView(message.turn_id || null, { live: false, createdAt: message.created_at });
        key = turnKey;
        if (message.turn_id) this.turns.set(message.turn_id, view);
        this.append(view.el);
      }
      if (message.role === "assistant") {
        if (data.thinking) view.think(data.thinking);
        if (message.content) view.chunk(message.content);
        for (const call of Array.isArray(data.tool_calls) ? data.tool_calls : []) {
          view.toolCall(call.id, call.name, call.arguments);
          this.hooks.toolCall(call.name, call.arguments, { show: false });
        }
        if (data.stopped) view.setNote("Stopped: the reply was cut short here", "stopped");
        if (data.error) view.setNote(`Ended with an error (${data.error})`, "error");
      } else {
        view.toolResult(data.tool_call_id, data.name, message.content, data.is_error);
      }
    }
    for (const turn of this.turns.values()) turn.finish("history");
  }

  /** A frame about the conversation (session_start, ack and agent_event go elsewhere). */
  handle(frame) {
    if (typeof frame.turn_id === "string") this.turnEvent(frame);
    else own(SESSION_FRAMES, frame.type)?.call(this, frame);
  }

  turnEvent(frame) {
    let view = this.turns.get(frame.turn_id);
    if (view && view.finished) return; // a late repeat of a turn already drawn whole
    if (!view) {
      view = this.newTurn(frame.turn_id);
      const sent = this.hooks.takeSent();
      if (sent) {
        // The message this page sent has started its turn.
        view.question = sent.content;
      } else {
        // A turn started elsewhere (another tab): show the question it answers.
        this.insertQuestion(view, state.generation);
      }
      state.activeTurn = view;
      setBusy(true);
      this.hooks.turnStarted();
    }
    if (!view.accept(frame.seq)) return; // seen already (a replay after a reconnect)
    own(TURN_FRAMES, frame.type)?.call(this, view, frame);
  }

  newTurn(turnId) {
    const view = new TurnView(turnId);
    this.turns.set(turnId, view);
    this.append(view.el);
    return view;
  }

  endTurn(view, end) {
    flushRendering();
    if (state.activeTurn === view) state.activeTurn = null;
    this.setStatus("");
    setBusy(Boolean(state.awaiting));
    this.hooks.turnEnded(view, end);
  }

  async insertQuestion(view, generation) {
    try {
      const { messages } = await api.messages(state.sessionId);
      if (generation !== state.generation) return;
      for (const message of messages || []) {
        if (message.role === "user" && message.turn_id === view.turnId) {
          const attachments = message.data && message.data.attachments;
          view.el.before(userMessage(message.content, { createdAt: message.created_at, attachments }).el);
        }
      }
    } catch (error) {
      if (error instanceof AuthError) this.hooks.authFailed();
    }
  }

  /** Ask the server to stop the running answer (the Stop button, or Esc). */
  stop() {
    if (!state.busy || !this.hooks.ready()) return;
    setStopping(true);
    this.setStatus("Stopping…");
    this.hooks.send({ type: "stop" });
  }
}
