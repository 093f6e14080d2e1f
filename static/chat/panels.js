// The side panel: the Live Canvas (what render_canvas pushed, in a sandboxed frame), the
// operator events that reach every chat socket, and the tabs and top-bar toggles between them.

import { plainError } from "./errors.js";
import { el, markdownToSafeHtml } from "./render.js";
import { $ } from "./util.js";

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

const MAX_EVENTS = 100;
// sessionStorage: the tab's last events, shown at once on a reload until the server's list
// (GET /api/channel-events/, which any tab and any reload gets) replaces them.
const EVENTS_KEY = "construct.events";

function stamp(at) {
  const when = new Date(at);
  const now = new Date();
  const time = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  return when.toDateString() === now.toDateString() ? time
    : `${when.toLocaleDateString([], { day: "numeric", month: "short" })}, ${time}`;
}

function seconds(ms) {
  return typeof ms === "number" && Number.isFinite(ms) ? `${(ms / 1000).toFixed(ms < 10000 ? 1 : 0)} s` : "";
}

function text(value, max = 160) {
  const s = typeof value === "string" ? value : value === undefined || value === null ? "" : JSON.stringify(value);
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

/** [icon, word, kind, what happened] of an operator event: one readable line. */
function describe(event) {
  const type = typeof event.type === "string" ? event.type : "";
  switch (type) {
    case "agent_start":
      return ["▶", "Started", "start", ["Answering", event.model ? `with ${text(event.model, 60)}` : "",
        event.reasoning && event.reasoning !== "off" ? `(reasoning ${text(event.reasoning, 10)})` : ""]
        .filter(Boolean).join(" ")];
    case "agent_end": {
      const tokens = (event.input_tokens || 0) + (event.output_tokens || 0);
      const parts = [seconds(event.duration_ms) && `in ${seconds(event.duration_ms)}`,
        tokens ? `${tokens} tokens` : "", typeof event.cost_usd === "number" && event.cost_usd > 0
          ? `$${event.cost_usd.toFixed(4)}` : ""].filter(Boolean);
      return ["✓", "Finished", "end", `Answered${parts.length ? ` ${parts.join(" · ")}` : ""}`];
    }
    case "error":
      return ["⚠", "Error", "error", plainError(String(event.code || ""), String(event.message || "")).text];
    case "approval_request":
      return ["?", "Approval", "approval", `${text(event.name, 60) || "A tool"} waits for approval`];
    case "approval_result":
      return ["✓", "Approval", "approval", `${text(event.name, 60) || "A tool"}: ${text(event.decision, 20)}`
        + (event.by ? ` by ${text(event.by, 40)}` : "")];
    default: {
      // A channel event: any JSON an operator posted. Its type if it has one, then a short look.
      const rest = { ...event };
      delete rest.type;
      return ["•", "Event", "channel", [type ? text(type, 60) : "", Object.keys(rest).length ? text(rest, 120) : ""]
        .filter(Boolean).join(": ") || "(empty)"];
    }
  }
}

export class EventLog {
  /**
   * `sessionName(id)`: a session's name to show, or ""; `open(id)`: open that session.
   * The last MAX_EVENTS events are kept in this tab's sessionStorage: a reload shows them again
   * at once, and then the server's list (`load`), which a new tab or browser gets too.
   */
  constructor({ list, empty, onAdd, sessionName, open }) {
    this.list = list;
    this.empty = empty;
    this.onAdd = onAdd || (() => {});
    this.sessionName = sessionName || (() => "");
    this.open = open || (() => {});
    this.kept = [];
    try {
      const kept = JSON.parse(sessionStorage.getItem(EVENTS_KEY) || "[]");
      if (Array.isArray(kept)) this.kept = kept.filter((k) => k && typeof k.event === "object" && k.event);
    } catch {
      this.kept = [];
    }
    this.kept = this.kept.slice(-MAX_EVENTS);
    this.arrived = null; // while the server's list is asked for: the live events meanwhile
  }

  /**
   * Show the server's events (`fetch()` -> {events: [{created_at, event}]}, oldest first) in
   * place of this tab's own, with the live ones that came while it was asked for and are not
   * in it. False when it could not be had (this tab's own stay).
   */
  async load(fetch) {
    const arrived = (this.arrived = []);
    let rows;
    try {
      rows = (await fetch()).events;
    } catch {
      return false;
    } finally {
      if (this.arrived === arrived) this.arrived = null;
    }
    if (!Array.isArray(rows)) return false;
    const server = rows.filter((r) => r && r.event && typeof r.event === "object")
      .map((r) => ({ event: r.event, at: Date.parse(r.created_at) || Date.now() }));
    const known = new Set(server.map(({ event }) => JSON.stringify(event)));
    const newer = arrived.filter(({ event }) => !known.has(JSON.stringify(event)));
    this.kept = [...server, ...newer].slice(-MAX_EVENTS);
    this.save();
    this.restore();
    return true;
  }

  /** The chats' names on the lines, again (the list of chats was loaded, or a chat renamed). */
  relabel() {
    for (const link of this.list.querySelectorAll(".event-session")) {
      const name = this.sessionName(link.title);
      if (name && link.textContent !== name) link.textContent = name;
    }
  }

  /** Draw the kept events again (after a reload; once the session names are known). */
  restore() {
    this.list.replaceChildren(...this.kept.map(({ event, at }) => this.row(event, at)).reverse());
    this.empty.hidden = this.kept.length > 0;
  }

  add(event) {
    if (!event || typeof event !== "object" || Array.isArray(event)) event = { value: event };
    const at = Date.now();
    this.kept.push({ event, at });
    this.arrived?.push({ event, at });
    if (this.kept.length > MAX_EVENTS) this.kept.splice(0, this.kept.length - MAX_EVENTS);
    this.save();
    this.list.prepend(this.row(event, at));
    while (this.list.childElementCount > MAX_EVENTS) this.list.lastElementChild.remove();
    this.empty.hidden = true;
    this.onAdd(event);
  }

  row(event, at) {
    const [icon, word, kind, what] = describe(event);
    const id = typeof event.session_id === "string" ? event.session_id : "";
    let session = null;
    if (id) {
      const name = this.sessionName(id) || `Chat ${id.slice(0, 8)}`;
      session = el("a", { class: "event-session", href: `${location.pathname}?session=${encodeURIComponent(id)}`, title: id }, name);
      session.addEventListener("click", (e) => {
        if (e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
        e.preventDefault();
        this.open(id);
      });
    }
    return el(
      "li",
      { class: "event", "data-type": typeof event.type === "string" ? event.type : "event", "data-kind": kind },
      el("div", { class: "event-head" },
        el("span", { class: "event-icon", "aria-hidden": "true" }, icon),
        el("strong", { class: "event-word" }, word),
        session,
        el("time", { datetime: new Date(at).toISOString() }, stamp(at))),
      el("p", { class: "event-what" }, what),
      el("details", { class: "event-raw" }, el("summary", {}, "Details"), el("pre", {}, JSON.stringify(event, null, 2))),
    );
  }

  save() {
    try {
      sessionStorage.setItem(EVENTS_KEY, JSON.stringify(this.kept));
    } catch {
      // No storage: the events last as long as the page.
    }
  }

  clear() {
    this.kept = [];
    try {
      sessionStorage.removeItem(EVENTS_KEY);
    } catch {
      // nothing kept
    }
    this.list.replaceChildren();
    this.empty.hidden = false;
  }
}

// --- The panel itself -----------------------------------------------------------------

/** The panel beside the conversation: which tab shows, and how many events arrived unseen. */
export class SidePanel {
  /** `hooks`: sessionName(id) -> a session's name for an event's line, or ""; open(id). */
  constructor(hooks = {}) {
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
      sessionName: hooks.sessionName,
      open: hooks.open,
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
