// The session sidebar: newest first with their state and any approvals waiting in them,
// search, rename in place, delete with a confirm, a new chat, and the menu button that shows
// it on a narrow screen.

import { AuthError, api } from "./api.js";
import { el, icon } from "./render.js";
import { $ } from "./util.js";

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

function whenLabel(iso) {
  if (!iso) return "";
  const seconds = (new Date(iso).getTime() - Date.now()) / 1000;
  const abs = Math.abs(seconds);
  if (abs < 45) return "just now";
  if (abs < 3600) return relative.format(Math.round(seconds / 60), "minute");
  if (abs < 86400) return relative.format(Math.round(seconds / 3600), "hour");
  if (abs < 7 * 86400) return relative.format(Math.round(seconds / 86400), "day");
  return new Date(iso).toLocaleDateString();
}

const DAY_MS = 86400000;

/** The group of a session by its last activity, in the browser's time zone. */
export function dateGroup(iso, now = new Date()) {
  const when = new Date(iso || 0);
  const startOfToday = new Date(now.getFullYear(), now.getMonth(), now.getDate()).getTime();
  const time = when.getTime();
  if (time >= startOfToday) return "Today";
  // Calendar days, not 24-hour steps: a daylight-saving change must not move a chat.
  const startOfYesterday = new Date(now.getFullYear(), now.getMonth(), now.getDate() - 1).getTime();
  if (time >= startOfYesterday) return "Yesterday";
  const weekAgo = new Date(now.getFullYear(), now.getMonth(), now.getDate() - 7).getTime();
  return time >= weekAgo && Number.isFinite(time) ? "Previous 7 days" : "Older";
}

function countLabel(n) {
  return n === 1 ? "1 message" : `${n} messages`;
}

export function sessionUrl(id) {
  return `${location.pathname}?session=${encodeURIComponent(id)}`;
}

