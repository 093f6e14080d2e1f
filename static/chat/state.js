// What the page's features share: the open session, whether an answer is running, and a
// tiny emitter to hear when that changes. Each field names the module that writes it; the
// other modules only read it.

export const state = {
  requirePairing: true, // pairing.js, from /health
  signedIn: false, // pairing.js: the app shows (not the start-up line or the pairing card)
  sessionId: null, // main.js
  sessionName: "", // main.js
  generation: 0, // main.js: bumped on every session switch and sign-out, so late async work can tell it is stale
  activeTurn: null, // conversation.js: the TurnView of the turn running now, if any
  awaiting: null, // outbox.js: the message sent whose turn has not started yet
  busy: false, // setBusy below
  stopping: false, // setStopping and setBusy below
};

const listeners = new Map();

/** Call `listener` after every change of `name` ("busy": state.busy or state.stopping). */
export function on(name, listener) {
  if (!listeners.has(name)) listeners.set(name, []);
  listeners.get(name).push(listener);
}

function emit(name) {
  for (const listener of listeners.get(name) || []) listener(state);
}

/** A turn runs or a message waits for one: the composer offers Queue and Stop. */
export function setBusy(busy) {
  state.busy = busy;
  if (!busy) state.stopping = false;
  emit("busy");
}

/** A stop was asked for (the Stop button waits for the answer), or the server said none ran. */
export function setStopping(stopping) {
  state.stopping = stopping;
  emit("busy");
}
