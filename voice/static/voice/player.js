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
 */

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

  function mark(seq, index, text, on) {
    const host = narrationElement(seq);
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
    pump();
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

  function pump() {
    if (current || blocked) return;
    clearTimeout(gapTimer);
    gapTimer = null;
    const seq = nextNarration();
    if (seq === null) return;
    const narration = narrations.get(seq);
    const segment = narration.segments.get(narration.next);
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

  function play(seq, narration, segment) {
    current = { seq, index: segment.segment, payload: segment };
    mark(seq, segment.segment, segment.text, true);
    audio.src = segment.url;
    changed();
    const started = audio.play();
    if (started && typeof started.catch === "function") {
      started.catch((error) => {
        if (!current || current.payload !== segment) return;
        mark(seq, segment.segment, segment.text, false);
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
          advance(seq, narration); // a broken segment: go on with the next
          setTimeout(pump, 0);
        }
        changed();
      });
    }
  }

  function finishCurrent() {
    if (!current) return;
    const { seq, index, payload } = current;
    mark(seq, index, payload.text, false);
    current = null;
    const narration = narrations.get(seq);
    if (narration) advance(seq, narration);
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
      mark(current.seq, current.index, current.payload.text, false);
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

  return {
    handleEvent,
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
}

let shared = null;

/** The simplest use: call with every `dm_audio_ready` envelope; one player per page. */
export function voiceAudioReady(event, options = {}) {
  if (!shared) shared = createVoicePlayer(options);
  shared.handleEvent(event);
  return shared;
}