export class Sidebar {
  /**
   * `hooks`: current() -> the open session id; open(id); create() for a new chat;
   * deleted(id); named(id, name) after a rename or a refresh of the open one;
   * authFailed(); error(code, text); listed() after the list is (re)loaded.
   */
  constructor(hooks) {
    this.nav = $("sidebar");
    this.menuToggle = $("menu-toggle");
    this.list = $("session-list");
    this.empty = $("session-empty");
    this.more = $("more-sessions");
    this.search = $("session-search");
    this.hooks = hooks;
    this.sessions = [];
    this.pending = new Map(); // session id -> approvals waiting (pending.js)
    this.next = null;
    this.editing = false; // a rename or a delete confirm is open: keep the list still
    this.loads = 0; // every load asked for, numbered
    this.drawn = 0; // the number of the load on screen: an older answer is not drawn over it
    this.epoch = 0; // bumped by new search words and by clear(): answers from before are dropped
    this.timer = null;
    this.more.addEventListener("click", () => this.loadMore());
    $("new-session").addEventListener("click", () => this.hooks.create());
    this.menuToggle.addEventListener("click", () => this.setOpen(!this.nav.classList.contains("open")));
    let searchTimer = null;
    this.query = ""; // the words the list on screen answers
    this.search.addEventListener("input", () => {
      this.epoch += 1; // a list asked for before these words must not be drawn under them
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => this.load(), 250);
    });
  }

  /** True while the list is slid open over the conversation (narrow screens). */
  isOpen() {
    return this.nav.classList.contains("open");
  }

  /** On a narrow screen the list slides over the conversation. */
  setOpen(open) {
    this.nav.classList.toggle("open", open);
    this.menuToggle.setAttribute("aria-expanded", String(open));
  }

  /** Reload the list soon (several calls in a row make one request). */
  refresh() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.load(), 150);
  }

  /** Mark the sessions with approvals waiting (a Map of session id -> how many). */
  markPending(counts) {
    this.pending = counts;
    if (!this.editing) this.draw();
  }

  /** Signed out: no line of that user's list stays on the page, and no late answer draws one. */
  clear() {
    this.epoch += 1;
    clearTimeout(this.timer);
    this.sessions = [];
    this.next = null;
    this.search.value = "";
    this.query = "";
    this.draw({ force: true });
  }

  async load() {
    const ticket = ++this.loads;
    const { epoch } = this;
    const query = this.search.value.trim();
    try {
      const page = await api.sessions({ search: query });
      // Other words were typed since, or the list was cleared, or a newer load is on screen
      // already; an older load that answers first is drawn until the newer one answers.
      if (epoch !== this.epoch || ticket < this.drawn) return;
      this.drawn = ticket;
      this.query = query;
      this.sessions = page.results || [];
      this.next = page.next || null;
      this.draw();
      this.hooks.listed?.();
    } catch (error) {
      if (epoch === this.epoch && error instanceof AuthError) this.hooks.authFailed();
    }
  }

  async loadMore() {
    if (!this.next) return;
    try {
      const page = await api.sessions({ next: this.next });
      this.sessions = this.sessions.concat(page.results || []);
      this.next = page.next || null;
      this.draw();
    } catch (error) {
      if (error instanceof AuthError) this.hooks.authFailed();
    }
  }

  /** A session's new name from the server (its model's title): its line shows it at once. */
  setName(id, name) {
    const session = this.sessions.find((s) => s.id === id);
    if (!session) return this.refresh();
    session.name = name;
    if (!this.editing) this.draw();
  }

  /** The name of a listed session ("" when it is not listed or has none). */
  nameOf(id) {
    return this.sessions.find((s) => s.id === id)?.name || "";
  }

  draw({ force = false } = {}) {
    if (this.editing && !force) return;
    this.editing = false;
    const currentId = this.hooks.current();
    const searching = Boolean(this.query);
    // Sessions opened and never used are not worth a line, except the open one.
    const shown = this.sessions.filter(
      (s) => searching || s.message_count > 0 || s.id === currentId || this.pending.has(s.id),
    );
    // Newest first, under Today / Yesterday / Previous 7 days / Older (while searching too).
    const rows = [];
    let group = null;
    for (const session of shown) {
      const name = dateGroup(session.last_activity);
      if (name !== group) {
        group = name;
        rows.push(el("li", { class: "session-group" },
          el("h2", { class: "session-group-title" }, name)));
      }
      rows.push(this.item(session, session.id === currentId));
    }
    // A reload of the list (after every turn) must not take the keyboard's place away:
    // what had focus in the old list gets it back in the new one.
    const focused = this.list.contains(document.activeElement) ? document.activeElement : null;
    const focusedIn = focused?.closest("li.session-item")?.dataset.sessionId;
    const focusedAs = focused?.classList.contains("session-link") ? null : focused?.getAttribute("title");
    this.list.replaceChildren(...rows);
    if (focusedIn) {
      const item = [...this.list.querySelectorAll("li.session-item")].find((li) => li.dataset.sessionId === focusedIn);
      const again = item && (focusedAs ? item.querySelector(`button[title="${focusedAs}"]`) : item.querySelector("a.session-link"));
      (again || this.list.querySelector("a.session-link"))?.focus();
    }
    this.empty.hidden = shown.length > 0;
    this.empty.textContent = searching ? "No session matches." : "No sessions yet.";
    this.more.hidden = !this.next;
    const current = this.sessions.find((s) => s.id === currentId);
    if (current) this.hooks.named(current.id, current.name);
  }

  item(session, current) {
    const label = session.name || "Untitled chat";
    const waiting = this.pending.get(session.id) || 0;
    const waitingText = waiting === 1 ? "1 approval waiting" : `${waiting} approvals waiting`;
    const link = el(
      "a",
      { class: "session-link", href: sessionUrl(session.id), "aria-current": current ? "page" : null, title: session.id },
      el("span", { class: "session-name" }, label),
      el(
        "span",
        { class: "session-meta" },
        // A badge only where there is something to see (running, error, interrupted), not on every idle chat.
        session.state === "idle" ? null
          : el("span", { class: `badge state-${session.state}`, title: `State: ${session.state}` }, session.state),
        waiting ? el("span", { class: "badge approval-pending", title: `${waitingText}: open the chat to answer` },
          `${waiting} to approve`, el("span", { class: "visually-hidden" }, ` (${waitingText})`)) : null,
        // Questions and answers only (tool rows are the agent's own); older servers: every row.
        el("span", { class: "session-count" }, countLabel(session.chat_message_count ?? session.message_count)),
        el("time", { datetime: session.last_activity, title: new Date(session.last_activity).toLocaleString() },
          whenLabel(session.last_activity)),
      ),
    );
    link.addEventListener("click", (event) => {
      if (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
      event.preventDefault();
      this.hooks.open(session.id);
    });
    const rename = el("button", { type: "button", class: "icon-btn", "aria-label": `Rename ${label}`, title: "Rename" }, icon("pencil"));
    const remove = el("button", { type: "button", class: "icon-btn", "aria-label": `Delete ${label}`, title: "Delete" }, icon("trash"));
    const item = el("li", { class: "session-item", "data-session-id": session.id,
      "data-pending-approvals": waiting ? String(waiting) : null }, link,
      el("div", { class: "session-actions" }, rename, remove));
    rename.addEventListener("click", () => this.rename(item, session));
    remove.addEventListener("click", () => this.confirmDelete(item, session));
    return item;
  }

  rename(item, session) {
    this.editing = true;
    const input = el("input", {
      class: "rename-input", type: "text", value: session.name || "", maxlength: "200", "aria-label": "New session name",
    });
    item.replaceChildren(input);
    input.focus();
    input.select();
    let finished = false;
    const finish = async (save) => {
      if (finished) return;
      finished = true;
      const name = input.value.trim();
      if (save && name !== (session.name || "")) {
        try {
          const updated = await api.rename(session.id, name);
          session.name = updated.name;
          this.hooks.named(session.id, updated.name);
        } catch (error) {
          if (error instanceof AuthError) return this.hooks.authFailed();
          this.hooks.error("", `Could not rename the session: ${error.message}`);
        }
      }
      this.draw({ force: true });
      this.load();
    };
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        finish(true);
      } else if (event.key === "Escape") {
        event.preventDefault();
        finish(false);
      }
    });
    input.addEventListener("blur", () => finish(true));
  }

  confirmDelete(item, session) {
    this.editing = true;
    const yes = el("button", { type: "button", class: "btn danger small" }, "Delete");
    const no = el("button", { type: "button", class: "btn ghost small" }, "Cancel");
    item.replaceChildren(el("div", { class: "confirm", role: "group", "aria-label": "Confirm delete" },
      el("span", {}, `Delete “${session.name || "Untitled chat"}” and its messages?`), el("div", {}, yes, no)));
    no.focus();
    no.addEventListener("click", () => this.draw({ force: true }));
    item.addEventListener("keydown", (event) => {
      if (event.key === "Escape") this.draw({ force: true });
    });
    yes.addEventListener("click", async () => {
      yes.disabled = true;
      try {
        await api.remove(session.id);
      } catch (error) {
        if (error instanceof AuthError) return this.hooks.authFailed();
        if (error.status === 409) this.hooks.error("SESSION_BUSY", "This session is answering right now: stop it first, then delete it.");
        else this.hooks.error("", `Could not delete the session: ${error.message}`);
        this.draw({ force: true });
        return;
      }
      this.sessions = this.sessions.filter((s) => s.id !== session.id);
      this.editing = false;
      this.hooks.deleted(session.id);
      this.draw({ force: true });
      this.load();
    });
  }
}
