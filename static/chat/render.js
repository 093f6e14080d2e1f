// What the conversation looks like: Markdown made safe (code blocks highlighted, with their
// language and a Copy button), messages (long ones folded), a turn as it streams, tool cards. Nothing here
// talks to the network (a message's attached files are files.js's).

import { attachmentList } from "./files.js";
import { el } from "./util.js";

const { marked, DOMPurify, hljs } = window;

// --- Markdown, sanitised --------------------------------------------------------------

const escapeHtml = (text) =>
  String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

marked.use({
  gfm: true,
  breaks: true,
  // Raw HTML in a message is shown as the text it is, never as markup. DOMPurify
  // below is the second wall, for whatever Markdown itself turns into HTML.
  renderer: {
    html(token) {
      const text = escapeHtml(token.text ?? token.raw ?? "");
      return token.block ? `<p>${text.trim().replace(/\n/g, "<br>")}</p>\n` : text;
    },
  },
});

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

const PURIFY_CONFIG = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "iframe", "object", "embed"],
  FORBID_ATTR: ["style"],
};

/** Markdown to HTML that is safe to assign to innerHTML. */
export function markdownToSafeHtml(text) {
  const html = marked.parse(String(text ?? ""), { async: false });
  return DOMPurify.sanitize(html, PURIFY_CONFIG);
}

// el() is util.js's; exported here too, where the other views have always found it.
export { el };

const ICONS = {
  // 24x24 outline paths: a pencil, a bin.
  pencil: "M4 20h4L18.5 9.5a2.1 2.1 0 0 0-4-4L4 16v4z M13.5 6.5l4 4",
  trash: "M4 7h16 M10 11v6 M14 11v6 M5 7l1 13h12l1-13 M9 7V4h6v3",
};

/** A small inline SVG icon (no font or image needed), hidden from screen readers. */
export function icon(name) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  for (const [key, value] of Object.entries({
    viewBox: "0 0 24 24", width: "16", height: "16", fill: "none", stroke: "currentColor",
    "stroke-width": "1.8", "stroke-linecap": "round", "stroke-linejoin": "round", "aria-hidden": "true",
  })) svg.setAttribute(key, value);
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", ICONS[name]);
  svg.append(path);
  return svg;
}

// --- Copying ---------------------------------------------------------------------------

/** Put `text` on the clipboard; the old way where the Clipboard API is missing (plain http). */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // refused (no permission, page not focused): try the old way
    }
  }
  const box = el("textarea", { readonly: true, "aria-hidden": "true", class: "copy-buffer" });
  box.value = text;
  document.body.append(box);
  box.select();
  let done = false;
  try {
    done = document.execCommand("copy");
  } catch {
    done = false;
  }
  box.remove();
  return done;
}

/** A Copy button: `source()` is the text it copies; it says "Copied" (or "Copy failed") a moment. */
export function copyButton(source, { label = "Copy", name = "Copy" } = {}) {
  const text = el("span", {}, label);
  const button = el("button", { type: "button", class: "copy-btn", "aria-label": name, title: name }, text);
  let timer = null;
  button.addEventListener("click", async () => {
    const done = await copyText(source());
    text.textContent = done ? "Copied" : "Copy failed";
    button.dataset.copied = done ? "true" : "false";
    button.setAttribute("aria-label", done ? "Copied" : "Copy failed");
    clearTimeout(timer);
    timer = setTimeout(() => {
      text.textContent = label;
      button.setAttribute("aria-label", name);
      delete button.dataset.copied;
    }, 1500);
  });
  return button;
}

// Highlighted code is markup again: only highlight.js's own class'd spans may come out of it.
const HIGHLIGHT_PURIFY = { ALLOWED_TAGS: ["span"], ALLOWED_ATTR: ["class"] };

/**
 * Colour `code` (already sanitised text) when its fence names a language highlight.js knows.
 * highlight.js escapes the text itself; its output goes through DOMPurify once more anyway.
 * An unknown or missing language (or a failure) leaves the plain text as it was.
 */
