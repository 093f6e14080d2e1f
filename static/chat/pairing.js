// Signing in and out: /health says whether this gateway asks for pairing; the card trades a
// 6-digit code, or an account's username and password, for a token (api.js keeps it in
// localStorage, and this module is the only one that sets or clears it); the sidebar's foot
// says who is signed in and signs out; a refused or revoked token brings the card back.

import { ApiError, AuthError, api, tokenStore } from "./api.js";
import { state } from "./state.js";
import { $ } from "./util.js";

const REFUSED_TOKEN =
  "The gateway no longer accepts this browser's token (it was revoked, or the server was reset). " +
  "Enter a new pairing code, or sign in, to continue.";
const REVOKED_TOKEN = "This browser's token was revoked. Enter a new pairing code, or sign in, to continue.";
const NOT_PAIRED = "Pair this browser to start chatting.";
const SIGNED_OUT = "You are signed out: this browser's token no longer works.";

/** A wait in words: "40 s", "5 min". */
function waitText(seconds) {
  const s = Math.max(1, Math.ceil(Number(seconds) || 0));
  return s < 90 ? `${s} s` : `${Math.ceil(s / 60)} min`;
}

/** Why /pair or /login said no, in plain words; `wrong(error)` words the refusal of what was typed. */
function refusalText(error, wrong) {
  if (error instanceof ApiError && error.status === 429) {
    const wait = error.data?.retry_after;
    return `Too many wrong codes or passwords from this browser. Try again ${wait ? `in ${waitText(wait)}` : "later"}.`;
  }
  if (error instanceof ApiError && error.status === 0) {
    return "The gateway did not answer: check your connection, then try again.";
  }
  return wrong(error) || error.message;
}

export class Pairing {
  /**
   * `hooks`: signedIn() once the app shows; signedOut() just before the card replaces it;
   * forget() after signing out on purpose, to drop what the page kept of that user.
   */
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
    this.loginForm = $("login-form");
    this.username = $("login-username");
    this.password = $("login-password");
    this.loginError = $("login-error");
    this.loginSubmit = $("login-submit");
    this.account = $("account");
    this.accountName = $("account-name");
    this.accountStaff = $("account-staff");
    this.accountError = $("account-error");
    this.signOutButton = $("sign-out");
    this.whoamiTicket = 0;
    this.code.addEventListener("input", () => {
      this.code.value = this.code.value.replace(/\D/g, "").slice(0, 6);
      this.error.textContent = "";
    });
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.pair();
    });
    for (const input of [this.username, this.password]) {
      input.addEventListener("input", () => (this.loginError.textContent = ""));
    }
    this.loginForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.signIn();
    });
    this.signOutButton.addEventListener("click", () => this.signOut());
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

  /** The card instead of the app, with an optional notice saying why. */
  show(notice = "") {
    state.signedIn = false;
    this.whoamiTicket += 1;
    this.boot.hidden = true;
    this.app.hidden = true;
    this.card.hidden = false;
    this.account.hidden = true;
    this.notice.textContent = notice;
    this.notice.hidden = !notice;
    this.error.textContent = "";
    this.loginError.textContent = "";
    this.accountError.textContent = "";
    this.code.value = "";
    this.password.value = "";
    this.submit.disabled = false;
    this.loginSubmit.disabled = false;
    this.code.focus();
  }

  /** The app instead of the start-up line or the card. */
  enter() {
    this.boot.hidden = true;
    this.card.hidden = true;
    this.app.hidden = false;
    state.signedIn = true;
    this.hooks.signedIn();
    this.whoami();
  }

  /** The gateway refused the token: forget it and ask for a new code. */
  refuse(message = REFUSED_TOKEN) {
    if (!this.card.hidden) return; // the card shows already: a late refusal says nothing new
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
      this.error.textContent = refusalText(error, (e) =>
        e.status === 403 ? "That code was not accepted. Codes work once and expire: get a fresh one." : "");
      this.submit.disabled = false;
      this.code.select();
    }
  }

  async signIn() {
    const username = this.username.value.trim();
    const password = this.password.value;
    if (!username || !password) {
      this.loginError.textContent = "Enter your username and your password.";
      (username ? this.password : this.username).focus();
      return;
    }
    this.loginSubmit.disabled = true;
    this.loginError.textContent = "";
    try {
      const token = await api.login(username, password);
      if (token) tokenStore.set(token);
      this.password.value = "";
      this.enter();
    } catch (error) {
      this.loginError.textContent = refusalText(error, (e) =>
        e.status === 401 ? "Wrong username or password." : "");
      this.loginSubmit.disabled = false;
      this.password.select();
    }
  }

  /** The sidebar's foot: who this token belongs to, a staff mark, and Sign out when there is a token. */
  async whoami() {
    const ticket = ++this.whoamiTicket;
    let me;
    try {
      me = await api.me();
    } catch (error) {
      if (ticket !== this.whoamiTicket) return;
      if (error instanceof AuthError) this.refuse();
      return; // no answer: the foot stays hidden until the next sign-in
    }
    if (ticket !== this.whoamiTicket || !state.signedIn) return;
    this.accountName.textContent = me.username;
    this.accountStaff.hidden = !me.is_staff;
    // With pairing off there is no device and no token: nothing to sign out of.
    this.signOutButton.hidden = !me.device;
    this.signOutButton.disabled = false;
    this.account.hidden = false;
  }

  /** Revoke this browser's token on the server, forget it here, and show the card. */
  async signOut() {
    this.signOutButton.disabled = true;
    this.accountError.textContent = "";
    // Leave the socket first: the revocation closes it, and that is no surprise to report.
    this.hooks.signedOut();
    try {
      await api.signOut();
    } catch (error) {
      if (!(error instanceof AuthError)) {
        // The token still works: stay signed in, and say why nothing happened.
        this.enter();
        this.signOutButton.disabled = false;
        this.accountError.textContent = `Could not sign out: ${error.message}. Try again.`;
        return;
      }
      // 401: the token was no longer valid anyway; signing out here is all that is left.
    }
    tokenStore.clear();
    this.hooks.forget();
    this.show(SIGNED_OUT);
  }
}
