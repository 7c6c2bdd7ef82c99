// The campaign room's live client: one WebSocket, the protocol of CONTRACTS §3.
//
// The server sends every event in seq order; this client remembers the last seq it has
// shown and says it in `client.hello` after every (re)connect, so nothing is missed or shown
// twice. Actions carry a client-made action_id and are resent with the same id until the
// server acks them (the server dedupes). Every piece of player or model text goes into the
// page through textContent, never as HTML.

const config = JSON.parse(document.getElementById("room-config").textContent);

const CLOSE_UNAUTHENTICATED = 4401;
const CLOSE_FORBIDDEN = 4403;
const PING_EVERY_MS = 25_000;
const BACKOFF_FIRST_MS = 1_000;
const BACKOFF_MAX_MS = 15_000;
const MAX_NOTICES = 4;
const STICK_TO_BOTTOM_PX = 48;

const feed = document.getElementById("feed");
const eventsList = document.getElementById("feed-events");
const streamsBox = document.getElementById("feed-streams");
const pendingList = document.getElementById("feed-pending");
const jumpButton = document.getElementById("jump-latest");
const statusBox = document.getElementById("room-status");
const noticesBox = document.getElementById("notices");
const onlineList = document.getElementById("online");
const onlineCount = document.getElementById("online-count");
const optionsBox = document.getElementById("options");
const composer = document.getElementById("composer");
const input = document.getElementById("action-text");
const charCount = document.getElementById("action-count");
const maxChars = Number(config.maxActionChars) || 2000;

// --- State ---------------------------------------------------------------------------------

let lastSeq = 0;
let socket = null;
let live = false;
let stopped = false; // closed for good (4401/4403): no more reconnects
let attempt = 0;
let reconnectTimer = null;
let countdownTimer = null;
let pingTimer = null;

/** user_id -> display name, learned from player_joined events and presence. */
const names = new Map([[config.userId, config.displayName]]);
/** action_id -> {text, state: "queued"|"sent"|"acked"|"failed", el} */
const pending = new Map();
/** turn_id -> {el, text} for narration still streaming. */
const streams = new Map();
/** Turns whose final narration (or failure) has arrived: late deltas are ignored. */
const finishedTurns = new Set();
/** Turns whose stream was cut by a reconnect: the deltas sent meanwhile are gone. */
const interruptedTurns = new Set();

// --- DOM helpers -----------------------------------------------------------------------------

/** el("p", {class: "x"}, "text", child): strings become text nodes, never HTML. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function asText(value) {
  return typeof value === "string" ? value : value === undefined || value === null ? "" : String(value);
}

function timeOf(isoString) {
  const when = new Date(isoString);
  if (Number.isNaN(when.getTime())) return null;
  return el("time", {
    class: "entry-time",
    datetime: isoString,
    title: when.toLocaleString(),
    text: when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }),
  });
}

function newActionId() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  // randomUUID exists only in secure contexts; getRandomValues works everywhere.
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// --- Scrolling: stay at the bottom unless the reader scrolled up -----------------------------

/** Whether the reader is at the bottom of the feed (updated only by their scrolling). */
let pinned = true;

function atBottom() {
  return feed.scrollHeight - feed.scrollTop - feed.clientHeight <= STICK_TO_BOTTOM_PX;
}

function scrollToBottom() {
  feed.scrollTop = feed.scrollHeight;
  pinned = true;
  jumpButton.hidden = true;
}

/** Run a change to the feed, keeping the view pinned to the bottom if it was there. */
function changeFeed(change) {
  const stick = pinned || atBottom();
  change();
  if (stick) scrollToBottom();
  else jumpButton.hidden = false;
}

feed.addEventListener("scroll", () => {
  pinned = atBottom();
  if (pinned) jumpButton.hidden = true;
});
// Notices, the options bar or a growing input box shrink the feed: stay at the bottom.
new ResizeObserver(() => {
  if (pinned) scrollToBottom();
}).observe(feed);
jumpButton.addEventListener("click", () => {
  scrollToBottom();
  feed.focus({ preventScroll: true });
});

