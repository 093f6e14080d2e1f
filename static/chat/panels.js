// The side panel: the Live Canvas (what render_canvas pushed, in a sandboxed frame), the
// operator events that reach every chat socket, and the tabs and top-bar toggles between them.

import { el, markdownToSafeHtml } from "./render.js";
import { $ } from "./util.js";

function timeLabel() {
  return new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

// --- The Live Canvas ------------------------------------------------------------------

export const isRenderCanvas = (name) => name === "render_canvas" || String(name).endsWith("__render_canvas");
export const isClearCanvas = (name) => name === "clear_canvas" || String(name).endsWith("__clear_canvas");

/** What `render_canvas` pushed, by canvas id; shown in a sandboxed frame. */
export class Canvas {
  constructor({ select, view, typeBadge, onShow }) {
    this.select = select;
    this.view = view;
    this.typeBadge = typeBadge;
    this.onShow = onShow || (() => {});
    this.items = new Map();
    this.current = null;
    select.addEventListener("change", () => {
      this.current = select.value;
      this.draw();
    });
    this.draw();
  }

  /** Act on a tool call if it is a canvas tool; true when it was. */
  apply(name, args, { show = true } = {}) {
    if (typeof args === "string") {
      try {
        args = JSON.parse(args);
      } catch {
        return false;
      }
    }
    if (!args || typeof args !== "object") args = {};
    if (isRenderCanvas(name)) {
      const id = String(args.canvas_id || "default");
      this.items.set(id, { type: String(args.content_type || "html").toLowerCase(), content: String(args.content ?? "") });
      this.current = id;
      this.draw();
      if (show) this.onShow();
      return true;
    }
    if (isClearCanvas(name)) {
      if (args.canvas_id) this.items.delete(String(args.canvas_id));
      else this.items.clear();
      if (!this.items.has(this.current)) this.current = [...this.items.keys()].pop() ?? null;
      this.draw();
      return true;
    }
    return false;
  }

  reset() {
    this.items.clear();
    this.current = null;
    this.draw();
  }

  draw() {
    this.select.replaceChildren(...[...this.items.keys()].map((id) => el("option", { value: id }, id)));
    this.select.disabled = this.items.size < 2;
    const item = this.current !== null ? this.items.get(this.current) : null;
    if (item) this.select.value = this.current;
    this.typeBadge.textContent = item ? item.type : "";
    this.view.replaceChildren();
    this.view.dataset.canvasId = item ? this.current : "";
    if (!item) {
      this.view.append(el("p", { class: "hint center" }, "Nothing on the canvas yet. When the agent calls render_canvas, it appears here."));
      return;
    }
    if (item.type === "markdown") {
      const box = el("div", { class: "md canvas-md" });
      box.innerHTML = markdownToSafeHtml(item.content);
      this.view.append(box);
    } else if (item.type === "html" || item.type === "svg") {
      // sandbox="" before the content: no scripts, no forms, no navigation, an opaque origin.
      const frame = document.createElement("iframe");
      frame.setAttribute("sandbox", "");
      frame.setAttribute("referrerpolicy", "no-referrer");
      frame.setAttribute("title", `Canvas ${this.current}`);
      frame.className = "canvas-frame";
      frame.srcdoc =
        item.type === "svg"
          ? `<!doctype html><meta charset="utf-8"><style>html,body{margin:0;height:100%;display:grid;place-items:center;background:#fff}svg{max-width:100%;max-height:100%}</style>${item.content}`
          : item.content;
      this.view.append(frame);
    } else {
      this.view.append(el("pre", { class: "canvas-text" }, item.content));
    }
  }
}

// --- Operator events ------------------------------------------------------------------

const MAX_EVENTS = 200;

export class EventLog {
  constructor({ list, empty, onAdd }) {
    this.list = list;
    this.empty = empty;
    this.onAdd = onAdd || (() => {});
  }

  add(event) {
    const type = event && typeof event === "object" && typeof event.type === "string" ? event.type : "event";
    const item = el(
      "li",
      { class: "event", "data-type": type },
      el("div", { class: "event-head" }, el("span", { class: "badge" }, type), el("time", {}, timeLabel())),
      el("pre", {}, JSON.stringify(event, null, 2)),
    );
    this.list.prepend(item);
    while (this.list.childElementCount > MAX_EVENTS) this.list.lastElementChild.remove();
    this.empty.hidden = true;
    this.onAdd(event);
  }

  clear() {
    this.list.replaceChildren();
    this.empty.hidden = false;
  }
}

// --- The panel itself -----------------------------------------------------------------

/** The panel beside the conversation: which tab shows, and how many events arrived unseen. */
export class SidePanel {
  constructor() {
    this.app = $("app");
    this.panel = $("sidepanel");
    this.canvasPanel = $("canvas-panel");
    this.eventsPanel = $("events-panel");
    this.tabCanvas = $("tab-canvas");
    this.tabEvents = $("tab-events");
    this.toggleCanvas = $("toggle-canvas");
    this.toggleEvents = $("toggle-events");
    this.eventsCount = $("events-count");
    this.unseenEvents = 0;

    this.toggleCanvas.addEventListener("click", () => (this.showing("canvas") ? this.hide() : this.show("canvas")));
    this.toggleEvents.addEventListener("click", () => (this.showing("events") ? this.hide() : this.show("events")));
    this.tabCanvas.addEventListener("click", () => this.show("canvas"));
    this.tabEvents.addEventListener("click", () => this.show("events"));
    $("panel-close").addEventListener("click", () => this.hide());

    this.canvas = new Canvas({
      select: $("canvas-select"),
      view: $("canvas-view"),
      typeBadge: $("canvas-type"),
      onShow: () => this.show("canvas"),
    });
    this.events = new EventLog({
      list: $("event-list"),
      empty: $("events-empty"),
      onAdd: () => {
        if (this.showing("events")) return;
        this.unseenEvents += 1;
        this.eventsCount.textContent = String(this.unseenEvents);
        this.eventsCount.hidden = false;
      },
    });
  }

  /** Open the panel on "canvas" or "events". */
  show(which) {
    this.panel.hidden = false;
    this.app.classList.add("with-panel");
    const canvasOn = which === "canvas";
    this.canvasPanel.hidden = !canvasOn;
    this.eventsPanel.hidden = canvasOn;
    this.tabCanvas.setAttribute("aria-selected", String(canvasOn));
    this.tabEvents.setAttribute("aria-selected", String(!canvasOn));
    this.toggleCanvas.setAttribute("aria-pressed", String(canvasOn));
    this.toggleEvents.setAttribute("aria-pressed", String(!canvasOn));
    if (!canvasOn) {
      this.unseenEvents = 0;
      this.eventsCount.hidden = true;
    }
  }

  hide() {
    this.panel.hidden = true;
    this.app.classList.remove("with-panel");
    this.toggleCanvas.setAttribute("aria-pressed", "false");
    this.toggleEvents.setAttribute("aria-pressed", "false");
  }

  /** Signed out: closed, with no event or canvas of that user left. */
  clear() {
    this.hide();
    this.canvas.reset();
    this.events.clear();
    this.unseenEvents = 0;
    this.eventsCount.hidden = true;
  }

  isOpen() {
    return !this.panel.hidden;
  }

  showing(which) {
    return !this.panel.hidden && !(which === "canvas" ? this.canvasPanel : this.eventsPanel).hidden;
  }
}
