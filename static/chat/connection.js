// The chat socket: opened with the token as a subprotocol (never in the URL), asking to
// resume a running turn after the last seq this page saw, handing frames on one at a time
// and in order, and reconnecting with backoff (the indicator in the top bar shows which),
// at once after a server restart (1012), except after a refusal that retrying cannot cure
// (halt): then only on request.

import { tokenStore } from "./api.js";
import { showBanner } from "./banner.js";
import { state } from "./state.js";
import { $ } from "./util.js";

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;
const CLOSE_TOKEN_REVOKED = 4401;
// "Service restart": the server process drains; another one (or this one, restarted) takes
// the socket now, and the running turn resumes from the last seq this page saw.
const CLOSE_SERVICE_RESTART = 1012;

export class Connection {
  /**
   * `hooks`: frame(frame, generation), awaited before the next frame; dropped() when an
   * open socket of the current session closed; revoked() on the "token revoked" close code;
   * tokenRefused() -> true when a socket that never opened was refused for its token.
   */
  constructor(hooks) {
    this.hooks = hooks;
    this.indicator = $("conn");
    this.indicatorText = $("conn-text");
    this.socket = null;
    this.opened = false; // the current socket has delivered session_start
    this.attempt = 0; // reconnect attempts since the last good session_start
    this.reconnectTimer = null;
    this.countdown = null;
    this.halted = ""; // why the next close is not followed by a reconnect ("": it is)
    this.frames = Promise.resolve(); // frames are handled one at a time, in order
    window.addEventListener("online", () => this.reconnectNow());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.reconnectNow();
    });
  }

  /** The socket is up and its session has started: frames may be sent. */
  get ready() {
    return this.opened && this.socket && this.socket.readyState === WebSocket.OPEN;
  }

  send(frame) {
    this.socket.send(JSON.stringify(frame));
  }

  /** Open a socket to the open session (nothing when one is open already). */
  open() {
    clearTimeout(this.reconnectTimer);
    if (this.socket) return;
    const generation = state.generation;
    const params = new URLSearchParams({ session_id: state.sessionId });
    const resume = state.activeTurn;
    if (resume && !resume.finished) {
      // Only what this page has not seen yet of the running turn is replayed.
      params.set("turn_id", resume.turnId);
      params.set("last_seq", String(resume.lastSeq));
    }
    const protocols = ["construct.v1"];
    const token = tokenStore.get();
    // The token travels as a subprotocol, not in the URL, so no access log sees it.
    if (token) protocols.push(`bearer.${token}`);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    let socket;
    try {
      socket = new WebSocket(`${scheme}://${location.host}/ws/chat?${params}`, protocols);
    } catch (error) {
      showBanner("", `Could not open the chat socket: ${error.message}`);
      this.scheduleReconnect();
      return;
    }
    this.socket = socket;
    this.opened = false;
    this.show("connecting", this.attempt ? "Reconnecting…" : "Connecting…");
    socket.onmessage = (event) => {
      if (socket !== this.socket) return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this.frames = this.frames
        .then(() => this.deliver(frame, generation))
        .catch((error) => console.error("could not handle a frame", frame.type, error));
    };
    socket.onclose = (event) => {
      if (socket !== this.socket) return;
      const wasOpen = this.opened;
      this.socket = null;
      this.opened = false;
      this.frames = this.frames.then(() => this.closed(event, wasOpen, generation));
    };
  }

  /** session_start has been handled: the session is live on this socket. */
  started() {
    this.opened = true;
    this.attempt = 0;
    this.show("online", "Connected");
  }

  /** Close on purpose (a session switch, or the pairing card): no reconnect follows. */
  close() {
    this.halted = "";
    clearTimeout(this.reconnectTimer);
    clearInterval(this.countdown);
    const socket = this.socket;
    this.socket = null;
    this.opened = false;
    this.attempt = 0;
    if (socket) {
      socket.onclose = null;
      socket.onmessage = null;
      socket.onerror = null;
      socket.close(1000);
    }
  }

  /**
   * The server refused this socket for a reason a reconnect cannot cure (no model set up):
   * when it closes, wait for reconnectNow() (a "Try again") instead. `why` is the indicator's.
   */
  halt(why) {
    this.halted = why;
  }

  /** Reconnect at once, if signed in and not connected (back online, tab shown again, Try again). */
  reconnectNow() {
    if (this.socket || !state.signedIn) return;
    this.halted = "";
    this.attempt = 0;
    this.open();
  }

  deliver(frame, generation) {
    // A frame of a session this page has left, or not an object: nothing to do.
    if (generation !== state.generation || !frame || typeof frame !== "object") return undefined;
    return this.hooks.frame(frame, generation);
  }

  async closed(event, wasOpen, generation) {
    if (generation !== state.generation) return;
    this.hooks.dropped();
    if (event.code === CLOSE_TOKEN_REVOKED) {
      this.hooks.revoked();
      return;
    }
    if (this.halted) {
      clearTimeout(this.reconnectTimer);
      this.show("offline", this.halted);
      return;
    }
    if (event.code === CLOSE_SERVICE_RESTART) {
      this.show("connecting", "Server restarting: reconnecting…");
      this.attempt = 0;
      this.open();
      return;
    }
    this.show("offline", "Disconnected");
    if (!wasOpen && (await this.hooks.tokenRefused())) return;
    if (generation !== state.generation) return;
    this.scheduleReconnect();
  }

  scheduleReconnect() {
    clearTimeout(this.reconnectTimer);
    clearInterval(this.countdown);
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    this.attempt += 1;
    const until = Date.now() + delay;
    const tick = () => {
      const left = Math.ceil((until - Date.now()) / 1000);
      if (!this.socket) this.show("offline", left > 0 ? `Reconnecting in ${left} s…` : "Reconnecting…");
    };
    tick();
    this.countdown = setInterval(tick, 1000);
    this.reconnectTimer = setTimeout(() => {
      clearInterval(this.countdown);
      this.open();
    }, delay);
  }

  /** The indicator in the top bar: connecting, online or offline, in words. */
  show(kind, text) {
    this.indicator.dataset.state = kind;
    this.indicatorText.textContent = text;
  }
}