// --- Connection status -------------------------------------------------------------------------

function setStatus(state, ...content) {
  statusBox.dataset.state = state;
  statusBox.replaceChildren(el("span", { class: "status-dot", "aria-hidden": "true" }), ...content);
}

function showReconnecting(delayMs) {
  const endsAt = Date.now() + delayMs;
  // The ticking seconds are hidden from screen readers: one announcement, not one a second.
  const text = el("span", { class: "status-text", "aria-hidden": "true" });
  const spoken = el("span", { class: "sr-only" }, "Connection lost. Reconnecting soon.");
  const now = el("button", { type: "button", class: "btn btn-ghost btn-small", onclick: reconnectNow }, "Retry now");
  const tick = () => {
    const seconds = Math.max(0, Math.ceil((endsAt - Date.now()) / 1000));
    text.textContent = `Reconnecting in ${seconds}s…`;
  };
  tick();
  setStatus("reconnecting", text, spoken, now);
  clearInterval(countdownTimer);
  countdownTimer = setInterval(tick, 1000);
}

function showClosed(code) {
  if (code === CLOSE_UNAUTHENTICATED) {
    const next = encodeURIComponent(location.pathname);
    setStatus(
      "closed",
      el("span", { class: "status-text" }, "Your session ended. "),
      el("a", { href: `/login/?next=${next}` }, "Log in again"),
    );
  } else {
    setStatus(
      "closed",
      el("span", { class: "status-text" }, "You are not a member of this campaign. "),
      el("a", { href: "/campaigns/" }, "My campaigns"),
    );
  }
}

// --- The socket --------------------------------------------------------------------------------

