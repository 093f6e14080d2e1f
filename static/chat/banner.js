// The banner above the messages: the latest error or warning in plain language, its code and
// the server's own text under "Details", and at most one action button, until dismissed.

import { plainError } from "./errors.js";
import { $ } from "./util.js";

const banner = $("banner");
const textEl = $("banner-text");
const details = $("banner-details");
const codeEl = $("banner-code");
const rawEl = $("banner-raw");
const actionEl = $("banner-action");
let action = null;

/**
 * Show `message`; with an error `code`, the plain sentence for it instead, and the code and
 * `message` under "Details". `options.action`: {label, run} for a button (run() on click).
 */
export function showBanner(code, message, kind = "error", { action: act = null } = {}) {
  const plain = plainError(code, message);
  textEl.textContent = code ? plain.text : message || "";
  codeEl.textContent = plain.code;
  rawEl.textContent = plain.raw;
  details.hidden = !code;
  details.open = false;
  action = act;
  actionEl.textContent = act ? act.label : "";
  actionEl.hidden = !act;
  banner.dataset.kind = kind;
  banner.dataset.code = plain.code;
  banner.hidden = false;
}

export function hideBanner() {
  banner.hidden = true;
  action = null;
}

$("banner-close").addEventListener("click", hideBanner);
actionEl.addEventListener("click", () => {
  const run = action && action.run;
  hideBanner();
  if (run) run();
});
