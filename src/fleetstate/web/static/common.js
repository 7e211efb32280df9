// Helpers shared by the web app's pages. Whatever comes from the API is inserted as text (text
// nodes, textContent, attribute values), never parsed as HTML: a device named "<script>" is text.

export const app = document.getElementById("app");
export const slug = app.dataset.slug;

export class ApiError extends Error {
  constructor(status, body) {
    const error = body && body.error;
    super(error ? error.message : `request failed with status ${status}`);
    this.status = status;
    this.details = error ? error.details : null;
  }
}

// The session cookie authenticates these calls. The CSRF header is what the server requires of
// cookie-authenticated writes: a form on another site cannot send it.
export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json", "X-Fleetstate-CSRF": "1" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) {
    const next = encodeURIComponent(location.pathname + location.search);
    location.assign(`/signin?next=${next}`);
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// Every item of a paginated list, following `next_cursor` (at most `maxPages` pages).
export async function allItems(path, maxPages = 20) {
  const items = [];
  let cursor = null;
  for (let n = 0; n < maxPages; n += 1) {
    const sep = path.includes("?") ? "&" : "?";
    const page = await api(`${path}${sep}limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    items.push(...page.items);
    cursor = page.next_cursor;
    if (!cursor) break;
  }
  return items;
}

// el("td", { class: "x" }, "text", child): strings become text nodes.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

const COLOURS = {
  ACCEPTED: "green", SUCCESS: "green", online: "green",
  IN_PROGRESS: "blue", SENT: "blue", ACKNOWLEDGED: "blue",
  PENDING: "amber",
  REJECTED: "red", FAILED: "red", TIMEOUT: "red",
};

export function badge(status) {
  return el("span", { class: `badge ${COLOURS[status] || ""}`, dataset: { status } }, status);
}

export function setBadge(node, status) {
  node.className = `badge ${COLOURS[status] || ""}`;
  node.dataset.status = status;
  node.textContent = status;
}

export function presenceBadge(online) {
  const word = online ? "online" : "offline";
  return el("span", { class: `badge dot ${COLOURS[word] || ""}`, dataset: { status: word } }, word);
}

export function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  const sameDay = date.toDateString() === new Date().toDateString();
  const time = date.toLocaleTimeString([], { hour12: false });
  return sameDay ? time : `${date.toLocaleDateString()} ${time}`;
}

export function ago(iso) {
  if (!iso) return "never";
  const seconds = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  if (seconds < 45) return "just now";
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

export function timeEl(iso) {
  return el("time", { datetime: iso, title: iso }, when(iso));
}

export function shortHash(hash) {
  if (!hash) return "—";
  const [algo, hex] = hash.includes(":") ? hash.split(":", 2) : ["", hash];
  return `${algo ? `${algo}:` : ""}${hex.slice(0, 12)}…`;
}

export function deviceUrl(id) {
  return `/${slug}/devices/${encodeURIComponent(id)}`;
}

export function showError(error) {
  let box = document.getElementById("page-error");
  if (!box) {
    box = el("p", { class: "alert", id: "page-error", role: "alert" });
    app.prepend(box);
  }
  box.textContent = error instanceof Error ? error.message : String(error);
}

// Server-sent events of the organization. The browser reconnects by itself; events missed while
// disconnected (or dropped because we were too slow: `lagged`) are made good by `resync`.
export function live(handlers, resync) {
  const indicator = document.getElementById("live");
  const types = Object.keys(handlers);
  const source = new EventSource(`/api/v1/events?types=${types.join(",")}`);
  let opened = false;
  source.addEventListener("open", () => {
    indicator.textContent = "live";
    indicator.classList.add("on");
    // The first load may have raced the subscription: load once more now that nothing is missed.
    resync(opened ? "reconnected" : "subscribed");
    opened = true;
  });
  source.addEventListener("error", () => {
    indicator.textContent = source.readyState === EventSource.CLOSED ? "offline" : "reconnecting";
    indicator.classList.remove("on");
  });
  for (const type of types) {
    source.addEventListener(type, (event) => handlers[type](JSON.parse(event.data)));
  }
  source.addEventListener("lagged", () => resync("lagged"));
  return source;
}

// Requests race (an event's GET against a resync's list): every answer carries the sequence
// number of its request, and shown data is only ever replaced by that of a later request.
let issued = 0;
export function nextSeq() {
  issued += 1;
  return issued;
}

// `load` wrapped so that an answer older than one already used resolves to undefined.
export function newestOnly(load) {
  let used = 0;
  return async (...args) => {
    const seq = nextSeq();
    const value = await load(...args);
    if (seq < used) return undefined;
    used = seq;
    return value;
  };
}

// Run `fn` `ms` after the first of a burst of calls: at most once per `ms`, however long the
// burst lasts, and always once after its last call.
export function throttle(fn, ms) {
  let timer = null;
  return () => {
    if (timer !== null) return;
    timer = setTimeout(() => {
      timer = null;
      fn();
    }, ms);
  };
}

// Run `fn` once calls have stopped for `ms` (typing in a search box).
export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}