function connect() {
  clearTimeout(reconnectTimer);
  clearInterval(countdownTimer);
  live = false;
  setStatus("connecting", el("span", { class: "status-text" }, attempt ? "Reconnecting…" : "Connecting…"));
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}${config.wsPath}`);
  socket = ws;
  ws.addEventListener("open", () => {
    if (ws !== socket) return;
    ws.send(JSON.stringify({ type: "client.hello", last_seq: lastSeq }));
    clearInterval(pingTimer);
    pingTimer = setInterval(() => send({ type: "client.ping" }), PING_EVERY_MS);
  });
  ws.addEventListener("message", (message) => {
    if (ws !== socket) return;
    let data;
    try {
      data = JSON.parse(message.data);
    } catch {
      return;
    }
    if (data && typeof data === "object") handleMessage(data);
  });
  ws.addEventListener("close", (closeEvent) => {
    if (ws !== socket) return;
    onClosed(closeEvent.code);
  });
}

function onClosed(code) {
  socket = null;
  live = false;
  clearInterval(pingTimer);
  refreshPendingStates();
  dropStreams();
  onlineList.classList.add("stale"); // until the next presence message
  onlineList.setAttribute("aria-busy", "true");
  if (code === CLOSE_UNAUTHENTICATED || code === CLOSE_FORBIDDEN) {
    stopped = true;
    clearInterval(countdownTimer);
    showClosed(code);
    input.disabled = true;
    composer.querySelector("button[type=submit]").disabled = true;
    onlineList.replaceChildren(el("li", { class: "muted online-empty" }, "Not connected."));
    onlineCount.textContent = "–";
    for (const button of optionsBox.querySelectorAll("button")) button.disabled = true;
    return;
  }
  // Exponential backoff, 1 s doubling to 15 s, with jitter so a restarted server is not
  // hit by every client in the same second.
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** attempt);
  const delay = Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
  attempt += 1;
  showReconnecting(delay);
  reconnectTimer = setTimeout(connect, delay);
}

function reconnectNow() {
  if (stopped || socket) return;
  connect();
}

function send(message) {
  if (!socket || socket.readyState !== WebSocket.OPEN) return false;
  socket.send(JSON.stringify(message));
  return true;
}

// Coming back online or to the tab: do not wait out the backoff.
window.addEventListener("online", reconnectNow);
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") reconnectNow();
});

// --- Server messages ---------------------------------------------------------------------------

function handleMessage(data) {
  switch (data.type) {
    case "event":
      if (data.event && typeof data.event === "object") onEvent(data.event);
      break;
    case "server.ready":
      onReady(data);
      break;
    case "server.ack":
      onAck(data);
      break;
    case "narration.delta":
      onDelta(data);
      break;
    case "presence":
      renderPresence(Array.isArray(data.users) ? data.users : []);
      break;
    case "error":
      onError(data);
      break;
    default:
      break; // server.pong and anything newer than this client
  }
}

function onReady(data) {
  if (Number.isInteger(data.seq) && data.seq > lastSeq) lastSeq = data.seq;
  live = true;
  attempt = 0;
  setStatus("live", el("span", { class: "status-text" }, "Live"));
  // Actions the server has not acked yet go again, with the same action_id: the server
  // stores each action_id once, so a resend after a lost ack is harmless.
  for (const [actionId, action] of pending) {
    if (action.state === "queued" || action.state === "sent") transmit(actionId);
  }
}

function onEvent(event) {
  if (!Number.isInteger(event.seq) || event.seq <= lastSeq) return; // never show one twice
  lastSeq = event.seq;
  changeFeed(() => {
    const entry = renderEvent(event);
    if (entry) eventsList.append(entry);
    settleFromEvent(event);
  });
}

function onAck(data) {
  const action = pending.get(asText(data.action_id));
  if (!action) return; // its event already arrived
  action.state = "acked";
  updatePending(action);
}

function onDelta(data) {
  const turnId = asText(data.turn_id);
  const text = asText(data.text);
  if (!turnId || !text || finishedTurns.has(turnId)) return;
  changeFeed(() => {
    let stream = streams.get(turnId);
    if (!stream) {
      // After a reconnect the text streamed meanwhile is lost: say so instead of a cut.
      const body = el("p", { class: "entry-text" }, interruptedTurns.has(turnId) ? "… " : null);
      const node = el(
        "div",
        { class: "entry entry-dm entry-streaming", "aria-busy": "true" },
        el("div", { class: "entry-head" }, el("span", { class: "entry-who" }, "The DM is narrating…")),
        body,
      );
      stream = { el: node, body };
      streams.set(turnId, stream);
      streamsBox.append(node);
    }
    stream.body.append(document.createTextNode(text)); // only the new text arrives
  });
}

function onError(data) {
  const actionId = asText(data.action_id);
  const action = actionId ? pending.get(actionId) : undefined;
  const detail = asText(data.detail) || "Something went wrong.";
  if (action) {
    action.state = "failed";
    action.error = detail;
    updatePending(action);
  }
  notify(errorText(asText(data.code), detail));
}

function errorText(code, detail) {
  const known = {
    rate_limited: "Slow down a little:",
    too_large: "That message is too long:",
    budget_exceeded: "The campaign's budget is spent:",
    forbidden: "Not allowed:",
    invalid_message: "The server could not use that:",
  };
  return `${known[code] || "Error:"} ${detail}`;
}

function notify(text) {
  const notice = el(
    "div",
    { class: "notice", role: "alert" },
    el("p", {}, text),
    el("button", { type: "button", class: "btn btn-ghost", "aria-label": "Dismiss this notice" }, "Dismiss"),
  );
  notice.querySelector("button").addEventListener("click", () => {
    notice.remove();
    input.focus();
  });
  noticesBox.append(notice);
  while (noticesBox.children.length > MAX_NOTICES) noticesBox.firstElementChild.remove();
}

// --- Rendering events --------------------------------------------------------------------------

function nameOf(userId) {
  return names.get(userId) || "Someone";
}

function visibilityTag(event) {
  const kind = event.visibility?.kind;
  if (kind === "gm") return el("span", { class: "entry-tag" }, "GM only");
  if (kind === "users") return el("span", { class: "entry-tag" }, "private");
  return null;
}

function head(who, event) {
  return el(
    "div",
    { class: "entry-head" },
    el("span", { class: "entry-who" }, who),
    visibilityTag(event),
    timeOf(event.created_at),
  );
}

function systemLine(text, event) {
  return el("li", { class: "entry entry-system", "data-seq": event.seq, "data-type": event.type }, el("span", { class: "entry-text" }, text));
}

function renderEvent(event) {
  const p = event.payload && typeof event.payload === "object" ? event.payload : {};
  const renderer = RENDERERS[event.type] || renderGeneric;
  const node = renderer(event, p);
  if (node) {
    node.dataset.seq = event.seq;
    node.dataset.type = event.type;
  }
  return node;
}

const RENDERERS = {
  campaign_created(event, p) {
    const scene = p.scene && typeof p.scene === "object" ? p.scene : {};
    return el(
      "li",
      { class: "entry entry-start" },
      el("h2", {}, asText(p.name) || "A new campaign"),
      el("p", { class: "muted small" }, `A ${asText(p.edition) || "tabletop"} campaign begins.`),
      scene.location ? el("p", { class: "scene-where" }, asText(scene.location)) : null,
      scene.description ? el("p", { class: "entry-text" }, asText(scene.description)) : null,
    );
  },

  player_joined(event, p) {
    const userId = asText(p.user_id);
    const name = asText(p.display_name) || "Someone";
    if (userId) names.set(userId, name);
    return systemLine(p.role === "gm" ? `${name} sits down as game master` : `${name} joined the table`, event);
  },

  player_left(event, p) {
    const name = asText(p.display_name) || nameOf(asText(p.user_id));
    return systemLine(`${name} left the table`, event);
  },

  player_action(event, p) {
    const userId = event.actor?.user_id;
    const mine = userId && userId === config.userId;
    const classes = ["entry", "entry-action"];
    if (mine) classes.push("mine");
    if (event.actor?.kind === "gm") classes.push("by-gm");
    return el(
      "li",
      { class: classes.join(" ") },
      head(mine ? `${nameOf(userId)} (you)` : nameOf(userId), event),
      el("p", { class: "entry-text" }, asText(p.text)),
    );
  },

  dm_narration(event, p) {
    const turnId = asText(p.turn_id);
    if (turnId) endStream(turnId);
    setOptions(Array.isArray(p.options) ? p.options.map(asText).filter(Boolean) : []);
    return el(
      "li",
      { class: "entry entry-dm" },
      head("The DM", event),
      el("p", { class: "entry-text" }, asText(p.text)),
      p.fallback ? el("p", { class: "entry-note" }, "The DM lost the thread for a moment; this is a stand-in narration.") : null,
    );
  },

  turn_failed(event, p) {
    const turnId = asText(p.turn_id);
    if (turnId) endStream(turnId);
    return el(
      "li",
      { class: "entry entry-failed", role: "note" },
      el("strong", {}, "The DM could not answer"),
      ` (${asText(p.code) || "error"}): `,
      el("span", {}, asText(p.detail) || "the turn failed."),
    );
  },

  roll_requested(event, p) {
    const by = p.requested_by === "player" ? "A roll is asked for" : "The DM calls for a roll";
    const reason = asText(p.reason);
    return systemLine(`${by}: ${asText(p.formula)}${reason ? ` (${reason})` : ""}`, event);
  },

  roll_result(event, p) {
    const formula = asText(p.formula);
    const total = asText(p.total);
    // "formula → detail = total"; a detail such as "1d20 (17) + 5 = 22" already ends in
    // "= total", which is then not said twice.
    let detail = asText(p.detail).trim();
    const trailing = detail.match(/\s*=\s*(-?\d+)$/);
    if (trailing && trailing[1] === total) detail = detail.slice(0, trailing.index);
    return el(
      "li",
      { class: "entry entry-roll" },
      el("span", { class: "roll-icon", "aria-hidden": "true" }, "d20"),
      el("span", { class: "sr-only" }, "Roll: "),
      el("span", { class: "roll-formula" }, formula),
      " → ",
      detail ? el("span", { class: "roll-detail" }, detail) : null,
      " = ",
      el("span", { class: "roll-total" }, total),
      p.reason ? " " : null,
      p.reason ? el("span", { class: "roll-reason" }, `(${asText(p.reason)})`) : null,
    );
  },

  dice_seed_committed(event, p) {
    const hash = asText(p.seed_hash);
    return systemLine(`Dice sealed: seed ${hash ? `${hash.slice(0, 12)}…` : "committed"}`, event);
  },

  dice_seed_revealed(event, p) {
    return systemLine("Dice seed revealed: past rolls can now be checked", event);
  },

  entity_created(event, p) {
    const entity = p.entity && typeof p.entity === "object" ? p.entity : {};
    return systemLine(`New ${asText(entity.kind) || "entity"}: ${asText(entity.name)}`, event);
  },

  state_patch_applied(event, p) {
    return systemLine("The world changes", event);
  },

  state_patch_rejected(event, p) {
    return systemLine(`A change to the world was refused: ${asText(p.error)}`, event);
  },

  state_patch_requested() {
    return null; // its applied/rejected twin tells the story
  },

  audio_cue(event, p) {
    return systemLine(`♪ ${asText(p.cue)}`, event);
  },

  dm_audio_ready(event, p) {
    const url = asText(p.url);
    // Only our own server's media, or http(s): never a javascript: or data: URL.
    if (!/^(\/|https?:\/\/)/i.test(url)) return null;
    const audio = el("audio", { controls: true, preload: "none" });
    audio.src = url;
    return el("li", { class: "entry entry-dm" }, head("Narration audio", event), audio);
  },
};

function renderGeneric(event, p) {
  const label = asText(event.type).replaceAll("_", " ") || "event";
  const text = typeof p.text === "string" ? p.text : typeof p.detail === "string" ? p.detail : "";
  return systemLine(text ? `${label}: ${text}` : label, event);
}

/** Deltas are ephemeral: a cut connection drops the half-told narration (the final event comes). */
function dropStreams() {
  for (const [turnId, stream] of streams) {
    stream.el.remove();
    interruptedTurns.add(turnId);
  }
  streams.clear();
}

function endStream(turnId) {
  interruptedTurns.delete(turnId);
  finishedTurns.add(turnId);
  const stream = streams.get(turnId);
  if (stream) {
    stream.el.remove();
    streams.delete(turnId);
  }
}

// --- The DM's options --------------------------------------------------------------------------

function setOptions(options) {
  optionsBox.replaceChildren(
    ...options.slice(0, 8).map((option) =>
      el(
        "button",
        {
          type: "button",
          class: "option",
          title: option,
          disabled: stopped,
          onclick: () => {
            input.value = option;
            updateCount();
            submitAction();
          },
        },
        option,
      ),
    ),
  );
  optionsBox.hidden = options.length === 0;
}

// --- Presence ----------------------------------------------------------------------------------

function renderPresence(users) {
  onlineList.classList.remove("stale");
  onlineList.removeAttribute("aria-busy");
  for (const user of users) if (user?.user_id) names.set(asText(user.user_id), asText(user.display_name));
  onlineCount.textContent = String(users.length);
  if (users.length === 0) {
    onlineList.replaceChildren(el("li", { class: "muted online-empty" }, "Nobody yet."));
    return;
  }
  onlineList.replaceChildren(
    ...users.map((user) =>
      el(
        "li",
        {},
        el("span", { class: "online-dot", "aria-hidden": "true" }),
        el("span", { class: "online-name" }, asText(user.display_name) || "Someone"),
        user.user_id === config.userId ? el("span", { class: "you" }, "(you)") : null,
        user.role === "gm" ? el("span", { class: "badge badge-gm" }, "GM") : null,
      ),
    ),
  );
}

// --- Sending actions ---------------------------------------------------------------------------

function submitAction() {
  if (stopped) return;
  const text = input.value.trim();
  if (!text) return;
  if (text.length > maxChars) {
    notify(`An action is at most ${maxChars} characters; this one has ${text.length}.`);
    return;
  }
  const actionId = newActionId();
  const action = { id: actionId, text, state: "queued", el: null };
  pending.set(actionId, action);
  changeFeed(() => {
    action.el = renderPending(action);
    pendingList.append(action.el);
  });
  input.value = "";
  updateCount();
  transmit(actionId);
  scrollToBottom();
}

function transmit(actionId) {
  const action = pending.get(actionId);
  if (!action) return;
  // Before server.ready the hello's backlog may still hold this action's event: wait for it.
  if (live && send({ type: "client.player_action", action_id: actionId, text: action.text })) {
    action.state = "sent";
  } else if (action.state !== "acked") {
    action.state = "queued";
  }
  updatePending(action);
}

function renderPending(action) {
  return el(
    "li",
    { class: "entry entry-action mine entry-pending", "data-action-id": action.id },
    el("div", { class: "entry-head" }, el("span", { class: "entry-who" }, `${config.displayName} (you)`)),
    el("p", { class: "entry-text" }, action.text),
    el("p", { class: "pending-state" }),
  );
}

function updatePending(action) {
  if (!action.el) return;
  const state = action.el.querySelector(".pending-state");
  action.el.classList.toggle("failed", action.state === "failed");
  if (action.state === "failed") {
    state.replaceChildren(
      el("span", {}, `Not sent: ${action.error || "refused"}`),
      el("button", { type: "button", class: "btn btn-ghost", onclick: () => retry(action.id) }, "Retry"),
      el("button", { type: "button", class: "btn btn-ghost", onclick: () => discard(action.id) }, "Discard"),
    );
    return;
  }
  const labels = {
    queued: live ? "Sending…" : "Waiting for the connection…",
    sent: "Sending…",
    acked: "Delivered",
  };
  state.replaceChildren(el("span", {}, labels[action.state] || ""));
}

function refreshPendingStates() {
  for (const action of pending.values()) {
    if (action.state === "sent") action.state = "queued";
    updatePending(action);
  }
}

function retry(actionId) {
  const action = pending.get(actionId);
  if (!action) return;
  action.state = "queued";
  action.error = "";
  transmit(actionId); // the same action_id: if the first try did land, it is not stored twice
}

function discard(actionId) {
  const action = pending.get(actionId);
  if (!action) return;
  action.el?.remove();
  pending.delete(actionId);
  input.focus();
}

/** A player_action event settles the pending entry with its action_id. */
function settleFromEvent(event) {
  if (event.type !== "player_action") return;
  const actionId = asText(event.payload?.action_id);
  const action = pending.get(actionId);
  if (!action) return;
  action.el?.remove();
  pending.delete(actionId);
}

// --- Composer ----------------------------------------------------------------------------------

function updateCount() {
  const length = input.value.length;
  charCount.textContent = `${length} / ${maxChars}`;
  charCount.classList.toggle("near", length > maxChars * 0.9);
  // Grow with the text, up to the CSS max-height; shrink back once sent.
  input.style.height = "auto";
  if (input.value) input.style.height = `${input.scrollHeight + 2}px`;
}

composer.addEventListener("submit", (e) => {
  e.preventDefault();
  submitAction();
  input.focus();
});
input.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing && !e.altKey && !e.ctrlKey && !e.metaKey) {
    e.preventDefault();
    submitAction();
  }
});
input.addEventListener("input", updateCount);

const copyButton = document.getElementById("copy-invite");
if (copyButton) {
  copyButton.addEventListener("click", async () => {
    const code = copyButton.dataset.copy || "";
    try {
      await navigator.clipboard.writeText(code);
      copyButton.textContent = "Copied";
    } catch {
      // No clipboard outside secure contexts: select the code so the user can copy it.
      const range = document.createRange();
      range.selectNodeContents(document.getElementById("invite-code"));
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      copyButton.textContent = "Selected";
    }
    setTimeout(() => {
      copyButton.textContent = "Copy";
    }, 2000);
  });
}

updateCount();
connect();
