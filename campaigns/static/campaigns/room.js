// The campaign room's live client: one WebSocket, the protocol of CONTRACTS §3.
//
// The server sends every event in seq order; this client remembers the last seq it has
// shown and says it in `client.hello` after every (re)connect, so nothing is missed or shown
// twice. Actions carry a client-made action_id and are resent with the same id until the
// server acks them (the server dedupes). Every piece of player or model text goes into the
// page as text nodes (the narration's Markdown through markdown.js, which builds nodes),
// never as HTML.

import { createAudio } from "./audio.js";
import { createCharacterMaker, describeCharacter, readOptions } from "./character.js";
import { createDice, rollOutcomeWords } from "./dice.js";
import { api, asObject, asText, el, errorDetail, timeOf } from "./dom.js";
import { createGmTools, dollars } from "./gm.js";
import { plainText, renderInline, renderMarkdown } from "./markdown.js";
import { createRecap } from "./recap.js";
import { createSetup } from "./setup.js";
import { createTable, STATE_EVENTS } from "./sheet.js";
import { createWhisperBox } from "./whisper.js";
import { createXCard } from "./xcard.js";
import { voiceRefresh, voiceStreamed, voiceTurnEnded } from "../voice/player.js";

const config = JSON.parse(document.getElementById("room-config").textContent);

const CLOSE_UNAUTHENTICATED = 4401;
const CLOSE_FORBIDDEN = 4403;
const PING_EVERY_MS = 25_000;
const BACKOFF_FIRST_MS = 1_000;
const BACKOFF_MAX_MS = 15_000;
const MAX_NOTICES = 4;
const MAX_ANNOUNCEMENTS = 3;
const STICK_TO_BOTTOM_PX = 48;
/** The action box warns when fewer characters than this are left before the limit. */
const WARN_REMAINING = 200;
/** What was typed, kept across a reload of this page (the GM role changed hands). */
const DRAFT_KEY = "rpgai.roomDraft";
/** When this tab last reloaded the room for a new role (no reload loop). */
const ROLE_RELOAD_KEY = "rpgai.roleReloadAt";

const room = document.getElementById("main");
const feed = document.getElementById("feed");
const eventsList = document.getElementById("feed-events");
const streamsBox = document.getElementById("feed-streams");
const pendingList = document.getElementById("feed-pending");
const jumpButton = document.getElementById("jump-latest");
const statusBox = document.getElementById("room-status");
const bannersBox = document.getElementById("banners");
const noticesBox = document.getElementById("notices");
const announcer = document.getElementById("announcer");
const onlineList = document.getElementById("online");
const onlineCount = document.getElementById("online-count");
const optionsBox = document.getElementById("options");
const composer = document.getElementById("composer");
const input = document.getElementById("action-text");
const charCount = document.getElementById("action-count");
const composerNote = document.getElementById("composer-note");
const rollAsksBox = document.getElementById("roll-requests");
const panelToggle = document.getElementById("panel-toggle");
const playControls = document.getElementById("play-controls");
const roomTitle = document.querySelector(".room-title h1");
const journalUrl = `/api/campaigns/${config.campaignId}/journal.md`;
/** What the page's title adds after the campaign's name (" · rpgai"), kept on a rename. */
const titleSuffix = document.title.startsWith(roomTitle.textContent) ? document.title.slice(roomTitle.textContent.length) : "";
const maxChars = Number(config.maxActionChars) || 2000;
const isGm = config.role === "gm";
const leaveButton = document.getElementById("leave-campaign");
const leaveStatus = document.getElementById("leave-status");

// --- State ---------------------------------------------------------------------------------

let lastSeq = 0;
let socket = null;
let live = false;
let stopped = false; // closed for good (4401/4403): no more reconnects
let attempt = 0;
let reconnectTimer = null;
let countdownTimer = null;
let pingTimer = null;
/** The member is leaving (their own request): the socket's close is expected. */
let leaving = false;
/** The page reloads for a new role (the GM role changed hands): once. */
let roleReloading = false;
/** Whether the action box is past the limit, or near it (said once per crossing). */
let countLevel = "ok";

/** user_id -> display name, learned from player_joined events and presence. */
const names = new Map([[config.userId, config.displayName]]);
/** action_id -> {text, state: "queued"|"sent"|"acked"|"failed", el} */
const pending = new Map();
/** turn_id -> {el, body, text, frame} for narration still streaming. */
const streams = new Map();
/** Turns whose final narration (or failure) has arrived: late deltas are ignored. */
const finishedTurns = new Set();
/** Turns whose stream was cut by a reconnect: the deltas sent meanwhile are gone. */
const interruptedTurns = new Set();
/** The seq of the action a pacing notice is about (0: none shown). */
let pacingThroughSeq = 0;
/** roll_id -> its roll_requested payload (the reason is told with the result). */
const rollRequests = new Map();
/** patch_id -> the reason given in its state_patch_requested. */
const patchReasons = new Map();
/** The GM's Retry button, on the latest narration while nobody has acted after it. */
let retryButton = null;
/** roll_id -> {payload, turnId, node, button, status}: checks the DM asked a player to roll
 * (roll_requested by the DM with for_user_id) whose roll_result has not come yet. */
const rollAsks = new Map();
/** Archived: the campaign is read-only (CONTRACTS §7); everything that plays is disabled. */
let archived = Boolean(config.archived);
/**
 * What was sent without an action_id and waits for its answer (a server.ack or an error
 * without one): "whisper" or "x_card", in the order sent. The server answers a socket's
 * messages in order, so the oldest one is the one answered.
 */
const unlabelled = [];

// --- The table, the GM's tools, sound ------------------------------------------------------

/** What the character form offers (the SRD 5.1 lists and numbers, or a rules-light sheet). */
const characterOptions = readOptions();
/** The player said "Later" to making their character: no banner again on this page. */
let characterLater = false;

const table = createTable({
  config,
  options: characterOptions,
  onMakeCharacter: () => maker.open(),
  elements: {
    sheet: document.getElementById("sheet"),
    party: document.getElementById("party"),
    partyBlock: document.getElementById("party-block"),
    met: document.getElementById("met"),
    metCount: document.getElementById("met-count"),
    phoneHp: document.getElementById("phone-hp"),
  },
  onState: (state) => {
    const members = asObject(state.members);
    for (const [userId, member] of Object.entries(members)) {
      const name = asText(asObject(member).display_name);
      if (name) names.set(userId, name);
    }
    whispers.setMembers(members);
    gmTools?.onState(state);
    offerCharacter(state);
    followRole(state);
  },
});
const gmTools = isGm ? createGmTools({ config, table, notify, setBanner }) : null;
const whispers = createWhisperBox({ config, send: sendUnlabelled("whisper"), isLive: () => live && !stopped, notify });
const dice = createDice({
  send,
  isLive: () => live && !stopped,
  newId: newActionId,
  say: (where, text, tone, typed) => {
    showNote(text, tone);
    // A refused /roll comes back to the box to be corrected (unless something new is there).
    if (typed && !input.value.trim()) {
      input.value = typed;
      updateCount();
    }
  },
});
const maker = createCharacterMaker({ config, options: characterOptions, table, announce });
const xCard = createXCard({
  send: sendUnlabelled("x_card"),
  isLive: () => live && !stopped,
  isStopped: () => stopped,
  isArchived: () => archived,
  notify,
  announce,
});
const setup = createSetup({
  config,
  notify,
  elements: {
    view: document.getElementById("setup-view"),
    editorBox: document.getElementById("setup-editor"),
    badge: document.getElementById("setup-archived"),
  },
  onArchived: (value, { live: now }) => showArchived(value, now),
  onRenamed: (name) => {
    if (!name) return;
    roomTitle.textContent = name;
    document.title = `${name}${titleSuffix}`;
  },
});
const recap = createRecap({
  config,
  box: document.getElementById("recap"),
  journalUrl,
  onDismissed: () => {
    scrollToBottom();
    feed.focus({ preventScroll: true });
  },
});
const audio = createAudio({
  toggle: document.getElementById("audio-toggle"),
  feedEvents: eventsList,
  announce,
});

// --- Helpers -------------------------------------------------------------------------------

function newActionId() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  // randomUUID exists only in secure contexts; getRandomValues works everywhere.
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** `send` for a message the server answers without an action_id: its answer is queued as `kind`'s. */
function sendUnlabelled(kind) {
  return (message) => {
    const sent = send(message);
    if (sent) unlabelled.push(kind);
    return sent;
  };
}