function highlightCode(code, language) {
  if (!hljs || !language || !hljs.getLanguage(language)) return;
  try {
    const { value } = hljs.highlight(code.textContent, { language, ignoreIllegals: true });
    code.innerHTML = DOMPurify.sanitize(value, HIGHLIGHT_PURIFY);
    code.classList.add("hljs");
  } catch {
    // leave the block as plain text
  }
}

/**
 * Each code block of rendered Markdown gets a head: its language (the fence's info string,
 * which marked gives as class="language-…") and a Copy button for the exact code; its code is
 * highlighted when the language is one highlight.js knows.
 */
function decorateCodeBlocks(root) {
  for (const pre of root.querySelectorAll("pre")) {
    const code = pre.querySelector(":scope > code");
    if (!code || pre.parentElement.classList.contains("code-block")) continue;
    const language = [...code.classList].find((c) => c.startsWith("language-"))?.slice("language-".length) || "";
    highlightCode(code, language);
    // marked ends a block's code with the fence's line break; the code itself does not have it.
    const source = () => code.textContent.replace(/\n$/, "");
    const head = el("div", { class: "code-head" },
      el("span", { class: "code-lang" }, language || "code"),
      copyButton(source, { name: language ? `Copy ${language} code` : "Copy code" }));
    const block = el("div", { class: "code-block" });
    pre.replaceWith(block);
    block.append(head, pre);
  }
}

// --- Long messages ----------------------------------------------------------------------

const COLLAPSED_PX = 384; // what .collapsible shows of a long message before "Show more"
let collapseIds = 0;

/**
 * Fold `body` (an element in `article`) to a few hundred pixels once it is drawn taller than
 * that, with a Show more / Show less button after it. Reaching something in the folded part
 * with the keyboard (a link, a Copy button) unfolds it: nothing focused stays out of sight.
 */
function collapsible(article, body) {
  body.id ||= `msg-body-${++collapseIds}`;
  const toggle = el("button", {
    type: "button", class: "btn ghost small show-more", "aria-expanded": "false", "aria-controls": body.id, hidden: true,
  }, "Show more");
  body.after(toggle);
  let expanded = false;
  const draw = () => {
    const long = body.scrollHeight > COLLAPSED_PX + 48;
    body.classList.toggle("collapsed", long && !expanded);
    toggle.hidden = !long;
    toggle.textContent = expanded ? "Show less" : "Show more";
    toggle.setAttribute("aria-expanded", String(expanded));
  };
  body.classList.add("collapsible");
  toggle.addEventListener("click", () => {
    expanded = !expanded;
    draw();
    if (!expanded) article.scrollIntoView({ block: "nearest" });
  });
  body.addEventListener("focusin", (event) => {
    if (expanded || !body.classList.contains("collapsed") || !event.target.matches(":focus-visible")) return;
    expanded = true;
    draw();
  });
  new ResizeObserver(draw).observe(body);
}

// --- Throttled Markdown rendering -----------------------------------------------------

// A streaming reply is re-rendered at most once a frame, however fast chunks arrive.
const dirty = new Set();
let flushScheduled = false;
let afterFlush = () => {};

export function onRendered(callback) {
  afterFlush = callback;
}

function scheduleFlush() {
  if (flushScheduled) return;
  flushScheduled = true;
  let done = false;
  const run = () => {
    if (done) return;
    done = true;
    flushRendering();
  };
  requestAnimationFrame(run);
  setTimeout(run, 100); // a hidden tab gets no animation frames
}

export function flushRendering() {
  flushScheduled = false;
  for (const segment of dirty) segment.render();
  dirty.clear();
  afterFlush();
}

class MarkdownSegment {
  constructor(className = "md") {
    this.text = "";
    this.el = el("div", { class: className });
  }

  append(delta) {
    this.text += delta;
    dirty.add(this);
    scheduleFlush();
  }

