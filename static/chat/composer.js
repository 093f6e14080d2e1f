// The composer: the message box (Enter sends, Shift+Enter breaks the line, Esc stops a
// running answer), the Send/Queue and Stop buttons that follow the busy state, and the
// page context picker, remembered in localStorage.

import { on, state } from "./state.js";
import { $ } from "./util.js";

const CONTEXT_KEY = "construct.page_context";

export class Composer {
  /**
   * `hooks`: submit(content, pageContext) for a message typed (false: not taken, the text
   * stays); stop() for Stop or Esc.
   */
  constructor(hooks) {
    this.hooks = hooks;
    this.form = $("composer");
    this.input = $("input");
    this.sendButton = $("send");
    this.stopButton = $("stop");
    this.context = $("page-context");

    this.input.addEventListener("input", () => this.autosize());
    // The page's first stop for Tab, shown only when focused: past the header and the sessions.
    $("skip-to-input").addEventListener("click", () => this.input.focus());
    this.input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.form.requestSubmit();
      } else if (event.key === "Escape" && state.busy) {
        event.preventDefault();
        this.hooks.stop();
      }
    });
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      const content = this.input.value;
      if (!content.trim()) return;
      // False: not sent now (files still uploading); the text stays in the box.
      if (this.hooks.submit(content, this.context.value || null) === false) return;
      this.input.value = "";
      this.autosize();
    });
    this.stopButton.addEventListener("click", () => this.hooks.stop());
    on("busy", () => this.drawBusy());
    this.rememberContext();
  }

  focus() {
    this.input.focus();
  }

  /** Signed out: the next person finds an empty box. */
  clear() {
    this.input.value = "";
    this.autosize();
  }

  /** The page context chosen for messages (null: none). */
  pageContext() {
    return this.context.value || null;
  }

  /**
   * A message the server refused for good comes back to edit, unless something new is
   * typed; true when it did.
   */
  giveBack(text) {
    if (this.input.value.trim()) return false;
    this.input.value = text;
    this.autosize();
    return true;
  }

  autosize() {
    this.input.style.height = "auto";
    this.input.style.height = `${Math.min(this.input.scrollHeight, window.innerHeight * 0.4)}px`;
  }

  drawBusy() {
    const { busy, stopping } = state;
    this.stopButton.hidden = !busy;
    this.stopButton.disabled = !busy || stopping;
    this.sendButton.textContent = busy ? "Queue" : "Send";
    this.sendButton.title = busy ? "The answer is still running: your message waits its turn" : "";
    this.form.dataset.busy = busy ? "true" : "false";
  }

  rememberContext() {
    try {
      const saved = localStorage.getItem(CONTEXT_KEY);
      if (saved !== null && [...this.context.options].some((o) => o.value === saved)) this.context.value = saved;
    } catch {
      // no storage: the default context
    }
    this.context.addEventListener("change", () => {
      try {
        localStorage.setItem(CONTEXT_KEY, this.context.value);
      } catch {
        // not remembered
      }
    });
  }
}
