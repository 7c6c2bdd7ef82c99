/**
 * The room's voice: plays the DM's narration segment by segment, in order, as the
 * `dm_audio_ready` events arrive, and marks the text being spoken.
 *
 *   import { createVoicePlayer } from "/static/voice/player.js";
 *   const voice = createVoicePlayer({ root: document.getElementById("log") });
 *   // for every event envelope the room receives (live or catch-up), in seq order:
 *   voice.handleEvent(envelope);          // ignores every type but dm_audio_ready
 *   someContainer.append(voice.toggle()); // an "autoplay voice" checkbox (optional)
 *
 * Order: narrations by `narration_seq`, within one by `segment` (0 .. segments-1). A
 * segment that never comes (its synthesis failed) is skipped after `gapTimeoutMs` once a
 * later one is waiting. Audio older than `staleMs` (a catch-up after reconnecting) is
 * remembered but not played by itself; `playNarration(seq)` plays any narration on demand.
 *
 * Autoplay is each player's choice, kept in localStorage (`storageKey`, default on). A
 * browser that blocks audio before the first click or key press is retried on the
 * next one.
 *
 * Highlighting: while segment k of narration n plays, the narration's element (found by
 * `[data-type="dm_narration"][data-seq="n"]` or `[data-narration-seq="n"]` inside
 * `root`) gets `data-voice-playing="k"`, and the segment's own element gets
 * `data-voice-speaking`. The segment's element is `[data-voice-segment="k"]` inside the
 * narration's element; if the room rendered none, the player wraps the segment's text
 * (the event's `text`, verbatim from the narration) in `<span data-voice-segment="k">`
 * inside the narration's text (`textSelector`, else the element itself) when it lies in
 * one text node; otherwise nothing is wrapped and only the narration is marked. Style:
 *   [data-voice-speaking] { background: ... }     (voice/player.css has a default)
 *
 * `onChange({ autoplay, playing, blocked })` is called whenever that changes; `playing`
 * is the payload of the segment playing now (narration_seq, segment, segments, text,
 * speaker, ...) or null.
 *
 * Speech while the DM narrates (issue 23): `handleStreamed(message)` takes the room's
 * `narration.audio` messages {turn_id, segment, text, url, duration_ms}, sentences of a
 * narration still streaming, and plays them in order after any committed narration still
 * playing, marking the sentence in the streaming element (`[data-stream-turn="<turn>"]`).
 * When the turn ends, `endStream(turnId, { text, failed })` keeps only the sentences the
 * committed narration kept (all go when it failed or fell back); the narration's
 * `dm_audio_ready` events (which carry its `turn_id`) point at the same audio, and what
 * was heard already is not played twice. The module-level `voiceStreamed`,
 * `voiceTurnEnded` and `voiceRefresh` reach every player of the page (the room makes its
 * player in audio.js and receives the messages in room.js).
 */

const players = new Set();

/** A `narration.audio` message, for every voice player of the page. */
export function voiceStreamed(message) {
  for (const player of players) player.handleStreamed(message);
}

/** The turn's narration committed (`text`, `fallback`) or failed (`failed`). */
export function voiceTurnEnded(turnId, ending = {}) {
  for (const player of players) player.endStream(turnId, ending);
}

/** The streaming text was drawn again: the sentence being spoken is marked again. */
export function voiceRefresh() {
  for (const player of players) player.refresh();
}

const AUDIO_URL = /^(\/(?!\/)|https?:\/\/)/i; // our own path or http(s); never javascript: or data:

function payloadOf(event) {
  return event && typeof event.payload === "object" && event.payload ? event.payload : {};
}

function intOr(value, fallback) {
  return Number.isInteger(value) && value >= 0 ? value : fallback;
}

