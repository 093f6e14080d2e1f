// The conversation: the saved history and each running turn drawn into the message list,
// the status line under it, and the newest message kept in view while the reader follows
// (a "Jump to latest" button when they scrolled up). Frames reach a handler
// through one of the two tables below, by type: a new kind of frame is one more entry there.

import { AuthError, api } from "./api.js";
import { Approval } from "./approval.js";
import { showBanner } from "./banner.js";
import { decorate } from "./branch.js";
import { plainError } from "./errors.js";
import { TurnView, flushRendering, onRendered, userMessage } from "./render.js";
import { setBusy, setStopping, state } from "./state.js";
import { $, own, uuid4 } from "./util.js";

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
  approval_request(view, frame) {
    this.askApproval(view, frame);
  },
  approval_result(view, frame) {
    this.approvalResult(frame);
  },
  operator_status(view, frame) {
    this.setStatus(statusText(frame));
  },
  chunk_reset() {
    // The text is checked against done.full_response below; nothing to clear.
  },
  done(view, frame) {
    view.finish("done", frame.full_response);
    view.setModel(frame.model, this.hooks.modelLabel(frame.model));
    view.setUsage(frame.usage);
    this.hooks.answeredBy(frame.model);
    this.endTurn(view, "done");
  },
  stopped(view, frame) {
    view.finish("stopped", frame.full_response, "Stopped: the reply so far is kept in history");
    this.endTurn(view, "stopped");
  },
  error(view, frame) {
    view.finish("error", null, plainError(frame.code, frame.message).text);
    showBanner(frame.code, frame.message);
    view.offerRetry(() => this.retry(view));
    this.endTurn(view, "error");
  },
};

