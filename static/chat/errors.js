// Errors in plain language: a server error's code and raw text made into a short sentence
// a person can act on. The code and the raw text stay available (the banner's "Details").

/** Sentences by error code; a function gets the raw message. */
const PLAIN = {
  PROVIDER_ERROR: providerError,
  AUTH_ERROR: () => "The model's provider refused the gateway's API key. Ask the operator to check it.",
  // The server's text says what to set: it is part of the sentence, not hidden under Details.
  AGENT_INIT_FAILED: (raw) =>
    `No working model is set up on the server yet. ${raw.replace(/^Failed to initialise agent:\s*/i, "")}`.trim(),
  AGENT_ERROR: () => "Something went wrong while answering. Try again.",
  MESSAGE_TOO_LARGE: () => "This message is too large to send. Shorten it, or attach the text as a file.",
  RATE_LIMITED: () => "You are sending messages faster than allowed. It goes again in a moment.",
  SESSION_BUSY: () => "This chat is still busy with another answer. Your message waits and goes again shortly.",
  BUDGET_EXCEEDED: () => "The spending limit is reached: no new answers until it resets or the operator raises it.",
  EMPTY_CONTENT: () => "There is nothing to send: type a message first.",
  INVALID_JSON: () => "The page sent something the server could not read. Reload the page.",
  BAD_FRAME: () => "The page sent something the server could not read. Reload the page.",
  UNKNOWN_MESSAGE_TYPE: () => "The page and the server do not match (an old page?). Reload the page.",
  MODEL_NOT_FOUND: () => "That model is not available any more: choose another one.",
  MESSAGE_NOT_FOUND: () => "That message does not exist any more. Reload the page.",
  APPROVAL_INVALID: () => "This approval can no longer be answered.",
};

function providerError(raw) {
  const silent = /sent nothing for ([\d.]+ seconds?)/i.exec(raw);
  if (silent) return `The model did not answer within ${silent[1]}. Try again, or try another model.`;
  if (/HTTP 429|rate.?limit|overloaded/i.test(raw)) {
    return "The model's provider is busy or limiting requests right now. Try again in a moment.";
  }
  if (/HTTP 5\d\d/.test(raw)) return "The model's provider had a problem on its side. Try again.";
  if (/peer closed|broke off|incomplete|RemoteProtocolError|ReadError|reset/i.test(raw)) {
    return "The connection to the model broke off before the answer was complete. Try again.";
  }
  if (/unreachable|ConnectError|connection refused|timed? ?out|stalled/i.test(raw)) {
    return "The model could not be reached. Try again, or ask the operator to check the model's address.";
  }
  return "The model could not answer this time. Try again.";
}

/**
 * `{text, code, raw}` for an error frame's `code` and `message`: `text` is the sentence to
 * show. An unknown code, or none, keeps the server's own text.
 */
export function plainError(code, message) {
  const raw = typeof message === "string" ? message : "";
  const known = code && Object.prototype.hasOwnProperty.call(PLAIN, code) ? PLAIN[code] : null;
  return { text: known ? known(raw) : raw || "Something went wrong.", code: code || "", raw };
}