export function createVoicePlayer({
  root = document,
  storageKey = "rpgai.voice.autoplay",
  autoplayDefault = true,
  gapTimeoutMs = 8000,
  staleMs = 120000,
  volume = 1,
  textSelector = ".entry-body, .entry-text",
  onChange = null,
} = {}) {
  /** narration seq -> { total, segments: Map<index, payload>, next, manual } */
  const narrations = new Map();
  const finished = new Set(); // narration seqs fully played or passed over
  /** turn id -> { segments: Map<index, payload>, next, ended } of narrations streaming */
  const streams = new Map();
  const heard = new Set(); // URLs played as the narration streamed: not played again
  const turnNarration = new Map(); // turn id -> its narration seq, once its audio came
  const stoppedTurns = new Set(); // stopped while streaming: their narration is not played on
  const audio = new Audio();
  audio.preload = "auto";
  audio.volume = volume;
  let current = null; // { seq, index, payload }
  let waitingFor = ""; // "seq:index" of the segment the queue waits for
  let waitingSince = 0;
  let gapTimer = null;
  let blocked = false;
  let autoplay = readAutoplay();

  function readAutoplay() {
    try {
      const stored = window.localStorage.getItem(storageKey);
      return stored === null ? autoplayDefault : stored === "1";
    } catch {
      return autoplayDefault; // storage disabled: the default, not remembered
    }
  }

  function setAutoplay(on) {
    autoplay = Boolean(on);
    try {
      window.localStorage.setItem(storageKey, autoplay ? "1" : "0");
    } catch {
      /* storage disabled: the choice lasts for this page only */
    }
    if (!autoplay) stop();
    else pump();
    changed();
  }

  function changed() {
    if (typeof onChange === "function") {
      onChange({ autoplay, playing: current ? { ...current.payload } : null, blocked });
    }
  }

  // --- Highlighting ----------------------------------------------------------------------

  function narrationElement(seq) {
    if (!root || typeof root.querySelector !== "function") return null;
    return (
      root.querySelector(`[data-type="dm_narration"][data-seq="${seq}"]`) ||
      root.querySelector(`[data-narration-seq="${seq}"]`)
    );
  }

  /** The segment's element; wraps its text in a span when the room rendered none. */
  function segmentElement(host, index, text) {
    const existing = host.querySelector(`[data-voice-segment="${index}"]`);
    if (existing || !text) return existing;
    const container = host.querySelector(textSelector) || host;
    const walker = document.createTreeWalker(container, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      if (node.parentElement && node.parentElement.closest("[data-voice-segment]")) continue;
      const at = node.data.indexOf(text);
      if (at < 0) continue;
      const middle = at > 0 ? node.splitText(at) : node;
      middle.splitText(text.length);
      const span = document.createElement("span");
      span.dataset.voiceSegment = String(index);
      middle.replaceWith(span);
      span.append(middle);
      return span;
    }
    return null; // not found verbatim: the whole narration stays marked instead
  }

  function streamElement(turnId) {
    if (!root || typeof root.querySelector !== "function") return null;
    // The streaming text is outside the log (the room draws it below the events).
    const all = (root.ownerDocument || document).querySelectorAll("[data-stream-turn]");
    for (const node of all) if (node.dataset.streamTurn === turnId) return node;
    return null;
  }

  function mark(seq, index, text, on, turnId = null) {
    const host = turnId ? streamElement(turnId) : narrationElement(seq);
    if (!host) return;
    if (on) host.dataset.voicePlaying = String(index);
    else delete host.dataset.voicePlaying;
    const part = on ? segmentElement(host, index, text) : host.querySelector(`[data-voice-segment="${index}"]`);
    if (!part) return;
    if (on) part.setAttribute("data-voice-speaking", "");
    else part.removeAttribute("data-voice-speaking");
  }

  // --- The queue ---------------------------------------------------------------------------

  function handleEvent(event) {
    if (!event || event.type !== "dm_audio_ready") return;
    const p = payloadOf(event);
    const seq = intOr(p.narration_seq, -1);
    const url = typeof p.url === "string" ? p.url : "";
    if (seq < 1 || !AUDIO_URL.test(url)) return;
    const index = intOr(p.segment, 0);
    const total = Math.max(intOr(p.segments, 1), index + 1);
    let narration = narrations.get(seq);
    if (!narration) {
      const created = Date.parse(event.created_at || "");
      const stale = Number.isFinite(created) && Date.now() - created > staleMs;
      narration = { total, segments: new Map(), next: 0, manual: false, stale };
      narrations.set(seq, narration);
      if (stale) finished.add(seq); // heard (or missed) before: not played by itself
    }
    narration.total = Math.max(narration.total, total);
    narration.segments.set(index, { ...p, url, segment: index, segments: total });
    const turnId = typeof p.turn_id === "string" ? p.turn_id : "";
    if (turnId && !turnNarration.has(turnId)) {
      // The streamed sentences are this narration's now: its own events say which.
      turnNarration.set(turnId, seq);
      const stream = streams.get(turnId);
      if (stream) stream.ended = true;
      if (stoppedTurns.has(turnId)) finished.add(seq);
    }
    pump();
  }

  /** A `narration.audio` message: a sentence of a narration still streaming. */
  function handleStreamed(message) {
    if (!message || typeof message !== "object") return;
    const turnId = typeof message.turn_id === "string" ? message.turn_id : "";
    const url = typeof message.url === "string" ? message.url : "";
    const index = intOr(message.segment, -1);
    if (!turnId || index < 0 || !AUDIO_URL.test(url) || turnNarration.has(turnId)) return;
    let stream = streams.get(turnId);
    if (!stream) {
      stream = { segments: new Map(), next: 0, ended: false };
      streams.set(turnId, stream);
    }
    if (stream.ended) return;
    const text = typeof message.text === "string" ? message.text : "";
    stream.segments.set(index, { turn_id: turnId, url, text, segment: index, duration_ms: message.duration_ms, streamed: true });
    pump();
  }

  /** The turn's narration is committed, or the turn failed: its stream plays no more
   * than what the narration kept (nothing if it failed or fell back). */
  function endStream(turnId, { text = "", failed = false, fallback = false } = {}) {
    const stream = streams.get(turnId);
    if (!stream) return;
    const drop = failed || fallback;
    for (const [index, segment] of stream.segments) {
      if (drop || (segment.text && !String(text).includes(segment.text))) stream.segments.delete(index);
    }
    if (drop) {
      stream.ended = true;
      if (current && current.turnId === turnId) {
        // What is being said was not the DM's answer after all.
        audio.pause();
        mark(null, current.index, current.payload.text, false, turnId);
        current = null;
        changed();
        pump();
      }
    }
  }

  /** Mark again the streamed sentence being spoken (its element was drawn again). */
  function refresh() {
    if (current && current.turnId) mark(null, current.index, current.payload.text, true, current.turnId);
  }

  /** The narration to play now: a manual request first, else the oldest one unfinished. */
  function nextNarration() {
    let best = null;
    for (const [seq, narration] of narrations) {
      if (finished.has(seq) && !narration.manual) continue;
      if (!autoplay && !narration.manual) continue;
      if (narration.manual) return seq;
      if (best === null || seq < best) best = seq;
    }
    return best;
  }

  function laterAudioWaiting(seq, narration) {
    for (const index of narration.segments.keys()) if (index > narration.next) return true;
    for (const [other, n] of narrations) if (other > seq && !finished.has(other) && n.segments.size) return true;
    for (const stream of streams.values()) if (!stream.ended && stream.segments.size) return true;
    return false;
  }

  function advance(seq, narration) {
    narration.next += 1;
    if (narration.next >= narration.total) {
      narration.manual = false;
      narration.next = 0;
      finished.add(seq);
    }
  }

  /** The streaming turn to play from now: the oldest with its next sentence here. */
  function nextStream() {
    if (!autoplay) return null;
    for (const [turnId, stream] of streams) {
      if (stream.ended) continue; // its narration's own events play the rest
      return stream.segments.has(stream.next) ? turnId : null; // in order: wait for it
    }
    return null;
  }

  function pump() {
    if (current || blocked) return;
    clearTimeout(gapTimer);
    gapTimer = null;
    const seq = nextNarration();
    if (seq === null) {
      const turnId = nextStream();
      if (turnId !== null) {
        const stream = streams.get(turnId);
        playStreamed(turnId, stream, stream.segments.get(stream.next));
      }
      return;
    }
    const narration = narrations.get(seq);
    const segment = narration.segments.get(narration.next);
    if (segment && !narration.manual && heard.has(segment.url)) {
      advance(seq, narration); // heard as the narration streamed
      pump();
      return;
    }
    if (!segment) {
      // Wait for it (its arrival calls pump); once something later is waiting too,
      // give up on it after gapTimeoutMs (a synthesis that failed).
      const key = `${seq}:${narration.next}`;
      if (waitingFor !== key) {
        waitingFor = key;
        waitingSince = Date.now();
      }
      if (!laterAudioWaiting(seq, narration)) return;
      const waited = Date.now() - waitingSince;
      if (waited >= gapTimeoutMs) {
        waitingFor = "";
        advance(seq, narration);
        pump();
        return;
      }
      gapTimer = setTimeout(pump, gapTimeoutMs - waited);
      return;
    }
    waitingFor = "";
    play(seq, narration, segment);
  }

  function playStreamed(turnId, stream, segment) {
    heard.add(segment.url);
    current = { seq: null, turnId, index: segment.segment, payload: segment };
    mark(null, segment.segment, segment.text, true, turnId);
    start(segment, () => {
      stream.next += 1; // a broken sentence: go on with the next
    });
  }

  function play(seq, narration, segment) {
    current = { seq, index: segment.segment, payload: segment };
    mark(seq, segment.segment, segment.text, true);
    start(segment, () => advance(seq, narration));
  }

  function start(segment, skipBroken) {
    const { seq, turnId } = current;
    audio.src = segment.url;
    changed();
    const started = audio.play();
    if (started && typeof started.catch === "function") {
      started.catch((error) => {
        if (!current || current.payload !== segment) return;
        mark(seq, segment.segment, segment.text, false, turnId);
        current = null;
        if (error && error.name === "NotAllowedError") {
          // No user gesture yet: try again at the first click or key press.
          blocked = true;
          const retry = () => {
            blocked = false;
            pump();
          };
          document.addEventListener("pointerdown", retry, { once: true });
          document.addEventListener("keydown", retry, { once: true });
        } else {
          skipBroken(); // a broken segment: go on with the next
          setTimeout(pump, 0);
        }
        changed();
      });
    }
  }

  function finishCurrent() {
    if (!current) return;
    const { seq, index, payload, turnId } = current;
    mark(seq, index, payload.text, false, turnId);
    current = null;
    if (turnId) {
      const stream = streams.get(turnId);
      if (stream) stream.next = index + 1;
    } else {
      const narration = narrations.get(seq);
      if (narration) advance(seq, narration);
    }
    changed();
    pump();
  }

  audio.addEventListener("ended", finishCurrent);
  audio.addEventListener("error", () => {
    if (current) finishCurrent();
  });

  /** Stop what plays now; with autoplay on, queued narrations still follow. */
  function stop() {
    if (current) {
      mark(current.seq, current.index, current.payload.text, false, current.turnId);
      const stream = current.turnId ? streams.get(current.turnId) : null;
      if (stream) {
        stream.ended = true; // stopped: the rest of it is not played by itself
        stoppedTurns.add(current.turnId);
      }
      const narration = narrations.get(current.seq);
      if (narration) {
        narration.manual = false;
        narration.next = 0;
        finished.add(current.seq);
      }
      current = null;
    }
    audio.pause();
    audio.removeAttribute("src");
    changed();
  }

  /** Skip the segment playing now. */
  function skip() {
    if (!current) return;
    audio.pause();
    finishCurrent();
  }

  /** Play a narration from its first segment (a "play" button beside it). */
  function playNarration(seq) {
    const narration = narrations.get(Number(seq));
    if (!narration) return false;
    stop();
    narration.next = 0;
    narration.manual = true;
    finished.delete(Number(seq));
    pump();
    return true;
  }

  /** Whether this narration has audio (to show a play button beside it). */
  function hasAudio(seq) {
    const narration = narrations.get(Number(seq));
    return Boolean(narration && narration.segments.size);
  }

  /** A checkbox for the autoplay preference, kept in sync. */
  function toggle(labelText = "Speak the DM's narration") {
    const label = document.createElement("label");
    label.className = "voice-autoplay";
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = autoplay;
    box.addEventListener("change", () => setAutoplay(box.checked));
    label.append(box, " ", labelText);
    return label;
  }

  const player = {
    handleEvent,
    handleStreamed,
    endStream,
    refresh,
    playNarration,
    hasAudio,
    stop,
    skip,
    toggle,
    setAutoplay,
    get autoplay() {
      return autoplay;
    },
    get playing() {
      return current ? { ...current.payload } : null;
    },
  };
  players.add(player);
  return player;
}

let shared = null;

/** The simplest use: call with every `dm_audio_ready` envelope; one player per page. */
export function voiceAudioReady(event, options = {}) {
  if (!shared) shared = createVoicePlayer(options);
  shared.handleEvent(event);
  return shared;
}
