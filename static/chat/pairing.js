// Signing in: /health says whether this gateway asks for pairing; the pairing card trades a
// 6-digit code for a token (api.js keeps it in localStorage, and this module is the only one
// that sets or clears it); a refused or revoked token brings the card back.

import { ApiError, AuthError, api, tokenStore } from "./api.js";
import { state } from "./state.js";
import { $ } from "./util.js";

const REFUSED_TOKEN =
  "The gateway no longer accepts this browser's token (it was revoked, or the server was reset). " +
  "Enter a new pairing code to continue.";
const REVOKED_TOKEN = "This browser's token was revoked. Enter a new pairing code to continue.";
const NOT_PAIRED = "Pair this browser to start chatting.";

export class Pairing {
  /** `hooks`: signedIn() once the app shows; signedOut() just before the card replaces it. */
  constructor(hooks) {
    this.hooks = hooks;
    this.boot = $("boot");
    this.app = $("app");
    this.card = $("pairing");
    this.form = $("pairing-form");
    this.code = $("pairing-code");
    this.error = $("pairing-error");
    this.notice = $("pairing-notice");
    this.submit = $("pairing-submit");
    this.code.addEventListener("input", () => {
      this.code.value = this.code.value.replace(/\D/g, "").slice(0, 6);
      this.error.textContent = "";
    });
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.pair();
    });
  }

  /** Page load: ask /health, then show the app or the card (and retry while nobody answers). */
  async start() {
    let health;
    try {
      health = await api.health();
    } catch (error) {
      this.boot.textContent = `The gateway does not answer (${error.message}). Retrying…`;
      setTimeout(() => this.start(), 3000);
      return;
    }
    state.requirePairing = Boolean(health.require_pairing);
    if (state.requirePairing && !tokenStore.get()) this.show();
    else this.enter();
  }

  /** The pairing card instead of the app, with an optional notice saying why. */
  show(notice = "") {
    state.signedIn = false;
    this.boot.hidden = true;
    this.app.hidden = true;
    this.card.hidden = false;
    this.notice.textContent = notice;
    this.notice.hidden = !notice;
    this.error.textContent = "";
    this.code.value = "";
    this.submit.disabled = false;
    this.code.focus();
  }

  /** The app instead of the start-up line or the card. */
  enter() {
    this.boot.hidden = true;
    this.card.hidden = true;
    this.app.hidden = false;
    state.signedIn = true;
    this.hooks.signedIn();
  }

  /** The gateway refused the token: forget it and ask for a new code. */
  refuse(message = REFUSED_TOKEN) {
    tokenStore.clear();
    this.hooks.signedOut();
    this.show(message);
  }

  /** The socket closed with the "token revoked" code. */
  revoked() {
    this.refuse(REVOKED_TOKEN);
  }

  /**
   * After a socket that never opened. A refused upgrade looks like any failed connection
   * to a browser, so ask the REST API. True when the token was the reason (the card shows).
   */
  async tokenRefused() {
    if (!state.requirePairing) return false;
    if (!tokenStore.get()) {
      this.refuse(NOT_PAIRED);
      return true;
    }
    try {
      await api.sessions({ pageSize: 1 });
    } catch (error) {
      if (error instanceof AuthError) {
        this.refuse();
        return true;
      }
    }
    return false;
  }

  async pair() {
    const code = this.code.value.trim();
    if (!/^\d{6}$/.test(code)) {
      this.error.textContent = "The pairing code is 6 digits.";
      this.code.focus();
      return;
    }
    this.submit.disabled = true;
    this.error.textContent = "";
    try {
      const token = await api.pair(code);
      if (token) tokenStore.set(token);
      this.enter();
    } catch (error) {
      if (error instanceof ApiError && error.status === 429) {
        const wait = error.data?.retry_after;
        this.error.textContent = `Too many wrong codes from this browser. Try again${wait ? ` in ${wait} s` : " later"}.`;
      } else if (error instanceof ApiError && error.status === 403) {
        this.error.textContent = "That code was not accepted. Codes work once and expire: get a fresh one.";
      } else {
        this.error.textContent = error.message;
      }
      this.submit.disabled = false;
      this.code.select();
    }
  }
}