  set(text) {
    this.text = text;
    dirty.add(this);
    scheduleFlush();
  }

  render() {
    this.el.innerHTML = markdownToSafeHtml(this.text);
    decorateCodeBlocks(this.el);
  }
}

// --- Messages -------------------------------------------------------------------------

/** The time of a message; with its date when it is not today (the year too when not this year). */
function timeLabel(date) {
  const when = date ? new Date(date) : new Date();
  const now = new Date();
  const time = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (when.toDateString() === now.toDateString()) return time;
  const day = when.toLocaleDateString([], {
    day: "numeric", month: "short", year: when.getFullYear() === now.getFullYear() ? undefined : "numeric",
  });
  return `${day}, ${time}`;
}

/** A <time> element for a message: its label, the exact moment in datetime and on hover. */
function timeElement(date) {
  const when = date ? new Date(date) : new Date();
  return el("time", { datetime: when.toISOString(), title: when.toLocaleString() }, timeLabel(date));
}

/** A message the person wrote; `setStatus` shows queued / sending / failed. */
export function userMessage(content, { createdAt = null, status = "", attachments = null } = {}) {
  const body = new MarkdownSegment();
  body.set(content);
  const statusEl = el("span", { class: "msg-status" });
  const copy = copyButton(() => String(content ?? ""), { name: "Copy message" });
  const meta = el("div", { class: "meta" }, el("span", { class: "who" }, "You"), timeElement(createdAt), statusEl, copy);
  const article = el("article", { class: "msg user" }, meta, attachmentList(attachments), body.el);
  collapsible(article, body.el);
  const view = {
    el: article,
    setStatus(text, kind = "") {
      statusEl.textContent = text;
      statusEl.dataset.kind = kind;
      article.classList.toggle("pending", kind === "queued" || kind === "sending");
      article.classList.toggle("failed", kind === "failed");
    },
  };
  view.setStatus(status, status ? "queued" : "");
  return view;
}

/** "1,234 in · 56 out tokens · $0.0012" for a turn's usage ({input_tokens, output_tokens, cost_usd}). */
export function usageText(usage) {
  if (!usage || typeof usage !== "object") return "";
  const input = Number(usage.input_tokens) || 0;
  const output = Number(usage.output_tokens) || 0;
  const cost = Number(usage.cost_usd) || 0;
  if (!input && !output && !cost) return "";
  let dollars = `$${cost.toFixed(cost < 0.01 ? 6 : 4)}`;
  if (cost === 0) dollars = "$0";
  else if (cost < 0.000001) dollars = "< $0.000001";
  return `${input.toLocaleString("en")} in · ${output.toLocaleString("en")} out tokens · ${dollars}`;
}

/** Tool arguments for display: pretty JSON when they are JSON. */
function prettyArgs(args) {
  if (typeof args === "string") {
    try {
      return JSON.stringify(JSON.parse(args), null, 2);
    } catch {
      return args;
    }
  }
  return JSON.stringify(args ?? {}, null, 2);
}

/** The words a tool card shows for its state, by state. */
const TOOL_STATES = {
  running: "running…",
  waiting: "waiting for approval",
  denied: "denied",
  done: "done",
  error: "failed",
  idle: "no result",
};

class ToolCard {
  constructor(id, name, args) {
    this.id = id;
    this.name = name || "tool";
    this.state = el("span", { class: "tool-state" });
    this.argsPre = el("pre", {}, prettyArgs(args));
    this.argsBox = el("details", { class: "tool-args" }, el("summary", {}, "Arguments"), this.argsPre);
    this.resultPre = el("pre", { class: "tool-output" });
    this.result = el("details", { class: "tool-result", hidden: true }, el("summary", {}, "Result"), this.resultPre);
    // An approval (approval.js) goes here: between the arguments and the result.
    this.slot = el("div", { class: "tool-approval-slot" });
    this.approval = null;
    this.el = el(
      "div",
      { class: "tool-card", "data-tool-id": id || "", "data-tool-name": name || "" },
      el("div", { class: "tool-head" }, el("span", { class: "tool-icon", "aria-hidden": "true" }, "⚙"),
        el("code", { class: "tool-name" }, this.name), this.state),
      this.argsBox,
      this.slot,
      this.result,
    );
    this.setState("running");
  }