/** Frames outside any turn (no turn_id), by type. `this` is the Conversation. */
const SESSION_FRAMES = {
  error(frame) {
    const question = this.retrying;
    this.retrying = null;
    if (question && frame.code === "EMPTY_CONTENT") {
      // A retry found no question saved to answer again: the question goes as a new message.
      this.hooks.resend(question);
      return;
    }
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
  history(frame) {
    // The active branch changed (an edit, a regenerate, a switch; from any tab): redraw it.
    this.redraw(Array.isArray(frame.messages) ? frame.messages : []);
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
   * ready() -> the socket can send now; send(frame); approvalsChanged() when an approval
   * was asked for or answered in this session; modelLabel(id) -> the name of a model;
   * answeredBy(id) when a turn's `done` names its model; modelChoice() -> the `model` and
   * `reasoning` fields an edit or a regenerate carries; jumped() after "Jump to latest";
   * resend(text) sends a question again as a new message.
   */
  constructor(hooks) {
    this.hooks = hooks;
    this.list = $("messages");
    this.statusLine = $("status-line");
    this.turns = new Map(); // turn_id -> TurnView
    this.approvals = new Map(); // approval_id -> {approval, card}
    this.lastAnswered = null; // the approval this page answered last, for an error that names none
    this.jump = $("jump-latest");
    this.retrying = null; // the question of a Retry just sent, until its turn starts
    this.stick = true; // keep the newest message in view (unless the reader scrolled up)
    this.lastTop = 0;
    // Following is decided by the reader's scrolling, not by how far the end is: a tool card
    // or a status line can grow the page by more than any threshold between two scroll events.
    this.list.addEventListener("scroll", () => {
      const top = this.list.scrollTop;
      if (this.atEnd()) this.stick = true;
      else if (top < this.lastTop - 2) this.stick = false; // the reader scrolled up
      this.lastTop = top;
      this.drawJump();
    });
    // Scrolling up stops following at once, before a chunk arriving in the same frame could
    // pull the view back down.
    const leave = () => {
      this.stick = false;
    };
    this.list.addEventListener("wheel", (event) => event.deltaY < 0 && leave(), { passive: true });
    this.list.addEventListener("touchmove", leave, { passive: true });
    this.list.addEventListener("pointerdown", (event) => event.target === this.list && leave()); // the scrollbar
    this.list.addEventListener("keydown", (event) => ["ArrowUp", "PageUp", "Home"].includes(event.key) && leave());
    // Anything that changes the height of the messages or of the box they scroll in (text,
    // a tool card and its result, the status line, the composer growing) keeps the end in view.
    const follow = () => this.follow();
    new MutationObserver(follow).observe(this.list, { childList: true, subtree: true, characterData: true, attributes: true });
    new ResizeObserver(follow).observe(this.list);
    onRendered(follow);
    this.jump.addEventListener("click", () => {
      this.stick = true;
      this.scrollToEnd();
      this.hooks.jumped();
    });
  }

  atEnd() {
    return this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 4;
  }

  scrollToEnd() {
    this.list.scrollTo({ top: this.list.scrollHeight, behavior: "instant" });
    this.lastTop = this.list.scrollTop;
    this.drawJump();
  }

  /** Keep the newest message in view while the reader follows; else offer the way back. */
  follow() {
    if (this.stick) this.scrollToEnd();
    else this.drawJump();
  }

  drawJump() {
    this.jump.hidden = this.stick || this.atEnd();
  }

  /** The models' names are known now: the answers drawn before say them. */
  relabelModels() {
    for (const turn of this.turns.values()) {
      const id = turn.el.dataset.model;
      if (id) turn.setModel(id, this.hooks.modelLabel(id));
    }
  }

  /** Put a message at the end; `follow` scrolls to it even if the reader had scrolled up. */
  append(node, { follow = false } = {}) {
    if (follow) this.stick = true;
    this.list.append(node);
    this.follow();
  }

  setStatus(text) {
    this.statusLine.textContent = text || "";
    this.statusLine.hidden = !text;
  }

  reset() {
    this.list.replaceChildren();
    this.turns.clear();
    this.approvals.clear();
    this.lastAnswered = null;
    this.questionShown = false;
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
    const lastTurn = this.drawHistory(messages, running);
    this.drawDecided(generation);
    if (!running) this.decorate(messages);
    if (start.state === "error" || start.state === "interrupted") this.drawFailed(messages, lastTurn, start.state);
    if (running) {
      // The server replays this turn's events right after session_start.
      state.activeTurn = this.newTurn(running);
    }
    this.hooks.drawOutbox();
    flushRendering();
    this.stick = true;
    this.scrollToEnd();
  }

  /**
   * The saved messages, grouped into user messages and assistant turns. Returns the view of the
   * last turn drawn when the history ends with it (null when it ends on a question).
   */
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
        if (data.model) view.setModel(data.model, this.hooks.modelLabel(data.model));
        if (data.usage) view.setUsage(data.usage);
        if (data.thinking) view.think(data.thinking);
        if (message.content) view.chunk(message.content);
        for (const call of Array.isArray(data.tool_calls) ? data.tool_calls : []) {
          view.toolCall(call.id, call.name, call.arguments);
          this.hooks.toolCall(call.name, call.arguments, { show: false });
        }
        if (data.stopped) view.setNote("Stopped: the reply was cut short here", "stopped");
        if (data.error) view.setNote(`Ended with an error (${data.error})`, "error");
      } else {
        view.toolResult(data.tool_call_id, data.name, message.content, data.is_error, Boolean(data.denied));
      }
    }
    for (const turn of this.turns.values()) turn.finish("history");
    return view;
  }

  /**
   * The session's last turn failed (its state is error or interrupted): after a reload it shows
   * its error line and a Retry, as it did live. The line goes on the turn's saved partial answer,
   * or on a turn drawn under the question when nothing of the answer was saved. Drawn after
   * decorate(), which matches the page's answers to the saved ones.
   */
  drawFailed(messages, lastTurn, sessionState) {
    const question = messages.findLast((m) => m.role === "user");
    if (!question) return;
    const answer = lastTurn ? messages.findLast((m) => m.role === "assistant") : null;
    const data = answer && answer.data && typeof answer.data === "object" ? answer.data : {};
    let text;
    if (sessionState === "interrupted" || data.interrupted) {
      text = "Interrupted: the server restarted while this answer ran. Try again.";
    } else {
      text = plainError(typeof data.error === "string" ? data.error : "AGENT_ERROR", "").text;
    }
    let view = lastTurn;
    if (!view) {
      view = new TurnView(typeof question.turn_id === "string" ? question.turn_id : null,
        { live: false, createdAt: question.created_at });
      this.append(view.el);
    }
    view.finish("error", null, text);
    view.question = question.content;
    view.offerRetry(() => this.retry(view));
  }

  /**
   * The history's tool cards that waited for approval say who decided what (and show the
   * edited arguments), from the session's approvals. The running turn's come in its replay.
   */
  async drawDecided(generation) {
    const cards = new Map();
    for (const turn of this.turns.values()) {
      if (!turn.finished) continue;
      for (const [id, card] of turn.tools) if (!card.approval) cards.set(`${turn.turnId}/${id}`, card);
    }
    if (!cards.size) return;
    let rows;
    try {
      rows = await api.sessionApprovals(state.sessionId);
    } catch (error) {
      if (error instanceof AuthError) this.hooks.authFailed();
      return; // the cards stay as the messages drew them
    }
    if (generation !== state.generation) return;
    for (const row of rows) {
      const card = cards.get(`${row.turn_id}/${row.tool_call_id}`);
      if (!card || card.approval || !row.decision || this.approvals.has(row.id)) continue;
      const approval = Approval.settled(row);
      card.attachApproval(approval);
      card.approvalDecided(row.decision, row.decided_args);
    }
  }

  // --- Branches: versions of a question or an answer ---------------------------------

  /** The `history` frame: the active branch, drawn afresh, with the outbox after it. */
  redraw(messages) {
    this.reset();
    this.drawHistory(messages, null);
    this.drawDecided(state.generation);
    this.decorate(messages);
    // A branch that ends on a question is answered next: its turn needs no question drawn.
    this.questionShown = messages.length > 0 && messages[messages.length - 1].role === "user";
    this.hooks.drawOutbox();
    flushRendering();
    this.stick = true;
    this.scrollToEnd();
  }

  /**
   * Give the saved messages on the page their branch controls: each question its edit
   * button, each answer its versions, the last answer a regenerate button. `messages` is
   * the active branch; the page's elements are matched in order, and left alone when the
   * page does not show that branch (a turn still drawing, a message still in the outbox).
   */
  decorate(messages) {
    const questions = [...this.list.querySelectorAll("article.msg.user:not(.pending):not(.failed)")];
    const answers = [...this.list.querySelectorAll("article.msg.assistant")];
    // Grouped as drawHistory groups them: a question, then each turn's messages in one card.
    const heads = [];
    let key = null;
    for (const message of messages) {
      if (message.role === "user") {
        heads.push(message);
        key = null;
      } else if (message.role === "assistant" || message.role === "tool") {
        const turnKey = message.turn_id || `seq-${message.seq}`;
        if (key !== turnKey) heads.push(message);
        key = turnKey;
      }
    }
    const wantQuestions = heads.filter((m) => m.role === "user");
    const wantAnswers = heads.filter((m) => m.role !== "user");
    if (wantQuestions.length !== questions.length || wantAnswers.length !== answers.length) return;
    const actions = {
      switchTo: (id) => this.branchAction({ type: "switch_branch", message_id: id }),
      edit: (message, content) => {
        // The new version keeps the question's files.
        const files = Array.isArray(message.data?.attachments) ? message.data.attachments : [];
        const attachments = files.map((file) => file && file.id).filter((id) => typeof id === "string");
        return this.branchAction({
          type: "edit", message_id: message.id, content, client_id: uuid4(), attachments, ...this.hooks.modelChoice(),
        });
      },
      regenerate: () => this.branchAction({ type: "regenerate", client_id: uuid4(), ...this.hooks.modelChoice() }),
    };
    const lastAnswer = wantAnswers[wantAnswers.length - 1];
    const lastIsAnswer = messages.length > 0 && messages[messages.length - 1].role !== "user";
    wantQuestions.forEach((message, i) => decorate(questions[i], message, { actions }));
    wantAnswers.forEach((message, i) => decorate(answers[i], message, { actions, last: lastIsAnswer && message === lastAnswer }));
  }

  /** Send an edit, regenerate or switch_branch; false (nothing sent) while a turn runs or offline. */
  branchAction(frame) {
    if (state.busy) {
      showBanner("", "Wait for the answer to finish (or stop it) first.", "warning");
      return false;
    }
    if (!this.hooks.ready()) {
      showBanner("", "Not connected: try again in a moment.", "warning");
      return false;
    }
    this.hooks.send(frame);
    return true;
  }

  /**
   * A failed turn's Retry: its question answered again (a regenerate), or, when the server
   * kept no question to answer, sent again. False when nothing could be sent now.
   */
  retry(view) {
    const sent = this.branchAction({ type: "regenerate", client_id: uuid4(), ...this.hooks.modelChoice() });
    this.retrying = sent && view.question ? view.question : null;
    return sent;
  }

  /** After a turn: the saved branch's ids, for the controls of what was just drawn live. */
  async refreshBranch(generation) {
    try {
      const { messages } = await api.messages(state.sessionId);
      if (generation !== state.generation || state.activeTurn) return;
      this.decorate(messages || []);
    } catch (error) {
      if (error instanceof AuthError) this.hooks.authFailed();
    }
  }

  /** A frame about the conversation (session_start, ack and agent_event go elsewhere). */
  handle(frame) {
    // A refused approval answer is the card's business, never the end of a turn nor a banner.
    if (frame.type === "error" && frame.code === "APPROVAL_INVALID") this.approvalRefused(frame);
    else if (typeof frame.turn_id === "string") this.turnEvent(frame);
    else own(SESSION_FRAMES, frame.type)?.call(this, frame);
  }

  turnEvent(frame) {
    let view = this.turns.get(frame.turn_id);
    if (view && view.finished) return; // a late repeat of a turn already drawn whole
    if (!view) {
      this.retrying = null;
      view = this.newTurn(frame.turn_id);
      const sent = this.questionShown ? null : this.hooks.takeSent();
      if (this.questionShown) {
        // An edit or a regenerate: the history frame just drew the question it answers.
        this.questionShown = false;
      } else if (sent) {
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

  // --- Approvals: tool calls that wait for a person --------------------------------

  /** approval_request: the call's tool card becomes an approval card (drawn once per id). */
  askApproval(view, frame) {
    const id = typeof frame.approval_id === "string" ? frame.approval_id : "";
    if (!id || this.approvals.has(id)) return;
    const card = view.toolCard(frame.tool_call_id, frame.name, frame.args);
    if (card.approval) return; // this call was asked about already, under another id
    const approval = new Approval(
      { approvalId: id, name: frame.name, args: frame.args, expiresAt: frame.expires_at },
      (decision, args) => this.answerApproval(id, decision, args),
    );
    card.attachApproval(approval);
    this.approvals.set(id, { approval, card });
    this.setStatus(`Waiting for your approval: ${String(frame.name || "a tool")}`);
    flushRendering();
    this.hooks.approvalsChanged();
  }

  /** approval_result: from this page, another tab or device, the operator or the timeout. */
  approvalResult(frame) {
    const entry = this.approvals.get(frame.approval_id);
    if (entry && !entry.approval.decided) {
      const edited = entry.approval.result(frame.decision, frame.by, frame.args);
      entry.card.approvalDecided(frame.decision, edited);
    }
    const waiting = [...this.approvals.values()].some(({ approval }) => !approval.decided);
    if (!waiting) this.setStatus("");
    this.hooks.approvalsChanged();
  }

  /** Send a person's answer: over the socket, or through REST while the socket is down. */
  answerApproval(id, decision, args) {
    this.lastAnswered = id;
    const body = { decision };
    if (args !== undefined) body.args = args;
    if (this.hooks.ready()) {
      this.hooks.send({ type: "approval", approval_id: id, ...body });
      return undefined;
    }
    return api.decideApproval(id, body).then(
      () => this.hooks.approvalsChanged(),
      (error) => {
        if (error instanceof AuthError) this.hooks.authFailed();
        throw error;
      },
    );
  }

  /** error APPROVAL_INVALID: shown on the card it is about; the socket and the turn go on. */
  approvalRefused(frame) {
    const id = typeof frame.approval_id === "string" ? frame.approval_id : this.lastAnswered;
    const entry = id ? this.approvals.get(id) : null;
    const message = frame.message || "This approval can no longer be answered.";
    if (entry) entry.approval.fail(message, frame.code);
    else showBanner(frame.code, message, "warning");
    this.hooks.approvalsChanged();
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
    this.refreshBranch(state.generation);
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
