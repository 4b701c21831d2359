// livenotify web page: the live feed, the events to follow, a publish form.
//
// Plain ES module, no build step, no framework. Everything the server sends
// is rendered with textContent (never innerHTML): a notification is data,
// never markup. The page talks to the host it was served from, or to
// ?server=host:port (for development against another server).

const MAX_FEED = 500; // notifications kept on screen; older ones are dropped
const BACKOFF_FIRST_MS = 500; // first reconnect delay
const BACKOFF_MAX_MS = 10000; // reconnect delay cap
// Fields the server adds; shown in the item's header, not in its body.
const META_FIELDS = new Set(["type", "id", "timestamp", "offset", "epoch"]);
// Message types of the protocol itself (never notifications).
const CONTROL_TYPES = new Set([
  "welcome", "registered", "subscribed", "unsubscribed", "published", "dropped",
  "goodbye", "error", "events", "subscriptions", "pong", "ping",
]);

const $ = (id) => document.getElementById(id);
const ui = {
  state: $("state"),
  target: $("target"),
  position: $("position"),
  events: $("events"),
  feed: $("feed"),
  empty: $("empty"),
  count: $("count"),
  notice: $("notice"),
  clear: $("clear"),
  form: $("publish"),
  pubEvent: $("pub-event"),
  pubBody: $("pub-body"),
  pubToken: $("pub-token"),
  pubResult: $("pub-result"),
};

// host[:port] or [v6]:port; anything else in ?server= is ignored.
const HOST_RE = /^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;

function serverTarget() {
  const wanted = new URLSearchParams(location.search).get("server");
  return wanted && HOST_RE.test(wanted) ? wanted : location.host;
}

const target = serverTarget();
const secure = location.protocol === "https:";
const wsBase = `${secure ? "wss" : "ws"}://${target}/`;
const httpBase = `${secure ? "https" : "http"}://${target}`;

const state = {
  catalog: [],
  following: null, // null: everything ("*"); otherwise a Set of event names
  position: null, // {epoch, offset} of the last notification seen
  ws: null,
  wasLive: false, // a welcome came before: later ones are reconnections
  leavingAll: false, // "unsubscribe *" sent, its reply not yet seen
  urlFollowing: null, // what the current socket's URL asked to follow
  attempt: 0, // consecutive failed connections, for the backoff
  retryAt: 0,
  retryTimer: 0,
  tickTimer: 0,
  violations: 0,
};

// ---- connection ---------------------------------------------------------

function socketUrl() {
  const params = new URLSearchParams();
  // "*" spelled out: the same on the server as no parameter, and explicit
  // next to a since=.
  params.set("events", state.following === null ? "*" : [...state.following].join(","));
  // What the server will start this connection on ("events=" alone is "*").
  state.urlFollowing = state.following === null || state.following.size === 0
    ? null : new Set(state.following);
  if (state.position) params.set("since", `${state.position.epoch}:${state.position.offset}`);
  const query = params.toString();
  return query ? `${wsBase}?${query}` : wsBase;
}

function connect() {
  clearTimeout(state.retryTimer);
  clearInterval(state.tickTimer);
  setState("connecting", state.attempt ? "reconnecting…" : "connecting…");
  let ws;
  try {
    ws = new WebSocket(socketUrl());
  } catch (err) {
    showNotice(`cannot connect: ${err.message}`, "error");
    scheduleReconnect();
    return;
  }
  state.ws = ws;
  state.leavingAll = false;
  ws.addEventListener("message", (ev) => onMessage(ws, ev.data));
  ws.addEventListener("close", () => {
    if (state.ws !== ws) return;
    state.ws = null;
    scheduleReconnect();
  });
}

function scheduleReconnect() {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** state.attempt);
  const delay = base / 2 + Math.random() * (base / 2); // jitter: clients don't return in step
  state.attempt += 1;
  state.retryAt = Date.now() + delay;
  state.retryTimer = setTimeout(connect, delay);
  const tick = () => {
    const left = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
    setState("reconnecting", `reconnecting in ${left}s`);
  };
  tick();
  clearInterval(state.tickTimer);
  state.tickTimer = setInterval(tick, 250);
}

function reconnectNow() {
  if (state.ws) return;
  connect();
}

function send(obj) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(obj));
}

function setState(name, text) {
  ui.state.dataset.state = name;
  ui.state.textContent = text;
}

// ---- messages -------------------------------------------------------------