  setState(kind) {
    this.state.textContent = TOOL_STATES[kind] || kind;
    this.state.dataset.state = kind;
  }

  /** The arguments shown (the model's, or a person's edit of them once approved). */
  setArgs(args, { edited = false } = {}) {
    this.argsPre.textContent = prettyArgs(args);
    this.argsBox.querySelector("summary").textContent = edited ? "Arguments (edited before it ran)" : "Arguments";
    this.el.classList.toggle("edited", edited);
  }

  /**
   * Put an approval (approval.js: an object with `el`, `decided` and `interrupt()`) on this
   * card: while it waits, its editable arguments stand in for the read-only ones.
   */
  attachApproval(approval) {
    this.approval = approval;
    this.slot.replaceChildren(approval.el);
    this.el.classList.add("approval-card");
    if (approval.decided) return; // from history: decided long ago
    this.argsBox.hidden = true;
    if (this.state.dataset.state === "running") this.setState("waiting");
  }

  /** The approval was answered: the tool runs (with `editedArgs` when a person changed them) or not. */
  approvalDecided(decision, editedArgs = undefined) {
    this.argsBox.hidden = false;
    if (editedArgs !== undefined && editedArgs !== null) this.setArgs(editedArgs, { edited: true });
    const runs = decision === "approve" || decision === "always";
    const now = this.state.dataset.state;
    if (now === "waiting") this.setState(runs ? "running" : "denied");
    else if (now === "error" && !runs) this.setState("denied");
  }

  /** `denied`: the call was not run (a person, the policy, the timeout or a stop said no). */
  setResult(output, isError, denied = false) {
    const text = typeof output === "string" ? output : JSON.stringify(output, null, 2);
    this.resultPre.textContent = text;
    this.result.hidden = false;
    // Short results are worth seeing at once; long ones stay one click away.
    this.result.open = text.length <= 400;
    const refused = denied || (isError && this.approval && ["deny", "timeout"].includes(this.approval.decided));
    this.setState(refused ? "denied" : isError ? "error" : "done");
    this.el.classList.toggle("error", Boolean(isError));
  }

  interrupt() {
    this.approval?.interrupt();
    this.argsBox.hidden = false;
    if (["running", "waiting"].includes(this.state.dataset.state)) this.setState("idle");
  }
}

/**
 * One assistant turn: thinking, text and tool cards in the order they came.
 * Events are numbered per turn (`seq`); `accept` drops any already seen, so a
 * replay after a reconnect never shows text twice.
 */
export class TurnView {
  constructor(turnId, { live = true, createdAt = null } = {}) {
    this.turnId = turnId;
    this.lastSeq = 0;
    this.finished = !live;
    this.segments = [];
    this.text = null;
    this.thinking = null;
    this.tools = new Map();
    this.body = el("div", { class: "turn-body" });
    this.note = el("div", { class: "turn-note", hidden: true });
    this.usage = el("div", { class: "turn-usage", hidden: true });
    this.modelName = el("span", { class: "model-name" });
    this.typing = el("span", { class: "typing", "aria-hidden": "true" }, el("i"), el("i"), el("i"));
    this.el = el(
      "article",
      { class: "msg assistant", "data-turn": turnId || "", "aria-busy": live ? "true" : "false" },
      el("div", { class: "meta" }, el("span", { class: "who" }, "Construct"), this.modelName,
        timeElement(createdAt),
        copyButton(() => this.streamedText(), { name: "Copy answer" })),
      this.body,
      live ? this.typing : null,
      this.note,
      this.usage,
    );
    if (live) this.el.classList.add("streaming");
  }

