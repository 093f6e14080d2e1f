// An approval: a tool call that waits for a person. Drawn inside the call's tool card: the
// arguments as JSON a person may edit, Approve / Deny / Always allow, a countdown to when
// the server denies it by itself, then who decided what. Nothing here talks to the network:
// the answer goes out through the `decide` function the card is given.
//
// The tool's name and arguments come from the model: they only ever reach the page as
// text (textContent, a textarea's value, attributes), never as markup.

import { el } from "./render.js";

/** What a decision reads as once made. */
const DECIDED = {
  approve: "Approved",
  deny: "Denied",
  always: "Always allowed",
  timeout: "Denied: nobody answered in time",
};

/** The buttons, in order: decision, label, class, what a screen reader hears (with the tool's name). */
const BUTTONS = [
  ["approve", "Approve", "btn primary small", (name) => `Approve ${name}`],
  ["deny", "Deny", "btn danger small", (name) => `Deny ${name}`],
  ["always", "Always allow", "btn ghost small", (name) => `Always allow ${name} in this session`],
];

// One timer for every countdown on the page.
const ticking = new Set();
let ticker = null;

function startTicking(approval) {
  ticking.add(approval);
  approval.tick();
  ticker ??= setInterval(() => {
    for (const item of ticking) item.tick();
    if (!ticking.size) {
      clearInterval(ticker);
      ticker = null;
    }
  }, 1000);
}

