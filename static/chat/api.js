// The gateway's HTTP side: pairing, signing in and out, health, and the REST API with the
// stored token.

const TOKEN_KEY = "construct.token";

/** The gateway refused the token (REST 401): the browser must pair again. */
export class AuthError extends Error {}

/** Any other failed request; `status` is the HTTP status (0: no answer). */
export class ApiError extends Error {
  constructor(status, message, data = null) {
    super(message);
    this.status = status;
    this.data = data;
  }
}

export const tokenStore = {
  get() {
    try {
      return localStorage.getItem(TOKEN_KEY) || "";
    } catch {
      return "";
    }
  },
  set(token) {
    localStorage.setItem(TOKEN_KEY, token);
  },
  clear() {
    localStorage.removeItem(TOKEN_KEY);
  },
};

async function readJson(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

async function request(method, path, body) {
  const headers = { Accept: "application/json" };
  const token = tokenStore.get();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch (error) {
    throw new ApiError(0, `The gateway did not answer (${error.message})`);
  }
  if (response.status === 401) {
    const data = await readJson(response);
    throw new AuthError((data && data.error) || "The gateway refused this browser's token");
  }
  if (response.status === 204) return null;
  const data = await readJson(response);
  if (!response.ok) {
    throw new ApiError(response.status, (data && data.error) || `HTTP ${response.status}`, data);
  }
  return data;
}

/** A same-origin path for a pagination link (DRF makes them absolute). */
function localPath(url) {
  const parsed = new URL(url, location.href);
  return parsed.pathname + parsed.search;
}

const sessionPath = (id) => `/api/sessions/${encodeURIComponent(id)}/`;

export const api = {
  health: () => request("GET", "/health"),

  /** Trade a 6-digit code for a token. Resolves to the token (null when pairing is off). */
  pair: (code) => tokenFor("/pair", { "X-Pairing-Code": code }),

  /** Trade a username and password for a token (POST /login); a wrong one is an ApiError 401. */
  login: (username, password) =>
    tokenFor("/login", { "Content-Type": "application/json" }, JSON.stringify({ username, password })),

  /** Who the token belongs to: {username, is_staff, device: {id, name} | null, require_pairing}. */
  me: () => request("GET", "/api/me/"),

  /** Revoke this browser's token on the server (its sockets close). */
  signOut: () => request("POST", "/api/sign-out/"),

  sessions({ search = "", next = null, pageSize = 50 } = {}) {
    if (next) return request("GET", localPath(next));
    const query = new URLSearchParams({ page_size: String(pageSize) });
    if (search) query.set("search", search);
    return request("GET", `/api/sessions/?${query}`);
  },
  /** The models a chat may use: {models: [{id, label, provider, thinking}], default, reasoning_default}. */
  models: () => request("GET", "/api/models/"),
  /** The last operator events this user may see, oldest first: {events: [{id, created_at, session_id, event}]}. */
  operatorEvents: () => request("GET", "/api/channel-events/"),

  session: (id) => request("GET", sessionPath(id)),
  rename: (id, name) => request("PATCH", sessionPath(id), { name }),
  remove: (id) => request("DELETE", sessionPath(id)),
  messages: (id) => request("GET", `${sessionPath(id)}messages/`),

  /** The approvals still waiting in the caller's sessions: [{id, session_id, name, args, ...}]. */
  pendingApprovals: () => approvals({ state: "pending" }),
  /** One session's approvals, newest first (decision, by, decided_args once answered). */
  sessionApprovals: (sessionId) => approvals({ session_id: sessionId }),
  /** Answer an approval: {decision: "approve" | "deny" | "always", args?}. */
  decideApproval: (id, body) => request("POST", `/api/approvals/${encodeURIComponent(id)}/`, body),
  removeAttachment: (id, attachmentId) =>
    request("DELETE", `${sessionPath(id)}attachments/${encodeURIComponent(attachmentId)}/`),

  /**
   * An attachment's bytes as a Blob of `type`. The download needs the token, so the page
   * fetches it and shows it from memory; the gateway never serves it to be rendered.
   */
  async attachmentBlob(id, attachmentId, type) {
    const token = tokenStore.get();
    let response;
    try {
      response = await fetch(`${sessionPath(id)}attachments/${encodeURIComponent(attachmentId)}/`, {
        headers: token ? { Authorization: `Bearer ${token}` } : {},
        cache: "no-store",
        credentials: "omit",
      });
    } catch (error) {
      throw new ApiError(0, `The gateway did not answer (${error.message})`);
    }
    if (response.status === 401) throw new AuthError("The gateway refused this browser's token");
    if (!response.ok) throw new ApiError(response.status, `HTTP ${response.status}`);
    return new Blob([await response.arrayBuffer()], { type: type || "application/octet-stream" });
  },

  /**
   * Upload a file into a session (made if new) with XMLHttpRequest, whose upload reports
   * progress (fetch does not): onProgress(loaded, total). Returns {done, abort}; `done`
   * resolves to {id, name, mime, size} or rejects with an ApiError (status 0 when aborted).
   */
  uploadAttachment(id, file, onProgress) {
    const xhr = new XMLHttpRequest();
    const done = new Promise((resolve, reject) => {
      xhr.open("POST", `${sessionPath(id)}attachments/`);
      const token = tokenStore.get();
      if (token) xhr.setRequestHeader("Authorization", `Bearer ${token}`);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.responseType = "json";
      xhr.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable) onProgress(event.loaded, event.total);
      });
      xhr.addEventListener("load", () => {
        const data = xhr.response && typeof xhr.response === "object" ? xhr.response : null;
        if (xhr.status === 201 && data) resolve(data);
        else if (xhr.status === 401) reject(new AuthError((data && data.error) || "The gateway refused this browser's token"));
        else reject(new ApiError(xhr.status, (data && data.error) || `HTTP ${xhr.status}`, data));
      });
      xhr.addEventListener("error", () => reject(new ApiError(0, "The gateway did not answer")));
      xhr.addEventListener("abort", () => reject(new ApiError(0, "Upload cancelled")));
      const form = new FormData();
      form.append("file", file, file.name || "pasted");
      xhr.send(form);
    });
    return { done, abort: () => xhr.abort() };
  },
};

/** The first 200 approvals that match `filters` (GET /api/approvals/, paginated). */
async function approvals(filters) {
  const data = await request("GET", `/api/approvals/?${new URLSearchParams({ ...filters, page_size: "200" })}`);
  return Array.isArray(data) ? data : (data && data.results) || [];
}

/** POST for a token, as /pair and /login answer: {"token"} or {"error", "retry_after"?}. */
async function tokenFor(path, headers, body = undefined) {
  let response;
  try {
    response = await fetch(path, {
      method: "POST",
      headers: { ...headers, "X-Device-Name": deviceName() },
      body,
      cache: "no-store",
      credentials: "omit",
    });
  } catch (error) {
    throw new ApiError(0, `The gateway did not answer (${error.message})`);
  }
  const data = (await readJson(response)) || {};
  if (response.ok) return data.token ?? null;
  throw new ApiError(response.status, data.error || `HTTP ${response.status}`, data);
}

function deviceName() {
  const agent = navigator.userAgentData?.platform || navigator.platform || "browser";
  return `Browser (${agent})`.slice(0, 100);
}
