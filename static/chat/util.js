// Small helpers that know nothing of the page's state: finding an element, making an id.

/** The element with this id (every feature looks up the ids it owns). */
export const $ = (id) => document.getElementById(id);

/** A random UUID (v4): new session ids and each message's client_id. */
export function uuid4() {
  if (crypto.randomUUID) return crypto.randomUUID();
  // Plain http on a LAN address is not a secure context: no randomUUID there.
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** `table[key]` when the table itself has that key (a frame type is never an Object method). */
export function own(table, key) {
  return Object.hasOwn(table, key) ? table[key] : undefined;
}