/** "1:05", "0:09": minutes and seconds left. */
function clock(seconds) {
  const s = Math.max(0, Math.ceil(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

/** Arguments as the model sent them (an object, or a JSON string) to an object, or undefined. */
function parsedArgs(args) {
  if (typeof args !== "string") return args;
  try {
    return JSON.parse(args);
  } catch {
    return undefined;
  }
}

function formatArgs(args) {
  const parsed = parsedArgs(args);
  if (parsed === undefined) return String(args);
  return JSON.stringify(parsed ?? {}, null, 2);
}

const isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);

let counter = 0;

export class Approval {
  /**
   * `request`: {approvalId, name, args, expiresAt (ISO 8601)}. `decide(decision, args)`
   * sends the answer (`args` only when a person changed them); it may return a promise,
   * whose rejection (an Error) is shown on the card.
   */
  constructor(request, decide) {
    const n = ++counter;
    this.approvalId = request.approvalId;
    this.name = String(request.name || "tool");
    this.expiresAt = Date.parse(request.expiresAt || "");
    this.decide = decide;
    this.decided = null; // the server's decision, once it said so
    this.sending = null; // the decision sent, until the server answers
    this.sentArgs = undefined; // the edited arguments sent with it
    this.original = parsedArgs(request.args);
    this.requestedArgs = request.args;
    this.initialText = formatArgs(request.args);
    this.ticks = 0;

    const ids = { title: `approval-${n}-title`, args: `approval-${n}-args`, help: `approval-${n}-help`,
      error: `approval-${n}-error`, timer: `approval-${n}-timer` };
    this.textarea = el("textarea", {
      id: ids.args, class: "approval-args", spellcheck: "false", autocomplete: "off",
      rows: String(Math.min(12, Math.max(3, this.initialText.split("\n").length))),
      "aria-describedby": `${ids.help} ${ids.error} ${ids.timer}`,
    });
    this.textarea.value = this.initialText;
    this.textarea.addEventListener("input", () => this.validate({ quiet: true }));
    this.textarea.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        this.submit("approve");
      }
    });
    this.error = el("p", { id: ids.error, class: "approval-error", role: "alert" });
    this.buttons = BUTTONS.map(([decision, label, className, aria]) => {
      const button = el("button", { type: "button", class: `${className} ${decision}`, "data-decision": decision,
        "aria-label": aria(this.name) }, label);
      button.addEventListener("click", () => this.submit(decision));
      return button;
    });
    this.countdown = el("span", { id: ids.timer, class: "approval-countdown", role: "timer" });
    this.status = el("p", { class: "approval-status", role: "status", tabindex: "-1" });
    this.editor = el("div", { class: "approval-editor" },
      el("label", { for: ids.args, class: "approval-label" }, "Arguments (JSON, you may edit them)"),
      this.textarea,
      el("p", { id: ids.help, class: "approval-help" }, "Ctrl+Enter approves. Edited arguments replace the model's."),
      this.error,
      el("div", { class: "approval-actions" }, ...this.buttons, this.countdown));
    this.el = el("div", {
      class: "approval", role: "group", "aria-labelledby": ids.title,
      "data-approval-id": this.approvalId || "", "data-approval-state": "pending",
    },
    this.title = el("p", { id: ids.title, class: "approval-title" }, "The agent asks to run ",
      el("code", {}, this.name), ": allow it?"),
    this.editor,
    this.status);
    this.setStatus("");
    if (Number.isFinite(this.expiresAt)) startTicking(this);
    else this.countdown.hidden = true;
  }

  /** An approval answered long ago (the history), drawn as its result only. */
  static settled(row) {
    const approval = new Approval({ approvalId: row.id, name: row.name, args: row.args }, () => undefined);
    approval.result(row.decision, row.by, row.decided_args);
    return approval;
  }

  /** The arguments typed, checked: {ok, args, edited} or {ok: false, message}. */
  validate({ quiet = false } = {}) {
    const text = this.textarea.value;
    if (text.trim() === this.initialText.trim()) {
      this.showError("");
      return { ok: true, edited: false };
    }
    let parsed;
    try {
      parsed = JSON.parse(text);
    } catch (error) {
      return this.invalid(`Not valid JSON: ${error.message}`, quiet);
    }
    if (!isObject(parsed)) return this.invalid("The arguments must be a JSON object: { … }", quiet);
    this.showError("");
    const same = JSON.stringify(parsed) === JSON.stringify(this.original);
    return { ok: true, edited: !same, args: same ? undefined : parsed };
  }

  invalid(message, quiet) {
    this.showError(message);
    this.textarea.setAttribute("aria-invalid", "true");
    if (!quiet) this.textarea.focus();
    return { ok: false, message };
  }

  showError(message) {
    this.error.textContent = message;
    this.error.hidden = !message;
    if (!message) this.textarea.removeAttribute("aria-invalid");
  }

  /** A button (or Ctrl+Enter): check the arguments, then send the decision once. */
  submit(decision) {
    if (this.decided || this.sending) return;
    let args;
    if (decision !== "deny") {
      const checked = this.validate();
      if (!checked.ok) return; // the error is on the card; nothing is sent
      args = checked.args;
    }
    this.showError("");
    this.sending = decision;
    this.sentArgs = args;
    this.setControls(false);
    this.setState("sending");
    this.setStatus(`${BUTTONS.find(([d]) => d === decision)[1]}: sending…`);
    let sent;
    try {
      sent = this.decide(decision, args);
    } catch (error) {
      this.fail(error.message || String(error));
      return;
    }
    Promise.resolve(sent).catch((error) => this.fail(error.message || String(error)));
  }

  /** The server refused the answer (APPROVAL_INVALID, or a failed request): say so here. */
  fail(message, code = "") {
    if (this.decided) return; // the result says what happened; the error adds nothing
    this.sending = null;
    this.sentArgs = undefined;
    this.showError(code ? `${code}: ${message}` : message);
    this.setStatus("");
    this.setState(this.expired() ? "expired" : "pending");
    // Still waiting as far as this page knows: the person may try again (or the server's
    // approval_result arrives and settles it).
    this.setControls(true);
  }

  /**
   * approval_result: who decided what, from this page or any other. `args`: what a person
   * put in place of the model's arguments, when they were edited. Returns those.
   */
  result(decision, by, args = undefined) {
    let editedArgs = isObject(args) ? args : undefined;
    if (editedArgs === undefined && this.sending === decision) editedArgs = this.sentArgs;
    const hadFocus = this.el.contains(document.activeElement);
    this.decided = String(decision || "deny");
    this.sending = null;
    ticking.delete(this);
    this.setState(this.decided);
    this.setControls(false);
    this.editor.hidden = true;
    this.asked();
    this.showError("");
    const word = DECIDED[this.decided] || `Decided (${this.decided})`;
    const who = by && !["timeout", "closed"].includes(this.decided) ? ` by ${by}` : "";
    this.setStatus(`${word}${who}${editedArgs !== undefined ? ", with edited arguments" : ""}.`);
    if (hadFocus) this.status.focus();
    return editedArgs;
  }

  /** The turn ended while nobody had decided (stopped, an error, the page gave up): no more buttons. */
  interrupt() {
    if (this.decided) return;
    ticking.delete(this);
    this.decided = "closed";
    this.setState("closed");
    this.setControls(false);
    this.editor.hidden = true;
    this.asked();
    this.setStatus("Not run: the answer ended before anyone decided.");
  }

  /** The question is no longer open: the title says what was asked. */
  asked() {
    this.title.firstChild.textContent = "The agent asked to run ";
    this.title.lastChild.textContent = ".";
  }

  setControls(enabled) {
    for (const button of this.buttons) button.disabled = !enabled;
    this.textarea.readOnly = !enabled;
  }

  setState(kind) {
    this.el.dataset.approvalState = kind;
  }

  setStatus(text) {
    this.status.textContent = text;
    this.status.hidden = !text;
  }

  expired() {
    return Number.isFinite(this.expiresAt) && this.expiresAt <= Date.now();
  }

  tick() {
    this.ticks += 1;
    if (!this.el.isConnected && this.ticks > 2) {
      ticking.delete(this); // the conversation was redrawn: this card is gone
      return;
    }
    const left = (this.expiresAt - Date.now()) / 1000;
    const at = new Date(this.expiresAt).toLocaleTimeString();
    this.countdown.title = `Denied automatically at ${at} unless someone answers`;
    if (left > 0) {
      this.countdown.textContent = `${clock(left)} left`;
      this.countdown.dataset.urgent = left <= 15 ? "true" : "false";
    } else {
      // The server's clock decides: its approval_result (a timeout) settles the card.
      this.countdown.textContent = "time is up";
      this.countdown.dataset.urgent = "true";
    }
  }
}