/** Say something to screen readers (only what happens now, never the caught-up backlog). */
function announce(text) {
  if (!text) return;
  announcer.append(el("p", {}, text));
  while (announcer.children.length > MAX_ANNOUNCEMENTS) announcer.firstElementChild.remove();
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

// --- Banners: the connection, a stopped or failed DM, a closed room ------------------------

/** One banner per kind; `setBanner(kind, null)` removes it. */
function setBanner(kind, banner) {
  const old = bannersBox.querySelector(`[data-banner="${kind}"]`);
  if (!banner) {
    old?.remove();
    return;
  }
  const node = el(
    "div",
    {
      class: `banner banner-${banner.tone || "info"}`,
      "data-banner": kind,
      "data-budget-stop": banner.marker || null,
      role: banner.role || "status",
    },
    el("div", { class: "banner-text" }, el("strong", { class: "banner-title" }, banner.title), banner.text ? el("span", {}, " ", banner.text) : null),
    banner.actions?.length ? el("div", { class: "banner-actions" }, banner.actions) : null,
  );
  if (old) old.replaceWith(node);
  else bannersBox.append(node);
}

function dismissButton(kind) {
  return el(
    "button",
    { type: "button", class: "btn btn-ghost btn-small", "aria-label": "Dismiss this message", onclick: () => setBanner(kind, null) },
    "Dismiss",
  );
}

/**
 * Archived (or back in play): everything that plays is disabled as one (the fieldset around
 * the composer, the dice, whispers and the X-card), with a notice that says why. `now`: it
 * happened while the page is open (said to screen readers too).
 */
function showArchived(value, now) {
  const changed = value !== archived;
  archived = value;
  playControls.disabled = archived;
  room.dataset.archived = archived ? "true" : "false";
  input.placeholder = archived
    ? "This campaign is archived: read only."
    : "What do you do? (Enter sends, Shift+Enter for a new line)";
  gmTools?.setArchived(archived);
  if (archived) {
    setBanner("archived", {
      tone: "archived",
      role: now && changed ? "alert" : "status",
      title: "This campaign is archived: read only.",
      text: isGm
        ? "You can read the story and download the journal. Bring it back to play again."
        : "You can read the story and download the journal; nothing can be played until the GM brings it back.",
      actions: isGm
        ? [el("button", { type: "button", class: "btn btn-secondary btn-small", id: "unarchive-banner", onclick: () => setup.unarchive() }, "Bring it back")]
        : [],
    });
    setBanner("character", null);
    if (now && changed) {
      // A narration still streaming will never be told: an archived campaign takes none.
      for (const turnId of [...streams.keys()]) endStream(turnId);
      announce("The campaign was archived: it is read only now.");
    }
  } else {
    setBanner("archived", null);
    if (now && changed) {
      announce("The campaign is back in play.");
      notify("The campaign is back in play: you can act again.", "info", "archived");
    }
    const state = table.state();
    if (state) offerCharacter(state);
  }
}

/** A player whose character is still the blank made at join is asked to make it. */
function offerCharacter(state) {
  const own = Object.values(asObject(state.characters)).map(asObject).find((c) => c.owner_user_id === config.userId);
  if (isGm || !own || own.sheet || characterLater || archived) {
    setBanner("character", null);
    return;
  }
  if (bannersBox.querySelector('[data-banner="character"]')) return;
  setBanner("character", {
    tone: "character",
    title: "Your character is a blank sheet.",
    text: "Give them a class, an ancestry, abilities and a story.",
    actions: [
      el("button", { type: "button", class: "btn btn-primary btn-small", id: "make-character", onclick: () => maker.open() }, "Make your character"),
      el(
        "button",
        {
          type: "button",
          class: "btn btn-ghost btn-small",
          "aria-label": "Later: make the character from the sheet",
          onclick: () => {
            characterLater = true;
            setBanner("character", null);
          },
        },
        "Later",
      ),
    ],
  });
}

/** What a failed turn's code means, in a sentence (the code itself is never shown). */
const FAILURE_WORDS = {
  budget_exceeded: "The DM stopped: today's budget is spent.",
  rate_limited: "The DM is asked too often just now.",
  model_error: "The DM's model could not answer.",
  model_timeout: "The DM's model took too long to answer.",
  turn_timeout: "The DM could not finish the turn in time.",
  internal_error: "Something went wrong on the server.",
  prices_file_invalid: "This server's settings need fixing.",
  archived: "The campaign was archived before the DM could answer.",
};

function failureWords(code) {
  return FAILURE_WORDS[code] || "The DM could not answer.";
}

/** A sentence, ending with a full stop. */
function sentence(text) {
  const words = asText(text).trim();
  if (!words) return "";
  return /[.!?…]$/.test(words) ? words : `${words}.`;
}

function turnFailedBanner(code, detail) {
  if (code === "budget_exceeded") {
    if (gmTools) {
      // The GM's banner says what the cap is and offers the raise, read from the budget.
      gmTools.onStopped(detail);
      return;
    }
    setBanner("turn", {
      tone: "budget",
      role: "alert",
      // The server's words carry no money (CONTRACTS §7): players never see a figure.
      title: "The DM has stopped: today's budget is spent.",
      text: sentence(detail) || "The GM has been told.",
      actions: [dismissButton("turn")],
    });
  } else if (code === "archived") {
    setBanner("turn", null); // the archived banner says it all
  } else {
    setBanner("turn", {
      tone: "danger",
      role: "alert",
      title: "The DM could not answer the last turn.",
      text: `${sentence(detail) || failureWords(code)} Send an action to try again.`,
      actions: [dismissButton("turn")],
    });
  }
}

// --- Connection status -------------------------------------------------------------------------

function setStatus(state, text) {
  statusBox.dataset.state = state;
  statusBox.replaceChildren(el("span", { class: "status-dot", "aria-hidden": "true" }), el("span", { class: "status-text" }, text));
}

function showReconnecting(delayMs) {
  const endsAt = Date.now() + delayMs;
  // The ticking seconds are hidden from screen readers: one announcement, not one a second.
  const seconds = el("span", { "aria-hidden": "true" });
  const tick = () => {
    seconds.textContent = `Reconnecting in ${Math.max(0, Math.ceil((endsAt - Date.now()) / 1000))} s…`;
  };
  tick();
  setStatus("reconnecting", "Reconnecting…");
  setBanner("connection", {
    tone: "warn",
    title: "Connection lost.",
    text: el("span", {}, el("span", { class: "sr-only" }, "Reconnecting soon. "), seconds, " Nothing you missed is lost."),
    actions: [el("button", { type: "button", class: "btn btn-ghost btn-small", onclick: reconnectNow }, "Retry now")],
  });
  clearInterval(countdownTimer);
  countdownTimer = setInterval(tick, 1000);
}

function showClosed(code) {
  setBanner("connection", null);
  if (code === CLOSE_UNAUTHENTICATED) {
    setStatus("closed", "Signed out");
    setBanner("closed", {
      tone: "danger",
      role: "alert",
      title: "Your session ended.",
      actions: [el("a", { class: "btn btn-primary btn-small", href: `/login/?next=${encodeURIComponent(location.pathname)}` }, "Log in again")],
    });
  } else {
    setStatus("closed", "Not a member");
    setBanner("closed", {
      tone: "danger",
      role: "alert",
      title: "You are not a member of this campaign (any more).",
      actions: [el("a", { class: "btn btn-secondary btn-small", href: "/campaigns/" }, "My campaigns")],
    });
  }
}

// --- The socket --------------------------------------------------------------------------------

function connect() {
  clearTimeout(reconnectTimer);
  clearInterval(countdownTimer);
  live = false;
  unlabelled.length = 0; // a new socket: nothing sent on it waits for an answer yet
  whispers.onConnection();
  dice.onConnection();
  xCard.onConnection();
  setStatus("connecting", attempt ? "Reconnecting…" : "Connecting…");
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
  unlabelled.length = 0;
  whispers.onConnection();
  dice.onConnection();
  xCard.onConnection();
  updateRollAsks();
  clearInterval(pingTimer);
  refreshPendingStates();
  dropStreams();
  onlineList.classList.add("stale"); // until the next presence message
  onlineList.setAttribute("aria-busy", "true");
  if (code === CLOSE_UNAUTHENTICATED || code === CLOSE_FORBIDDEN) {
    stopped = true;
    clearInterval(countdownTimer);
    if (leaving || roleReloading) return; // on the way out (or back in) already
    showClosed(code);
    input.disabled = true;
    composer.querySelector("button[type=submit]").disabled = true;
    whispers.stop();
    dice.stop();
    xCard.update();
    updateRollAsks();
    onlineList.replaceChildren(el("li", { class: "muted online-empty" }, "Not connected."));
    onlineCount.textContent = "–";
    for (const button of optionsBox.querySelectorAll("button")) button.disabled = true;
    audio.stop();
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
    case "narration.audio":
      onSpeech(data);
      break;
    case "presence":
      renderPresence(Array.isArray(data.users) ? data.users : []);
      break;
    case "round_waiting":
      renderRoundWaiting(Array.isArray(data.user_ids) ? data.user_ids : []);
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
  const wasReconnect = attempt > 0;
  live = true;
  attempt = 0;
  clearInterval(countdownTimer);
  setStatus("live", "Live");
  setBanner("connection", null);
  whispers.onReady();
  dice.onConnection();
  xCard.onConnection();
  updateRollAsks();
  if (wasReconnect) announce("Reconnected.");
  table.refreshSoon();
  // Actions the server has not acked yet go again, with the same action_id: the server
  // stores each action_id once, so a resend after a lost ack is harmless.
  for (const action of pending.values()) if (action.state === "sent") action.state = "queued";
  flushOutbox();
}

function onEvent(event) {
  if (!Number.isInteger(event.seq) || event.seq <= lastSeq) return; // never show one twice
  lastSeq = event.seq;
  let entry = null;
  changeFeed(() => {
    entry = renderEvent(event);
    if (entry) eventsList.append(entry);
    settleFromEvent(event);
  });
  whispers.onEvent(event);
  dice.onEvent(event);
  afterEvent(event, entry);
}

/** What an event does beyond its line in the feed: the table, banners, sound, speech. */
function afterEvent(event, entry) {
  const p = asObject(event.payload);
  maker.onEvent(event);
  setup.onEvent(event, { live });
  if (live) gmTools?.onEvent(event);
  if (STATE_EVENTS.has(event.type) && live) table.refreshSoon();
  switch (event.type) {
    case "entity_created":
      table.noteEntity(asText(asObject(p.entity).id), event.seq);
      break;
    case "state_patch_applied":
      // A reveal: players never saw the entity's creation; it is new to them now.
      for (const entity of revealedOf(p)) table.noteEntity(asText(entity.id), event.seq);
      break;
    case "dm_narration":
      setBanner("turn", null);
      pacingAnswered(p.through_seq);
      closeRollAsksOf(asText(p.turn_id));
      // The voice keeps what the narration kept of the sentences it heard streaming.
      voiceTurnEnded(asText(p.turn_id), { text: asText(p.text), fallback: p.fallback === true });
      offerRetry(entry, event.seq);
      if (live) announce(`The DM: ${plainText(p.text)}`);
      break;
    case "turn_failed":
      pacingAnswered(p.through_seq);
      closeRollAsksOf(asText(p.turn_id));
      voiceTurnEnded(asText(p.turn_id), { failed: true }); // what was said for it is taken back
      offerRetry(null); // only the latest narration, and this failure came after it
      turnFailedBanner(asText(p.code), asText(p.detail));
      break;
    case "turn_reopened":
      // The budget made room: the DM answers what was waiting. No banner stays up.
      setBanner("turn", null);
      if (live) announce("The DM is back.");
      break;
    case "entity_withdrawn":
      // Hidden by the GM: gone from the table at once (the snapshot follows).
      table.withdrawEntity(asText(p.entity_id));
      break;
    case "player_left":
      table.markDeparted(Array.isArray(p.departed_character_ids) ? p.departed_character_ids.map(asText) : []);
      break;
    case "gm_role_handed":
      if (live) announce(roleWords(event, p));
      if (live && [asText(p.from_user_id), asText(p.to_user_id)].includes(config.userId)) table.refreshNow();
      break;
    case "dm_narration_retracted":
      collapseRetracted(p.narration_seq, asText(p.turn_id));
      if (live) announce(`${event.actor?.user_id === config.userId ? "You" : "The GM"} asked the DM for another answer.`);
      break;
    case "roll_requested":
      if (live && rollAsks.get(asText(p.roll_id))?.mine) announce(`The DM asks you to roll ${rollAskWords(p)}.`);
      break;
    case "player_action":
      setBanner("turn", null); // a new action is a new try
      offerRetry(null); // a narration a player has acted on is not retried any more
      if (live && event.actor?.user_id !== config.userId) announce(`${nameOf(event.actor?.user_id)}: ${asText(p.text)}`);
      break;
    case "roll_result":
      if (live) announce(`Roll ${asText(p.formula)}: ${rollOutcomeWords(p)}${privacyWords(event) ? ` (${privacyWords(event)})` : ""}`);
      break;
    case "gm_direction":
      if (live && event.actor?.user_id !== config.userId) announce(`GM direction: ${asText(p.text)}`);
      break;
    case "whisper": {
      const whisper = describeWhisper(event, p);
      if (live && whisper.forMe) announce(`${whisper.spoken}: ${plainText(asText(p.text))}`);
      break;
    }
    case "x_card":
      if (live) announce(X_CARD_WORDS);
      break;
    case "campaign_updated":
      if (live) announce(campaignUpdateWords(event, p));
      break;
    case "dm_audio_ready":
      audio.onEvent(event);
      break;
    case "audio_cue":
      audio.onCue(event, live);
      break;
    default:
      break;
  }
}

function onAck(data) {
  if (dice.onAck(data)) return;
  if (xCard.answers(data)) {
    // Said by the server: this answers the X-card (CONTRACTS §7; `for`).
    const at = unlabelled.indexOf("x_card");
    if (at >= 0) unlabelled.splice(at, 1);
    xCard.onAck(data);
    return;
  }
  if (!data.action_id && unlabelled.shift() === "x_card") {
    xCard.onAck(data);
    return;
  }
  if (whispers.onAck(data)) return;
  if (data.notice) onWaiting(data);
  const action = pending.get(asText(data.action_id));
  if (!action) return; // its event already arrived
  action.state = "acked";
  updatePending(action);
  flushOutbox();
}

/** The server took an action that waits behind the sender's earlier, unanswered ones. */
function onWaiting(data) {
  const notice = asText(data.notice);
  const action = pending.get(asText(data.action_id));
  if (action) action.note = notice;
  notify(notice, "info", "pacing");
  // Gone by itself once the DM has answered through this action.
  if (Number.isInteger(data.seq)) pacingThroughSeq = data.seq;
}

/** The DM answered (or gave up) through `throughSeq`: the pacing notice has done its work. */
function pacingAnswered(throughSeq) {
  if (!pacingThroughSeq || !Number.isInteger(throughSeq) || throughSeq < pacingThroughSeq) return;
  pacingThroughSeq = 0;
  noticesBox.querySelector('[data-key="pacing"]')?.remove();
}

function onDelta(data) {
  const turnId = asText(data.turn_id);
  const text = asText(data.text);
  if (!turnId || !text || finishedTurns.has(turnId)) return;
  // `offset` 0: the narration from its start (the text so far, after a reload or a
  // reconnect): it replaces what this page had of it instead of adding to it.
  const fromStart = data.offset === 0;
  let stream = streams.get(turnId);
  if (stream && fromStart) stream.text = "";
  if (!stream) {
    const body = el("div", { class: "entry-body" });
    const node = el(
      "div",
      // data-stream-turn: where the voice marks the sentence it speaks (voice/player.js).
      { class: "entry entry-dm entry-streaming", "aria-busy": "true", "data-stream-turn": turnId },
      el("div", { class: "entry-head" }, el("span", { class: "entry-who" }, "The DM is narrating…")),
      body,
    );
    // After a reconnect without the text so far, what streamed meanwhile is lost: say so
    // instead of a cut.
    stream = { el: node, body, text: interruptedTurns.has(turnId) && !fromStart ? "… " : "", frame: 0 };
    streams.set(turnId, stream);
    changeFeed(() => streamsBox.append(node));
  }
  stream.text += text; // only the new text arrives
  // Re-render the Markdown once per frame, however many deltas came in it.
  if (!stream.frame) {
    stream.frame = requestAnimationFrame(() => {
      stream.frame = 0;
      if (!streams.has(turnId)) return;
      changeFeed(() => stream.body.replaceChildren(renderMarkdown(stream.text)));
      voiceRefresh(); // the sentence being spoken is marked in the text drawn again
    });
  }
}

/** `narration.audio`: a sentence of the narration still streaming, spoken already; the
 * voice plays it in order, while the text goes on (CONTRACTS §7). */
function onSpeech(data) {
  const turnId = asText(data.turn_id);
  if (!turnId || finishedTurns.has(turnId)) return;
  voiceStreamed(data);
}

function onError(data) {
  const code = asText(data.code);
  if (code === "archived") setup.markArchived(); // the server knows best: it is read-only
  if (dice.onError(data)) return;
  if (xCard.answers(data)) {
    const at = unlabelled.indexOf("x_card");
    if (at >= 0) unlabelled.splice(at, 1);
    xCard.onError(data);
    return;
  }
  if (!data.action_id && unlabelled[0] === "x_card") {
    unlabelled.shift();
    xCard.onError(data);
    return;
  }
  if (!data.action_id && unlabelled[0] === "whisper") unlabelled.shift();
  const actionId = asText(data.action_id);
  const action = actionId ? pending.get(actionId) : undefined;
  const detail = code === "archived" ? ARCHIVED_WORDS : asText(data.detail) || "Something went wrong.";
  if (action && code === "rate_limited") {
    // Not taken yet because the DM is still busy with this player's last actions: said,
    // and sent again by itself (the same action_id: never stored twice).
    // The actions typed after it wait behind it (the outbox), so the order stays the typed one.
    const wait = Math.min(30, Math.max(0.5, Number(data.retry_after) || 2));
    action.state = "queued";
    action.note = detail;
    updatePending(action);
    clearTimeout(action.retryTimer);
    action.retryTimer = setTimeout(() => {
      action.retryTimer = null;
      flushOutbox();
    }, wait * 1000 + Math.random() * 200);
    notify(detail, "info", "pacing");
    return;
  }
  if (action) {
    action.state = "failed";
    action.error = detail;
    updatePending(action);
    flushOutbox();
  }
  if (!action && whispers.onError(data)) notify(`Your whisper was not sent. ${errorText(code, detail)}`);
  else if (code === "budget_exceeded") turnFailedBanner(code, detail);
  else notify(errorText(code, detail));
}

const ARCHIVED_WORDS = "This campaign is archived: read only.";

function errorText(code, detail) {
  if (code === "archived") return ARCHIVED_WORDS;
  const known = {
    rate_limited: "Slow down a little:",
    too_large: "That message is too long:",
    forbidden: "Not allowed:",
    invalid_message: "The server could not use that:",
    unavailable: "The server is busy for a moment; try again:",
    internal_error: "Something went wrong on the server:",
    budget_exceeded: "The DM has stopped for today's budget:",
  };
  return `${known[code] || "That did not work:"} ${sentence(detail) || "try again in a moment."}`;
}

/**
 * A dismissable notice: errors by default, `tone` "info" for good news. A `key` keeps one
 * notice of its kind: a new one replaces it instead of stacking up.
 */
function notify(text, tone = "error", key = "") {
  if (key) noticesBox.querySelector(`[data-key="${key}"]`)?.remove();
  const notice = el(
    "div",
    { class: `notice notice-${tone}`, role: tone === "error" ? "alert" : "status", "data-key": key || null },
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

/** For an event only some see: "private" (a GM is told for whom: "private: Alice"). */
function privacyWords(event) {
  const visibility = asObject(event.visibility);
  if (visibility.kind !== "users") return "";
  if (!isGm) return "private";
  const ids = Array.isArray(visibility.user_ids) ? visibility.user_ids.map(asText) : [];
  const who = ids.map((id) => (id === config.userId ? "you" : nameOf(id)));
  return who.length ? `private: ${who.join(", ")}` : "private";
}

function visibilityTag(event) {
  const kind = event.visibility?.kind;
  if (kind === "gm") return el("span", { class: "entry-tag" }, "GM only");
  if (kind === "users") {
    return el(
      "span",
      { class: "entry-tag entry-tag-private", title: isGm ? "Only they (and the GMs) see this" : "Not everyone at the table sees this" },
      privacyWords(event),
    );
  }
  return null;
}

function head(who, event, ...extra) {
  return el("div", { class: "entry-head" }, el("span", { class: "entry-who" }, who), ...extra, visibilityTag(event), timeOf(event.created_at));
}

function systemLine(content, event, ...extra) {
  return el(
    "li",
    { class: "entry entry-system" },
    el("span", { class: "entry-text" }, content),
    ...extra,
  );
}

function renderEvent(event) {
  const p = asObject(event.payload);
  const renderer = RENDERERS[event.type] || renderGeneric;
  const node = renderer(event, p);
  if (node) {
    node.dataset.seq = event.seq;
    node.dataset.type = event.type;
    if (asText(p.turn_id)) node.dataset.turnId = asText(p.turn_id);
  }
  return node;
}

function undoFor(event, label) {
  return gmTools && event.visibility?.kind !== "gm" ? gmTools.undoButton(event.seq, label) : null;
}

const KIND_WORDS = {
  npc: "Met",
  creature: "A creature appears",
  location: "A new place",
  faction: "A faction",
  item: "Found",
};

const FIELD_WORDS = { hp: "HP", max_hp: "max HP", ac: "AC" };

/** Fields of character_updated the server derives: said through the fields that moved them. */
const CHARACTER_DERIVED = new Set(["modifiers", "proficiency_bonus", "saving_throws"]);

/** "HP 5", "level 3", "backstory": a sheet change in words (never a long text quoted). */
function characterChangeWords(field, value) {
  if (field === "backstory") return "backstory";
  if (field === "abilities") {
    const scores = asObject(value);
    return Object.entries(scores).map(([key, score]) => `${key.toUpperCase()} ${asText(score)}`).join(", ") || "abilities";
  }
  if (Array.isArray(value)) return `${field} ${value.map(asText).join(", ") || "none"}`;
  const label = FIELD_WORDS[field] || field.replaceAll("_", " ");
  const shown = asText(value);
  return `${label} ${shown.length > 40 ? `${shown.slice(0, 39)}…` : shown}`;
}

/** A state patch in words: "Thorn: HP 7", "Thorn gains rope". */
function describePatch(patches) {
  const lines = [];
  for (const operation of Array.isArray(patches) ? patches : []) {
    const op = asText(operation?.op);
    const parts = asText(operation?.path).split("/").slice(1);
    const value = operation?.value;
    const shown = Array.isArray(value) ? value.map(asText).join(", ") || "nothing" : asText(value);
    if (parts[0] === "characters" && parts[1]) {
      const who = table.characterName(parts[1]) || "A character";
      const field = FIELD_WORDS[parts[2]] || (parts[2] || "").replaceAll("_", " ");
      const whole = parts.length === 3;
      if (parts[2] === "inventory" && !whole) lines.push(op === "remove" ? `${who} loses an item` : `${who} gains ${shown}`);
      else if (parts[2] === "conditions" && !whole) lines.push(op === "remove" ? `${who}: a condition ends` : `${who} is ${shown}`);
      else if (op === "remove") lines.push(`${who}: ${field} removed`);
      else lines.push(`${who}: ${field} ${shown}`);
    } else if (parts[0] === "scene") {
      lines.push(parts[1] === "location" && op !== "remove" ? `The scene moves to ${shown}` : "The scene changes");
    } else if (parts[0] === "entities") {
      const entity = asObject(asObject(table.state()?.entities)[parts[1]]);
      lines.push(`${asText(entity.name) || "Someone"} changes`);
    } else if (op !== "test") {
      lines.push("The world changes");
    }
  }
  return [...new Set(lines)].join("; ") || "The world changes";
}

/** The entities a state patch reveals (payload `revealed`), each with a name. */
function revealedOf(p) {
  return (Array.isArray(p.revealed) ? p.revealed : []).map(asObject).filter((e) => asText(e.name));
}

/** A roll's detail text, with dropped dice ("~~5~~") struck through. */
function rollDetail(detail) {
  const node = el("span", { class: "roll-detail" });
  for (const [i, piece] of detail.split(/~~/).entries()) {
    if (!piece) continue;
    node.append(i % 2 ? el("s", {}, piece) : document.createTextNode(piece));
  }
  return node;
}

function diceFaces(dice) {
  const faces = (Array.isArray(dice) ? dice : []).slice(0, 40).map(asObject);
  if (!faces.length) return null;
  return el(
    "span",
    { class: "roll-dice", "aria-hidden": "true" },
    faces.map((die) => {
      const sides = die.sides === "%" ? "%" : Number(die.sides);
      const value = Number(die.value);
      const classes = ["die"];
      if (die.kept === false) classes.push("dropped");
      if (sides === 20 && die.kept !== false && value === 20) classes.push("crit");
      if (sides === 20 && die.kept !== false && value === 1) classes.push("fumble");
      return el("span", { class: classes.join(" "), title: `d${sides}${die.kept === false ? " (dropped)" : ""}` }, el("span", { class: "die-sides" }, `d${sides}`), el("span", { class: "die-value" }, asText(die.value)));
    }),
  );
}

/** The anonymous line of the X-card: it names no one (nobody is told who tapped it). */
const X_CARD_WORDS = "Someone tapped the X-card: the story moves on.";

const SETUP_WORDS = { premise: "the premise", tone: "the tone", lines: "the lines", veils: "the veils" };

/** "The GM changed the premise and the lines", "You archived the campaign". */
function campaignUpdateWords(event, p) {
  const changes = asObject(p.changes);
  const phrases = [];
  if (typeof changes.name === "string") phrases.push(`renamed the campaign “${changes.name}”`);
  const changed = Object.keys(SETUP_WORDS).filter((key) => key in changes);
  if (changed.length) phrases.push(`changed ${andList(changed.map((key) => SETUP_WORDS[key]))}`);
  if (typeof changes.turn_mode === "string") phrases.push(`set the turns to ${changes.turn_mode === "rounds" ? "rounds" : "free"}`);
  if (changes.archived === true) phrases.push("archived the campaign: it is read only now");
  if (changes.archived === false) phrases.push("brought the campaign back into play");
  const who = event.actor?.user_id === config.userId ? "You" : "The GM";
  return `${who} ${phrases.length ? andList(phrases) : "changed the campaign's setup"}.`;
}

function andList(items) {
  return items.length < 2 ? items.join("") : `${items.slice(0, -1).join(", ")} and ${items[items.length - 1]}`;
}

/** "Mara handed the GM role to Bob", from where the reader sits. */
function roleWords(event, p) {
  const from = asText(p.from_user_id);
  const to = asText(p.to_user_id);
  const giver = from === config.userId ? "You" : nameOf(from);
  const taker = to === config.userId ? "you" : nameOf(to);
  return `${giver} handed the GM role to ${taker}.`;
}

const RENDERERS = {
  campaign_created(event, p) {
    const scene = asObject(p.scene);
    const premise = asText(p.premise).trim();
    const tone = asText(p.tone).trim();
    return el(
      "li",
      { class: "entry entry-start" },
      el("h2", {}, asText(p.name) || "A new campaign"),
      el("p", { class: "muted small" }, `A ${asText(p.edition) || "tabletop"} campaign begins.`),
      premise ? el("p", { class: "entry-premise" }, premise) : null,
      tone ? el("p", { class: "entry-tone muted small" }, `Tone: ${tone}`) : null,
      scene.location ? el("p", { class: "scene-where" }, asText(scene.location)) : null,
      scene.description ? el("div", { class: "entry-body" }, renderMarkdown(asText(scene.description))) : null,
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
      head(mine ? `${nameOf(userId)} (you)` : nameOf(userId), event, event.actor?.kind === "gm" ? el("span", { class: "badge badge-gm" }, "GM") : null),
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
      el("div", { class: "entry-body" }, renderMarkdown(asText(p.text))),
      p.fallback ? el("p", { class: "entry-note" }, "The DM lost the thread for a moment; this is a stand-in narration.") : null,
    );
  },

  turn_failed(event, p) {
    const turnId = asText(p.turn_id);
    if (turnId) endStream(turnId);
    const code = asText(p.code);
    const budget = code === "budget_exceeded";
    const detail = sentence(p.detail);
    return el(
      "li",
      { class: `entry entry-failed${budget ? " entry-budget" : ""}`, "data-code": code || null },
      el("strong", {}, failureWords(code)),
      detail ? ` ${detail}` : "",
    );
  },

  turn_reopened() {
    return el("li", { class: "entry entry-system entry-reopened" }, el("span", { class: "entry-text" }, el("strong", {}, "The DM is back.")));
  },

  gm_role_handed(event, p) {
    return systemLine(roleWords(event, p), event);
  },

  entity_withdrawn() {
    return null; // the table drops it; the story has nothing to say
  },

  budget_refused(event, p) {
    // GM-only: the figures, in dollars and cents (never more digits than a meter has).
    const spent = dollars(Math.round(Number(p.spent_usd) * 100));
    const cap = dollars(Math.round(Number(p.cap_usd) * 100));
    const whose = p.scope === "user" ? "a player's daily allowance" : "today's cap";
    return systemLine(`The DM stopped at ${whose}: ${spent} of ${cap} spent. Nothing is spent past it.`, event);
  },

  budget_warning(event, p) {
    const spent = dollars(Math.round(Number(p.spent_usd) * 100));
    const cap = dollars(Math.round(Number(p.daily_cap_usd) * 100));
    const percent = Number.isFinite(p.percent) ? `${p.percent}%` : "part";
    return systemLine(`Budget: ${percent} of today's cap is spent (${spent} of ${cap}).`, event);
  },

  dm_narration_retracted(event, p) {
    // The narration itself is folded away (collapseRetracted); this line says why.
    setOptions(Array.isArray(p.options_before) ? p.options_before.map(asText).filter(Boolean) : []);
    const mine = event.actor?.user_id === config.userId;
    return systemLine(`${mine ? "You" : `${nameOf(event.actor?.user_id)} (GM)`} asked the DM for another answer.`, event);
  },

  gm_direction(event, p) {
    // The GM speaking to the DM: a line of its own, never a character's action.
    const mine = event.actor?.user_id === config.userId;
    const who = mine ? "You direct the DM" : `${nameOf(event.actor?.user_id)} (GM) directs the DM`;
    return el(
      "li",
      { class: "entry entry-direction" },
      head(who, event, el("span", { class: "badge badge-gm" }, "GM")),
      el("p", { class: "entry-text" }, asText(p.text)),
      p.now === false ? el("p", { class: "entry-note" }, "For the DM's next turn.") : null,
    );
  },

  roll_requested(event, p) {
    rollRequests.set(asText(p.roll_id), p);
    // The DM asks a player to roll their own check: a button for them, a word for the rest.
    if (p.requested_by === "dm" && asText(p.for_user_id)) openRollAsk(p);
    return null; // told together with its result, which follows in the same turn
  },

  roll_dc_held() {
    return null; // the DC of a check a player rolls: told with its result (GM-only)
  },

  roll_result(event, p) {
    closeRollAsk(asText(p.roll_id));
    const request = asObject(rollRequests.get(asText(p.roll_id)));
    const reason = asText(request.reason);
    const byPlayer = event.actor?.kind === "player" || event.actor?.kind === "gm";
    const who = byPlayer ? nameOf(event.actor?.user_id) : "The DM";
    const formula = asText(p.formula);
    const total = asText(p.total);
    // "1d20 (17) + 5 = 22" already ends in "= total": it is not said twice.
    let detail = asText(p.detail).trim();
    const trailing = detail.match(/\s*=\s*(-?\d+)$/);
    if (trailing && trailing[1] === total) detail = detail.slice(0, trailing.index);
    const dice = diceFaces(p.dice);
    const kept20 = (Array.isArray(p.dice) ? p.dice : []).filter((d) => d?.sides === 20 && d?.kept !== false);
    const natural = kept20.length === 1 && (kept20[0].value === 20 || kept20[0].value === 1) ? kept20[0].value : null;
    const privacy = privacyWords(event);
    const target = Number.isInteger(p.dc) ? { dc: p.dc, success: p.success === true } : null;
    const against = target ? ` against DC ${target.dc}: ${target.success ? "success" : "failure"}` : "";
    const spoken = `${privacy ? `${privacy[0].toUpperCase()}${privacy.slice(1)}. ` : ""}Roll${reason ? ` for ${reason}` : ""}: ${formula}${detail ? `, ${detail.replaceAll("~~", "")}` : ""}, total ${total}${against}.`;
    return el(
      "li",
      { class: `entry entry-roll${natural === 20 ? " roll-crit" : natural === 1 ? " roll-fumble" : ""}` },
      el("span", { class: "sr-only" }, spoken),
      el(
        "div",
        { class: "roll-main", "aria-hidden": "true" },
        el("span", { class: "roll-icon" }, "d20"),
        el("span", { class: "roll-what" }, el("span", { class: "roll-reason" }, reason || `${who} rolls`), el("span", { class: "roll-formula" }, formula)),
        dice,
        el("span", { class: "roll-equals" }, "="),
        el("span", { class: "roll-total" }, total),
      ),
      el(
        "div",
        { class: "roll-foot", "aria-hidden": "true" },
        visibilityTag(event),
        target ? el("span", { class: `roll-target ${target.success ? "success" : "failure"}` }, `DC ${target.dc} · ${target.success ? "Success" : "Failure"}`) : null,
        detail ? rollDetail(detail) : null,
        natural === 20 ? el("span", { class: "roll-natural" }, "Natural 20!") : null,
        natural === 1 ? el("span", { class: "roll-natural" }, "Natural 1") : null,
      ),
    );
  },

  dice_seed_committed(event, p) {
    const hash = asText(p.seed_hash);
    return systemLine(`Dice sealed: seed ${hash ? `${hash.slice(0, 12)}…` : "committed"}`, event);
  },

  dice_seed_revealed(event) {
    return systemLine(
      el("span", {}, "Dice seed revealed: ", el("a", { href: `/campaigns/${config.campaignId}/dice` }, "check the past rolls")),
      event,
    );
  },

  entity_created(event, p) {
    const entity = asObject(p.entity);
    const description = asText(asObject(entity.data).description);
    const secretly = entity.hidden === true ? " (hidden from the players)" : "";
    const label = `${KIND_WORDS[entity.kind] || "New"}: ${asText(entity.name)}${secretly}`;
    return el(
      "li",
      { class: "entry entry-system entry-entity" },
      el("span", { class: "entry-text" }, el("strong", {}, label), description ? ` — ${description}` : ""),
      undoFor(event, label),
    );
  },

  state_patch_applied(event, p) {
    const reverts = Number.isInteger(p.reverts_seq) ? p.reverts_seq : null;
    const byGm = event.actor?.kind === "gm";
    const revealed = revealedOf(p);
    if (revealed.length && !reverts) {
      // Discovered: the entity comes whole with the event (the player never had it).
      const label = revealed.map((e) => `${asText(e.name)}${asText(asObject(e.data).description) ? ` — ${asText(asObject(e.data).description)}` : ""}`).join("; ");
      return el(
        "li",
        { class: "entry entry-system entry-entity entry-reveal" },
        el("span", { class: "entry-text" }, el("strong", {}, "Discovered: "), label),
        undoFor(event, `Discovered: ${revealed.map((e) => asText(e.name)).join(", ")}`),
      );
    }
    const secretly = event.visibility?.kind === "gm" ? " (hidden from the players)" : "";
    const text = reverts ? `GM undid event ${reverts}` : `${byGm ? "GM correction: " : ""}${describePatch(p.patches)}${secretly}`;
    let reason = reverts ? "" : asText(patchReasons.get(asText(p.patch_id)));
    if (byGm && /^GM (set|revert of) /.test(reason)) reason = ""; // the default reasons say nothing new
    return el(
      "li",
      { class: `entry entry-system entry-patch${byGm ? " by-gm" : ""}` },
      el("span", { class: "entry-text" }, text, reason ? el("span", { class: "entry-reason" }, ` (${reason})`) : null),
      undoFor(event, text),
    );
  },

  state_patch_rejected(event, p) {
    if (!isGm) return null; // a refused change changed nothing: only the GM needs to know
    return systemLine(`A change to the world was refused: ${asText(p.error)}`, event);
  },

  state_patch_requested(event, p) {
    patchReasons.set(asText(p.patch_id), asText(p.reason));
    return null; // its applied/rejected twin tells the story
  },

  audio_cue(event, p) {
    return systemLine(`♪ ${asText(p.cue).replaceAll("_", " ")}`, event);
  },

  dm_audio_ready() {
    return null; // the narration it speaks gets a Listen button (audio.js)
  },

  whisper(event, p) {
    const whisper = describeWhisper(event, p);
    const classes = ["entry", "entry-whisper"];
    if (whisper.mine) classes.push("mine");
    if (whisper.forMe) classes.push("to-me");
    if (whisper.fromDm) classes.push("from-dm");
    const text = asText(p.text);
    return el(
      "li",
      { class: classes.join(" ") },
      el(
        "div",
        { class: "entry-head" },
        el("span", { class: "whisper-mark", "aria-hidden": "true" }),
        whisper.shown === whisper.spoken
          ? el("span", { class: "entry-who" }, whisper.shown)
          : el("span", { class: "entry-who" }, el("span", { "aria-hidden": "true" }, whisper.shown), el("span", { class: "sr-only" }, whisper.spoken)),
        whisper.byGm ? el("span", { class: "badge badge-gm" }, "GM") : null,
        timeOf(event.created_at),
      ),
      // The DM speaks in Markdown (built as nodes); people's whispers are plain text.
      whisper.fromDm ? el("div", { class: "entry-body" }, renderMarkdown(text)) : el("p", { class: "entry-text" }, text),
    );
  },

  character_created(event, p) {
    const character = asObject(p.character);
    const ownerId = asText(character.owner_user_id);
    const who = ownerId === config.userId ? "You" : nameOf(ownerId);
    const what = describeCharacter(characterOptions, character);
    return systemLine(`${who} made ${asText(character.name) || "a character"}${what ? `, ${what.charAt(0).toLowerCase()}${what.slice(1)}` : ""}`, event);
  },

  character_updated(event, p) {
    const changes = asObject(p.changes);
    const name = table.characterName(asText(p.character_id)) || asText(changes.name) || "a character";
    const byGm = event.actor?.kind === "gm";
    const mine = event.actor?.user_id === config.userId;
    const who = mine ? "You" : byGm ? `${nameOf(event.actor?.user_id)} (GM)` : nameOf(event.actor?.user_id);
    const words = Object.entries(changes)
      .filter(([field]) => !CHARACTER_DERIVED.has(field))
      .map(([field, value]) => characterChangeWords(field, value));
    return systemLine(`${who} changed ${name}'s sheet${words.length ? `: ${words.join(", ")}` : ""}`, event);
  },

  x_card() {
    return el(
      "li",
      { class: "entry entry-system entry-xcard" },
      el("span", { class: "entry-text" }, el("span", { class: "x-card-mark", "aria-hidden": "true" }, "✕"), " ", X_CARD_WORDS),
    );
  },

  campaign_updated(event, p) {
    const node = systemLine(campaignUpdateWords(event, p), event);
    node.classList.add("entry-setup");
    return node;
  },

  summary_created(event, p) {
    return el(
      "li",
      { class: "entry entry-summary" },
      el("details", {}, el("summary", {}, "The story so far (a summary)"), el("div", { class: "entry-body" }, renderMarkdown(asText(p.text)))),
    );
  },
};

/**
 * Who whispered to whom, from where the reader sits: shown ("Alice → Bob (whisper)") and
 * spoken ("Alice whispers to Bob"); `forMe` when the reader is the one told.
 */
function describeWhisper(event, p) {
  const fromDm = event.actor?.kind === "dm";
  const fromId = asText(p.from_user_id) || asText(event.actor?.user_id);
  const to = asText(p.to);
  const toId = asText(p.to_user_id) || (to !== "gm" && to !== "dm" ? to : "");
  const mine = !fromDm && fromId === config.userId;
  const toMe = (toId && toId === config.userId) || (to === "gm" && isGm && !mine);
  const target = to === "gm" ? (isGm && mine ? "the other GMs" : "the GM") : to === "dm" ? "the DM" : nameOf(toId);
  const sender = fromDm ? "The DM" : nameOf(fromId);
  const byGm = !fromDm && event.actor?.kind === "gm" && !mine;
  let shown;
  let spoken;
  if (mine) {
    shown = spoken = `You whisper to ${target}`;
  } else if (toMe && fromDm) {
    shown = spoken = "The DM, to you alone";
  } else if (toMe) {
    shown = spoken = `${sender} whispers to you${to === "gm" ? " (the GM)" : ""}`;
  } else {
    shown = `${sender} → ${target} (whisper)`;
    spoken = `${sender} whispers to ${target}`;
  }
  return { mine, forMe: Boolean(toMe), fromDm, byGm, shown, spoken };
}

function renderGeneric(event, p) {
  const label = asText(event.type).replaceAll("_", " ") || "event";
  const text = typeof p.text === "string" ? p.text : typeof p.detail === "string" ? p.detail : "";
  const who = event.actor?.user_id ? `${nameOf(event.actor.user_id)} · ` : "";
  return systemLine(text ? `${who}${label}: ${text}` : `${who}${label}`, event);
}

/** Deltas are ephemeral: a cut connection drops the half-told narration (the final event comes). */
function dropStreams() {
  for (const [turnId, stream] of streams) {
    cancelAnimationFrame(stream.frame);
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
    cancelAnimationFrame(stream.frame);
    stream.el.remove();
    streams.delete(turnId);
  }
}

// --- Retry (CONTRACTS §7 "Retry keeps the dice") -------------------------------------------------

/**
 * The GM's Retry button goes on the latest narration (`entry`, `seq`), or nowhere (null):
 * a player's action, a failed turn or a newer narration takes it away, as the server would
 * refuse it then (409).
 */
function offerRetry(entry, seq) {
  retryButton?.remove();
  retryButton = null;
  if (!gmTools || !entry || entry.classList.contains("entry-retracted")) return;
  retryButton = gmTools.retryButton(seq);
  const head = entry.querySelector(".entry-head");
  head.insertBefore(retryButton, head.querySelector(".entry-time"));
}

/**
 * A narration the GM retried: folded away under "retried by the GM", still readable. What
 * else its turn did (changes, sound cues, private words) is greyed out, without Undo: the
 * retry undid it already. Its rolls stay as they are: the new answer is given them.
 */
function collapseRetracted(seq, turnId) {
  if (turnId) {
    for (const node of eventsList.querySelectorAll(`li[data-turn-id="${CSS.escape(turnId)}"]`)) {
      if (node.dataset.type === "roll_result" || node.dataset.type === "dm_narration") continue;
      node.classList.add("entry-undone");
      for (const button of node.querySelectorAll(".entry-undo")) button.remove();
    }
  }
  if (!Number.isInteger(seq)) return;
  const entry = eventsList.querySelector(`li[data-type="dm_narration"][data-seq="${seq}"]`);
  if (!entry || entry.classList.contains("entry-retracted")) return;
  if (retryButton && entry.contains(retryButton)) offerRetry(null);
  const details = el(
    "details",
    { class: "retracted" },
    el("summary", {}, el("span", { class: "retracted-label" }, "An earlier answer, retried by the GM"), el("span", { class: "retracted-hint" }, " (show it)")),
  );
  details.append(...entry.childNodes);
  entry.replaceChildren(details);
  entry.classList.add("entry-retracted");
}

// --- Checks the DM asks a player to roll (CONTRACTS §7 "Players roll their own checks") ---------

/** "1d20+3 for Stealth" (or just the formula). */
function rollAskWords(p) {
  const reason = asText(p.reason).trim();
  return `${asText(p.formula)}${reason ? ` for ${reason}` : ""}`;
}

function openRollAsk(p) {
  const rollId = asText(p.roll_id);
  if (!rollId || rollAsks.has(rollId)) return;
  const forUser = asText(p.for_user_id);
  const mine = forUser === config.userId;
  const ask = { payload: p, turnId: asText(p.turn_id), mine, node: null, button: null, status: null, busy: false };
  if (mine) {
    ask.button = el("button", { type: "button", class: "btn btn-primary roll-ask-button", onclick: () => answerRollAsk(rollId) }, `Roll ${rollAskWords(p)}`);
    ask.status = el("p", { class: "roll-ask-status", role: "status" });
    ask.node = el(
      "div",
      { class: "roll-ask mine", "data-roll-id": rollId },
      el("p", { class: "roll-ask-text" }, el("strong", {}, "The DM asks you to roll."), " If you wait too long, the DM rolls for you."),
      ask.button,
      ask.status,
    );
  } else {
    ask.node = el(
      "div",
      { class: "roll-ask waiting", "data-roll-id": rollId, role: "status" },
      el("span", { class: "roll-ask-dot", "aria-hidden": "true" }),
      `Waiting for ${nameOf(forUser)} to roll ${rollAskWords(p)}…`,
    );
  }
  rollAsks.set(rollId, ask);
  rollAsksBox.append(ask.node);
  rollAsksBox.hidden = false;
  updateRollAsks();
}

/** The roll's result came (the player's, or the server's after the wait): the ask is done. */
function closeRollAsk(rollId) {
  const ask = rollAsks.get(rollId);
  if (!ask) return;
  ask.node.remove();
  rollAsks.delete(rollId);
  rollAsksBox.hidden = rollAsks.size === 0;
}

/** The turn that asked is over (narrated or failed): nothing waits for its rolls any more. */
function closeRollAsksOf(turnId) {
  if (!turnId) return;
  for (const [rollId, ask] of [...rollAsks]) if (ask.turnId === turnId) closeRollAsk(rollId);
}

function answerRollAsk(rollId) {
  const ask = rollAsks.get(rollId);
  if (!ask || ask.busy) return;
  const p = ask.payload;
  const sent = dice.answer({ rollId, formula: asText(p.formula), reason: asText(p.reason) }, (text, tone) => {
    ask.status.textContent = text;
    ask.status.dataset.tone = tone;
    if (tone === "error") {
      ask.busy = false;
      updateRollAsks();
    }
  });
  if (sent) {
    ask.busy = true;
    updateRollAsks();
  }
}

function updateRollAsks() {
  for (const ask of rollAsks.values()) {
    if (!ask.button) continue;
    const waiting = !stopped && !live;
    ask.button.disabled = stopped || waiting || ask.busy;
    ask.button.textContent = ask.busy ? "Rolling…" : `Roll ${rollAskWords(ask.payload)}`;
    ask.button.title = waiting ? "Waiting for the connection" : "";
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
            input.value = plainText(option); // what it says, without the Markdown marks
            updateCount();
            submitAction();
          },
        },
        renderInline(document.createDocumentFragment(), option),
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

/** Rounds mode: whom the table waits for before the DM answers (empty: nobody). */
function renderRoundWaiting(userIds) {
  let box = document.getElementById("round-waiting");
  if (!box) {
    box = el("p", { id: "round-waiting", class: "muted", role: "status" });
    onlineList.after(box);
  }
  const who = userIds.map((id) => (id === config.userId ? "you" : names.get(asText(id)) || "a player"));
  box.hidden = who.length === 0;
  box.textContent = who.length ? `The table waits for: ${who.join(", ")}.` : "";
}

// --- Sending actions ---------------------------------------------------------------------------

function submitAction() {
  if (stopped) return;
  if (archived) {
    showNote(ARCHIVED_WORDS, "error");
    return;
  }
  const text = input.value.trim();
  if (!text) return;
  if (text.startsWith("/")) {
    // A command is answered here and never goes to the DM as story.
    if (runCommand(text)) {
      input.value = "";
      updateCount();
    }
    return;
  }
  hideNote();
  if (text.length > maxChars) {
    // Refused here, the text kept: nothing is ever cut without a word.
    showNote(
      `Your action has ${text.length.toLocaleString("en")} characters, ${(text.length - maxChars).toLocaleString("en")} more than the ${maxChars.toLocaleString("en")} an action may have. Shorten it; nothing was sent.`,
      "error",
    );
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
  if (action.state !== "acked" && action.state !== "sent") action.state = "queued";
  updatePending(action);
  flushOutbox();
}

/**
 * The outbox: actions leave one at a time, in the order they were typed; the next goes
 * once the server has answered the one before (acked, refused, or its event arrived). A
 * throttled one is sent again after its wait, and those typed after it wait behind it.
 * Before server.ready the hello's backlog may still hold an action's event: nothing goes.
 */
function flushOutbox() {
  for (const [actionId, action] of pending) {
    if (action.state === "sent" || (action.state === "queued" && action.retryTimer)) return;
    if (action.state !== "queued") continue;
    if (live && send({ type: "client.player_action", action_id: actionId, text: action.text })) {
      action.state = "sent";
    }
    updatePending(action);
    return;
  }
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
    queued: live ? (action.note ? "Sending again shortly…" : "Sending…") : "Waiting for the connection…",
    sent: "Sending…",
    acked: "Delivered",
  };
  state.replaceChildren(el("span", {}, labels[action.state] || ""), action.note ? el("span", { class: "pending-note" }, action.note) : null);
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
  clearTimeout(action.retryTimer);
  action.el?.remove();
  pending.delete(actionId);
  flushOutbox();
  input.focus();
}

/** A player_action event settles the pending entry with its action_id. */
function settleFromEvent(event) {
  if (event.type !== "player_action") return;
  const actionId = asText(event.payload?.action_id);
  const action = pending.get(actionId);
  if (!action) return;
  clearTimeout(action.retryTimer);
  action.el?.remove();
  pending.delete(actionId);
  flushOutbox(); // in case its ack never comes (a lost one): the next goes anyway
}

// --- Commands typed in the action box ----------------------------------------------------------

/** The commands, as /help lists them: [name, what to type, what it does, run(args) -> cleared]. */
const COMMANDS = [
  ["roll", "/roll 1d20+3 Stealth", "roll dice everyone sees; add dc 15 after the dice for a target (/roll 1d20+3 dc 15 Stealth)", (args, typed) => dice.command(args, { typed })],
  ["gmroll", "/gmroll 1d20+2 Insight", "the same roll, seen only by you and the GM", (args, typed) => dice.command(args, { secret: true, typed })],
  ["help", "/help", "this list", () => {
    showHelp();
    return true;
  }],
];

/** Run "/name args"; returns whether the action box may be cleared. */
function runCommand(text) {
  const match = text.match(/^\/(\S*)\s*([\s\S]*)$/);
  const name = (match?.[1] || "").toLowerCase();
  const command = COMMANDS.find(([known]) => known === name);
  if (!command) {
    showNote(
      el("span", {}, `Unknown command ${name ? `/${name.slice(0, 30)}` : "/"}: nothing was sent. Type `, el("code", {}, "/help"), " for the commands."),
      "error",
    );
    return false;
  }
  return command[3](match[2].trim(), text);
}

function showHelp() {
  showNote(
    el(
      "div",
      {},
      el("strong", {}, "Commands"),
      " (answered here, never sent to the DM):",
      el(
        "ul",
        {},
        COMMANDS.map(([, example, what]) => el("li", {}, el("code", {}, example), ` — ${what}`)),
      ),
      "Anything else you type is your character's action.",
    ),
    "info",
  );
}

/** What a command answers, under the action box: text or nodes, `tone` error, info or ok. */
function showNote(content, tone = "info") {
  composerNote.dataset.tone = tone;
  composerNote.setAttribute("role", tone === "error" ? "alert" : "status");
  composerNote.replaceChildren(
    el("div", { class: "composer-note-body" }, content),
    el("button", { type: "button", class: "btn btn-ghost", "aria-label": "Close this note", onclick: () => hideNote(true) }, "Close"),
  );
  composerNote.hidden = false;
}

function hideNote(focus = false) {
  composerNote.hidden = true;
  composerNote.replaceChildren();
  if (focus) input.focus();
}

// --- Composer ----------------------------------------------------------------------------------

/** The counter under the action box: "12 / 2000"; near the limit "150 characters left";
 * past it "30 characters over the limit" (sending is then refused, the text kept). */
function updateCount() {
  const length = input.value.length;
  const left = maxChars - length;
  const level = left < 0 ? "over" : left < WARN_REMAINING ? "near" : "ok";
  if (level === "over") charCount.textContent = `${(-left).toLocaleString("en")} ${-left === 1 ? "character" : "characters"} over the limit`;
  else if (level === "near") charCount.textContent = `${left.toLocaleString("en")} ${left === 1 ? "character" : "characters"} left`;
  else charCount.textContent = `${length} / ${maxChars}`;
  charCount.classList.toggle("near", level === "near");
  charCount.classList.toggle("over", level === "over");
  charCount.dataset.level = level;
  input.toggleAttribute("aria-invalid", level === "over");
  if (level !== countLevel) {
    // Said once as the limit comes near or is passed, not at every key.
    if (level === "near" && countLevel === "ok") announce(`${left} characters left before the limit.`);
    if (level === "over") announce(`Past the limit of ${maxChars} characters: shorten the action to send it.`);
    countLevel = level;
  }
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

// --- Phone: the table and the story take turns on the screen -------------------------------

function showPanel(panel) {
  const table = panel === "table";
  room.dataset.panel = table ? "table" : "story";
  panelToggle.setAttribute("aria-expanded", String(table));
  // Short, so that the phone bar keeps room for the HP number beside it.
  panelToggle.textContent = table ? "Story" : "Table & sheet";
  if (table) panelToggle.setAttribute("aria-label", "Back to the story");
  else panelToggle.removeAttribute("aria-label");
  if (table) document.getElementById("room-side").focus?.({ preventScroll: true });
  else scrollToBottom();
}

panelToggle.addEventListener("click", () => showPanel(room.dataset.panel === "table" ? "story" : "table"));
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape" && room.dataset.panel === "table" && !maker.isOpen()) {
    showPanel("story");
    panelToggle.focus();
  }
});
document.getElementById("room-side").setAttribute("tabindex", "-1");

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

// --- The GM role changed hands: this page becomes the new role's ------------------------------

/**
 * The snapshot says this member's role is not the one the page was made for (the GM role
 * was handed to them, or by them): the page reloads as the new role's, keeping what was
 * typed in the action box (restored by `restoreDraft`). Said first, then done once.
 */
function followRole(state) {
  const role = asText(asObject(asObject(state.members)[config.userId]).role);
  if (role === config.role) forgetRoleReload(); // this page is the right one
  if (!role || role === config.role || roleReloading) return;
  roleReloading = true;
  const title = role === "gm" ? "You are the game master now." : "You handed the GM role on: you are a player now.";
  if (reloadedForRoleJustNow()) {
    // The page was just reloaded for this and still disagrees: no loop, a button instead.
    roleReloading = false;
    setBanner("role", {
      tone: "info",
      title,
      text: "Reload the page for your new tools.",
      actions: [el("button", { type: "button", class: "btn btn-secondary btn-small", onclick: () => location.reload() }, "Reload")],
    });
    return;
  }
  saveDraft();
  setBanner("role", { tone: "info", role: "alert", title, text: "The page reloads with your new tools; what you typed stays in the box." });
  try {
    sessionStorage.setItem(ROLE_RELOAD_KEY, String(Date.now()));
  } catch {
    // Not kept: at worst one more reload.
  }
  setTimeout(() => location.reload(), 1200);
}

function forgetRoleReload() {
  try {
    sessionStorage.removeItem(ROLE_RELOAD_KEY);
  } catch {
    // Nothing kept.
  }
}

function reloadedForRoleJustNow() {
  try {
    const at = Number(sessionStorage.getItem(ROLE_RELOAD_KEY));
    return Number.isFinite(at) && Date.now() - at < 30_000;
  } catch {
    return false;
  }
}

function saveDraft() {
  try {
    const draft = input.value;
    if (draft.trim()) sessionStorage.setItem(DRAFT_KEY, JSON.stringify({ campaignId: config.campaignId, text: draft }));
  } catch {
    // Storage blocked: the draft is lost with the reload, nothing worse.
  }
}

function restoreDraft() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(DRAFT_KEY) || "null");
    sessionStorage.removeItem(DRAFT_KEY);
    if (saved && saved.campaignId === config.campaignId && typeof saved.text === "string" && !input.value) {
      input.value = saved.text;
    }
  } catch {
    // Nothing kept, or not readable: an empty box.
  }
}