function onMessage(ws, raw) {
  if (state.ws !== ws) return;
  let msg;
  try {
    msg = JSON.parse(raw);
  } catch {
    return; // the server only sends JSON; ignore anything else
  }
  if (msg === null || typeof msg !== "object" || typeof msg.type !== "string") return;
  switch (msg.type) {
    case "welcome":
      onWelcome(msg);
      break;
    case "subscribed":
      if ("recovered" in msg) onResumed(msg);
      // Leaving "*" is two steps; the first reply still holds "*".
      if (!(state.leavingAll && Array.isArray(msg.events) && msg.events.includes("*"))) {
        syncFollowing(msg.events);
      }
      break;
    case "unsubscribed":
      state.leavingAll = false;
      syncFollowing(msg.events);
      break;
    case "events":
      if (Array.isArray(msg.events)) setCatalog(msg.events);
      break;
    case "dropped":
      showNotice(`${msg.count} notifications were dropped: this page fell behind`, "warn");
      break;
    case "goodbye":
      showNotice(`the server closed the connection (${msg.reason})`, "warn");
      break;
    case "error":
      showNotice(`server error ${msg.code}: ${msg.message}`, "error");
      break;
    default:
      if (!CONTROL_TYPES.has(msg.type)) onNotification(msg);
  }
}

function onWelcome(msg) {
  state.attempt = 0;
  clearInterval(state.tickTimer);
  setCatalog(Array.isArray(msg.events) ? msg.events : []);
  // A first connection remembers the head, so that a reconnect before any
  // notification arrives still resumes from here.
  if (!state.position) {
    const head = parsePosition(msg.position);
    if (head) setPosition(head);
  }
  if (state.wasLive && !("position" in msg)) {
    // A server without positions (v1) cannot replay: say so.
    showNotice("reconnected: notifications published while disconnected were not received", "warn");
  }
  state.wasLive = true;
  // Boxes ticked while connecting, or "events=" with no name (which the
  // server takes as "*"): bring the server in line with the page.
  reconcile(state.urlFollowing);
  setState("live", "live");
}

function onResumed(msg) {
  const replayed = Number(msg.replayed) || 0;
  if (msg.recovered) {
    const s = replayed === 1 ? "" : "s";
    showNotice(`caught up: ${replayed} missed notification${s}`, "ok");
  } else {
    showNotice("some notifications may be missing: the server could not replay all of them", "warn");
    // The old position cannot be resumed from again; continue from the head.
    const head = parsePosition(msg.position);
    if (head) setPosition(head);
  }
}

function onNotification(msg) {
  if (state.following !== null && !state.following.has(msg.type)) return;
  if (typeof msg.offset === "number" && typeof msg.epoch === "string") {
    const p = state.position;
    // A replay racing a live delivery never shows an item twice.
    if (p && p.epoch === msg.epoch && msg.offset <= p.offset) return;
    setPosition({ epoch: msg.epoch, offset: msg.offset });
  }
  addToFeed(msg);
}

function parsePosition(text) {
  if (typeof text !== "string") return null;
  const i = text.lastIndexOf(":");
  const offset = Number(text.slice(i + 1));
  if (i <= 0 || !Number.isInteger(offset)) return null;
  return { epoch: text.slice(0, i), offset };
}

function setPosition(p) {
  state.position = p;
  ui.position.textContent = `${p.epoch}:${p.offset}`;
}

// ---- the feed -------------------------------------------------------------

function addToFeed(msg) {
  const item = el("li", "item");
  item.dataset.event = msg.type;
  const head = el("div", "item-head");
  head.append(el("span", "event", msg.type));
  const when = el("time", "time", formatTime(msg.timestamp));
  if (typeof msg.timestamp === "string") {
    when.dateTime = msg.timestamp;
    when.title = msg.timestamp;
  }
  head.append(when);
  if (typeof msg.offset === "number") head.append(el("span", "offset", `#${msg.offset}`));
  if (typeof msg.id === "string") head.append(el("span", "id", msg.id));
  const fields = {};
  for (const [key, value] of Object.entries(msg)) {
    if (!META_FIELDS.has(key)) fields[key] = value;
  }
  item.append(head, el("pre", "fields", JSON.stringify(fields, null, 2)));
  ui.feed.prepend(item);
  while (ui.feed.childElementCount > MAX_FEED) ui.feed.lastElementChild.remove();
  updateCount();
}

function updateCount() {
  const n = ui.feed.childElementCount;
  ui.count.textContent = `${n} notification${n === 1 ? "" : "s"}`;
  ui.empty.hidden = n > 0;
}

