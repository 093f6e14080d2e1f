// Which sessions have a tool call waiting for a person: asked of the server when someone
// signs in, soon after an approval is asked for or answered on the open session, and every
// 15 s while the page shows, so an approval that waits in another session (another tab,
// another device, a turn that outlived its server process) is not missed. The sidebar
// marks those sessions.

import { AuthError, api } from "./api.js";
import { state } from "./state.js";

const POLL_MS = 15000;
const SOON_MS = 300;

export class PendingApprovals {
  /** `hooks`: changed(counts), counts a Map of session id -> approvals waiting; authFailed(). */
  constructor(hooks) {
    this.hooks = hooks;
    this.counts = new Map();
    this.loads = 0;
    this.soon = null;
    setInterval(() => {
      if (document.visibilityState === "visible" && state.signedIn) this.load();
    }, POLL_MS);
  }

  /** Ask again shortly (several calls in a row make one request). */
  refresh() {
    clearTimeout(this.soon);
    this.soon = setTimeout(() => this.load(), SOON_MS);
  }

  async load() {
    const ticket = ++this.loads;
    let pending;
    try {
      pending = await api.pendingApprovals();
    } catch (error) {
      if (ticket === this.loads && error instanceof AuthError) this.hooks.authFailed();
      return; // the marks stay as they were until an answer comes
    }
    if (ticket !== this.loads) return; // a newer answer, or signed out meanwhile
    const counts = new Map();
    for (const item of pending) {
      if (item && typeof item.session_id === "string") counts.set(item.session_id, (counts.get(item.session_id) || 0) + 1);
    }
    this.counts = counts;
    this.hooks.changed(counts);
  }

  /** Signed out: no mark of that user's sessions stays, and no late answer draws one. */
  clear() {
    this.loads += 1;
    clearTimeout(this.soon);
    this.counts = new Map();
    this.hooks.changed(this.counts);
  }
}