// --- Leaving the campaign (CONTRACTS §7 "GM controls") ------------------------------------------

leaveButton?.addEventListener("click", async () => {
  if (!window.confirm("Leave this campaign? Your character leaves the party and the room closes for you. You can come back later with the invite code.")) return;
  leaveButton.disabled = true;
  leaving = true;
  const result = await api(`/api/campaigns/${config.campaignId}/leave`, { method: "POST" });
  if (result.ok) {
    leaveStatus.textContent = "You left the campaign. Back to your campaigns…";
    location.assign("/campaigns/");
    return;
  }
  leaving = false;
  leaveButton.disabled = false;
  leaveStatus.textContent = `You are still here: ${errorDetail(result)}`;
  leaveStatus.classList.add("gm-error");
});

room.dataset.panel = "story";
restoreDraft();
updateCount();
showArchived(archived, false);
// "Previously on…" is read before this page's socket can ever close (that moves the mark).
recap.load();
// Arriving from the join form (…/#make-character): the character form opens at once.
if (location.hash === "#make-character" && !isGm) {
  history.replaceState(null, "", location.pathname + location.search);
  table.refreshNow().then(() => {
    const own = table.characters().find((c) => c.owner_user_id === config.userId);
    if (own && !own.sheet) maker.open();
  });
} else {
  table.refreshNow();
}
connect();

// For tests and debugging: what this page has shown, read-only.
window.rpgaiRoom = Object.freeze({
  lastSeq: () => lastSeq,
  isLive: () => live,
  dropConnection: () => socket?.close(4000, "test"),
});