  /** True the first time a seq is seen; a number at or below the last one is a repeat. */
  accept(seq) {
    if (typeof seq !== "number") return true;
    if (seq <= this.lastSeq) return false;
    this.lastSeq = seq;
    return true;
  }

  chunk(delta) {
    if (!delta) return;
    this.thinking = null;
    if (!this.text) {
      this.text = new MarkdownSegment("md answer");
      this.segments.push(this.text);
      this.body.append(this.text.el);
    }
    this.text.append(delta);
  }

  think(delta) {
    if (!delta) return;
    if (!this.thinking) {
      const pre = el("div", { class: "thinking-text" });
      const details = el("details", { class: "thinking" }, el("summary", {}, "Thinking"), pre);
      this.thinking = { pre, text: "" };
      this.body.append(details);
    }
    this.thinking.text += delta;
    this.thinking.pre.textContent = this.thinking.text;
  }

  /** A tool call; a repeat of one already shown (an approval drew it first) updates its arguments. */
  toolCall(id, name, args) {
    const known = id ? this.tools.get(id) : null;
    if (known) {
      if (!known.approval) known.setArgs(args);
      return known;
    }
    this.text = null;
    this.thinking = null;
    const card = new ToolCard(id, name, args);
    this.tools.set(id || `#${this.tools.size}`, card);
    this.body.append(card.el);
    return card;
  }

  /** The card of this tool call id, drawn from the request when no tool_call came before it. */
  toolCard(id, name, args) {
    return (id && this.tools.get(id)) || this.toolCall(id, name, args);
  }

  toolResult(id, name, output, isError, denied = false) {
    let card = this.tools.get(id);
    if (!card) {
      card = new ToolCard(id, name, "");
      this.tools.set(id || `#${this.tools.size}`, card);
      this.body.append(card.el);
    }
    card.setResult(output, isError, denied);
  }

  /** Everything the turn streamed as text so far. */
  streamedText() {
    return this.segments.map((s) => s.text).join("");
  }

  /**
   * The turn ended (`done`, `stopped`, `error`). `fullResponse` is the server's
   * whole text: if what streamed differs (events were lost), it replaces it.
   */
  finish(kind, fullResponse = null, note = "") {
    this.finished = true;
    if (typeof fullResponse === "string" && fullResponse !== this.streamedText()) {
      for (const segment of this.segments) segment.el.remove();
      this.segments = [];
      this.text = null;
      this.chunk(fullResponse);
    }
    for (const card of this.tools.values()) card.interrupt();
    this.typing.remove();
    this.el.classList.remove("streaming");
    this.el.setAttribute("aria-busy", "false");
    this.el.dataset.end = kind;
    if (note) this.setNote(note, kind);
    if (!this.body.childElementCount && !note) this.setNote("(no reply)", "empty");
    // A long answer folds once it is whole: while it streams, the page follows its end.
    if (!this.folds) {
      this.folds = true;
      collapsible(this.el, this.body);
    }
  }

  /** The model that wrote this answer: its name in the header, its id in `data-model`. */
  setModel(modelId, label) {
    if (typeof modelId !== "string" || !modelId) return;
    this.el.dataset.model = modelId;
    this.modelName.textContent = label || modelId;
    this.modelName.title = `Answered by ${modelId}`;
  }

  /** The turn's tokens and cost, under the answer. */
  setUsage(usage) {
    const text = usageText(usage);
    this.usage.textContent = text;
    this.usage.hidden = !text;
  }

  setNote(text, kind = "") {
    this.note.textContent = text;
    this.note.dataset.kind = kind;
    this.note.hidden = false;
  }

  /** A failed turn's Retry button, under its note: run() on click (false: nothing was sent). */
  offerRetry(run) {
    if (this.retry) return;
    this.retry = el("button", { type: "button", class: "btn small retry" }, "Retry");
    this.retry.addEventListener("click", () => {
      if (run() !== false) this.retry.disabled = true;
    });
    this.note.after(this.retry);
  }
}
