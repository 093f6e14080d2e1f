// The banner above the messages: the latest error or warning, with its code, until dismissed.

import { $ } from "./util.js";

const banner = $("banner");
const codeEl = $("banner-code");
const textEl = $("banner-text");

export function showBanner(code, message, kind = "error") {
  codeEl.textContent = code || "";
  codeEl.hidden = !code;
  textEl.textContent = message || "";
  banner.dataset.kind = kind;
  banner.hidden = false;
}

export function hideBanner() {
  banner.hidden = true;
}

$("banner-close").addEventListener("click", hideBanner);