function formatTime(ts) {
  const d = typeof ts === "string" ? new Date(ts) : new Date();
  if (Number.isNaN(d.getTime())) return String(ts);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function showNotice(text, kind) {
  ui.notice.textContent = text;
  ui.notice.dataset.kind = kind;
  ui.notice.hidden = false;
}

// ---- following events ---------------------------------------------------

function setCatalog(events) {
  const names = events.filter((e) => typeof e === "string" && e !== "*");
  if (names.join("\n") === state.catalog.join("\n")) {
    renderChecks();
    return;
  }
  state.catalog = names;
  const chosen = ui.pubEvent.value;
  ui.pubEvent.replaceChildren(...names.map((name) => {
    const option = el("option", "", name);
    option.value = name;
    return option;
  }));
  if (names.includes(chosen)) ui.pubEvent.value = chosen;
  renderChecks();
}

function renderChecks() {
  const legend = ui.events.querySelector("legend");
  const rows = state.catalog.map((name) => {
    const label = el("label", "check");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = name;
    box.checked = state.following === null || state.following.has(name);
    box.addEventListener("change", () => onToggle(name, box.checked));
    label.append(box, el("span", "", name));
    return label;
  });
  ui.events.replaceChildren(legend, ...rows);
}

function onToggle(name, checked) {
  const had = state.following === null ? null : new Set(state.following);
  if (checked) {
    if (state.following === null) return;
    state.following.add(name);
  } else if (state.following === null) {
    state.following = new Set(state.catalog.filter((e) => e !== name));
  } else {
    state.following.delete(name);
  }
  // Not open yet: the welcome reconciles from what the URL asked for.
  if (state.ws && state.ws.readyState === WebSocket.OPEN) reconcile(had);
}

// Send what turns the server's subscriptions from `had` into the page's
// (null: "*"). Leaving "*" follows the others by name first, so nothing is
// missed in between.
function reconcile(had) {
  const want = state.following;
  if (want === null) {
    if (had !== null) send({ type: "subscribe", events: ["*"] });
    return;
  }
  if (had === null) {
    if (want.size) send({ type: "subscribe", events: [...want] });
    state.leavingAll = true;
    send({ type: "unsubscribe", events: ["*"] });
    return;
  }
  const add = [...want].filter((e) => !had.has(e));
  const drop = [...had].filter((e) => !want.has(e));
  if (add.length) send({ type: "subscribe", events: add });
  if (drop.length) send({ type: "unsubscribe", events: drop });
}

// The server's word on what this connection follows wins.
function syncFollowing(events) {
  if (!Array.isArray(events)) return;
  state.following = events.includes("*") ? null : new Set(events);
  renderChecks();
}

// ---- publishing -----------------------------------------------------------

async function onPublish(ev) {
  ev.preventDefault();
  const event = ui.pubEvent.value;
  if (!event) return;
  const text = ui.pubBody.value;
  const headers = { "Content-Type": isJsonObject(text) ? "application/json" : "text/plain; charset=utf-8" };
  const token = ui.pubToken.value.trim();
  if (token) headers.Authorization = `Bearer ${token}`;
  showResult("publishing…", "pending");
  let response;
  try {
    response = await fetch(`${httpBase}/publish/${encodeURIComponent(event)}`, {
      method: "POST", headers, body: text, cache: "no-store", credentials: "omit",
    });
  } catch (err) {
    showResult(`could not reach the server: ${err.message}`, "error");
    return;
  }
  const body = await response.text();
  let shown = body;
  try {
    shown = JSON.stringify(JSON.parse(body), null, 2);
  } catch {
    // not JSON: show it as it came
  }
  showResult(`${response.status} ${response.statusText}\n${shown}`, response.ok ? "ok" : "error");
}

function isJsonObject(text) {
  try {
    const value = JSON.parse(text);
    return value !== null && typeof value === "object" && !Array.isArray(value);
  } catch {
    return false;
  }
}

function showResult(text, kind) {
  ui.pubResult.textContent = text;
  ui.pubResult.dataset.kind = kind;
  ui.pubResult.hidden = false;
}

// ---- start ----------------------------------------------------------------

// A blocked request shows up on the page, not only in the console: it is
// what a wrong ?server= or a proxy on another host looks like.
document.addEventListener("securitypolicyviolation", (ev) => {
  state.violations += 1;
  document.body.dataset.cspViolations = String(state.violations);
  showNotice(`blocked by the Content-Security-Policy (${ev.effectiveDirective}): ${ev.blockedURI}`, "error");
});
ui.form.addEventListener("submit", onPublish);
ui.state.addEventListener("click", reconnectNow);
ui.clear.addEventListener("click", () => {
  ui.feed.replaceChildren();
  updateCount();
});
ui.target.textContent = target;
updateCount();
connect();
