// What an empty chat shows instead of a blank area: a greeting with a few suggestions that
// fill the message box, or "Chat not found" when the address names a chat that does not exist.

import { $, el } from "./util.js";

export const SUGGESTIONS = [
  { title: "Explain a concept", text: "Explain how public-key cryptography works, in simple terms." },
  { title: "Write some code", text: "Write a Python function that checks whether a string is a palindrome." },
  { title: "Look at my files", text: "List the files in the workspace and tell me what they are for." },
  { title: "Plan something", text: "Help me plan a one-week schedule for learning SQL." },
];

export class Welcome {
  /** `hooks`: fill(text) puts a suggestion in the message box; fresh() opens a new chat. */
  constructor(hooks) {
    this.hooks = hooks;
    this.box = $("welcome");
    this.messages = $("messages");
    this.mode = null; // "greeting", "not-found" or null (hidden)
    // The greeting goes as soon as anything is in the conversation (a message sent, the history).
    new MutationObserver(() => this.mode === "greeting" && this.messages.firstChild && this.hide())
      .observe(this.messages, { childList: true });
  }

  /** An empty chat: the greeting, unless the conversation already shows something. */
  greet() {
    if (this.messages.firstChild) return this.hide();
    this.mode = "greeting";
    const buttons = SUGGESTIONS.map((s) => el("button", {
      type: "button", class: "suggestion", onclick: () => this.hooks.fill(s.text),
    }, el("strong", {}, s.title), el("span", {}, s.text)));
    this.box.replaceChildren(
      el("h2", { id: "welcome-title", class: "welcome-title" }, "How can I help?"),
      el("p", { class: "welcome-text" }, "Ask anything, or start from one of these:"),
      el("div", { class: "suggestions", role: "group", "aria-label": "Suggestions" }, ...buttons),
    );
    this.box.hidden = false;
  }

  /** The address names a chat that is not there (never made, deleted, or someone else's). */
  notFound() {
    this.mode = "not-found";
    const link = el("a", { class: "btn primary", href: location.pathname }, "Start a new chat");
    link.addEventListener("click", (event) => {
      if (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
      event.preventDefault();
      this.hooks.fresh();
    });
    this.box.replaceChildren(
      el("h2", { id: "welcome-title", class: "welcome-title" }, "Chat not found"),
      el("p", { class: "welcome-text" },
        "This chat does not exist: it may have been deleted, or the link is wrong."),
      link,
    );
    this.box.hidden = false;
  }

  hide() {
    this.mode = null;
    this.box.hidden = true;
    this.box.replaceChildren();
  }
}
