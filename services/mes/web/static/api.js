// Talking to the MES API: the session (bearer token), errors in words, and who may do what.

const API = "/api/v1";
const KEY = "microfactory.session";

// The API's role checks, mirrored: an action is shown only to roles the API accepts it from.
// Roles are ranked (admin > manager > operator), as in services/mes/security.py.
export const RANK = { operator: 1, manager: 2, admin: 3 };
export const NEEDS = {
  "run.start": "operator",
  "run.pause": "operator",
  "run.resume": "operator",
  "run.complete": "operator",
  "scrap.record": "operator",
  "downtime.record": "operator",
  "downtime.reason": "operator",
  "material.consume": "operator",
  "batch.complete": "operator",
  "order.create": "manager",
  "order.edit": "manager",
  "order.release": "manager",
  "order.cancel": "manager",
  "batch.cancel": "manager",
};

export function getSession() {
  try {
    const s = JSON.parse(sessionStorage.getItem(KEY) || "null");
    if (s && s.expires > Date.now()) return s;
  } catch (_err) {
    /* a damaged entry is the same as none */
  }
  return null;
}

export function setSession(s) {
  if (s) sessionStorage.setItem(KEY, JSON.stringify(s));
  else sessionStorage.removeItem(KEY);
}

export function may(action) {
  const s = getSession();
  const needed = NEEDS[action];
  if (!s || !needed) return false;
  return (RANK[s.role] || 0) >= RANK[needed];
}

export class ApiError extends Error {
  constructor(status, body, words) {
    super(words);
    this.status = status;
    this.body = body;
  }
}

function fieldOf(loc) {
  return (loc || []).filter((p) => p !== "body" && p !== "query" && p !== "path").join(".");
}

/** An API error in the words an operator can act on. */
export function explain(status, body) {
  const detail = body && body.detail;
  let text = "";
  if (Array.isArray(detail)) {
    text = detail.map((d) => `${fieldOf(d.loc) || "input"}: ${d.msg}`).join("; ");
  } else if (typeof detail === "string") {
    text = detail;
  }
  switch (status) {
    case 0:
      return "The MES did not answer. Check the network or that the MES is running, then try again.";
    case 401:
      return `Not logged in or the session has expired: ${text || "log in again"}.`;
    case 403:
      return `Not allowed for your role: ${text}.`;
    case 404:
      return `Not found: ${text}.`;
    case 409: {
      const state = body && body.current_state;
      const named = state && !text.includes(state) ? ` (it is ${state})` : "";
      return `Not possible now: ${text}${named}.`;
    }
    case 422:
      return `Please check the input — ${text}.`;
    default:
      return `The MES could not do this (HTTP ${status})${text ? ": " + text : ""}.`;
  }
}

/** Call the API with the session's token; throws ApiError with a sentence on failure. */
export async function api(method, path, body, { raw = false } = {}) {
  const s = getSession();
  const headers = {};
  if (s) headers.Authorization = `Bearer ${s.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(API + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (_err) {
    throw new ApiError(0, null, explain(0, null));
  }
  if (res.ok) {
    if (raw) return res;
    return res.status === 204 ? null : res.json();
  }
  let data = null;
  try {
    data = await res.json();
  } catch (_err) {
    data = null;
  }
  if (res.status === 401 && s) {
    setSession(null);
    window.dispatchEvent(new CustomEvent("mf:logout", { detail: explain(401, data) }));
  }
  throw new ApiError(res.status, data, explain(res.status, data));
}

/** Every item of a paginated list (bounded, so a huge table never freezes a tablet). */
export async function all(path, params = {}, max = 5000) {
  const items = [];
  for (;;) {
    const q = new URLSearchParams({ ...params, limit: "1000", offset: String(items.length) });
    const page = await api("GET", `${path}?${q}`);
    items.push(...page.items);
    if (items.length >= page.total || items.length >= max || page.items.length === 0) return items;
  }
}

export async function login(username, password) {
  let res;
  try {
    res = await fetch(`${API}/auth/token`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username, password }),
    });
  } catch (_err) {
    throw new ApiError(0, null, explain(0, null));
  }
  const data = await res.json().catch(() => null);
  if (!res.ok) {
    const words = res.status === 401 ? "Wrong username or password." : explain(res.status, data);
    throw new ApiError(res.status, data, words);
  }
  const session = {
    token: data.access_token,
    role: data.role,
    username,
    expires: Date.now() + (data.expires_in - 30) * 1000,
  };
  setSession(session);
  return session;
}

/**
 * Follow the live tile stream (server-sent events read through fetch, so the bearer token
 * goes in a header rather than the URL). Reconnects by itself until stop() is called.
 */
export function followMachines(onMachines, onStatus) {
  let controller = null;
  let stopped = false;
  let timer = null;

  async function connect() {
    if (stopped) return;
    const s = getSession();
    if (!s) return;
    controller = new AbortController();
    try {
      const res = await fetch(`${API}/live/machines/stream`, {
        headers: { Authorization: `Bearer ${s.token}`, Accept: "text/event-stream" },
        signal: controller.signal,
        cache: "no-store",
      });
      if (res.status === 401) {
        setSession(null);
        window.dispatchEvent(new CustomEvent("mf:logout", { detail: explain(401, null) }));
        return;
      }
      if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
      onStatus("on");
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let event = "message";
          const data = [];
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) event = line.slice(6).trim();
            else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
          }
          if (event === "machines" && data.length) onMachines(JSON.parse(data.join("\n")).machines);
        }
      }
    } catch (_err) {
      if (stopped) return;
    }
    if (!stopped) {
      onStatus("reconnecting");
      timer = setTimeout(connect, 1000);
    }
  }

  connect();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      if (controller) controller.abort();
      onStatus("off");
    },
  };
}
