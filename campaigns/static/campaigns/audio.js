// Sound in the room: the DM's narration spoken segment by segment (voice/player.js plays
// the `dm_audio_ready` events in order), the spoken segment highlighted in the text, a
// Listen/Stop button on each narration that has audio, and the DM's sound cues
// (`audio_cue`) when a sound file is configured for them.
//
// One switch, remembered in this browser, turns autoplay of both on or off. Browsers
// refuse sound before the page has had a click or a key press; the player retries then.

import { createVoicePlayer } from "../voice/player.js";
import { asObject, asText, el, safeUrl } from "./dom.js";

const HIGHLIGHT = "spoken-segment";
const IGNORED_IN_MATCH = /[*_#`~\s]/;

/**
 * Where the segment's text is in the narration's rendered text, as a DOM Range. The
 * segment is verbatim from the Markdown source; the page shows it without the marks and
 * split over <strong>/<em> nodes, so both are compared without marks and whitespace.
 */
export function findTextRange(root, needle) {
  const wanted = [...asText(needle)].filter((ch) => !IGNORED_IN_MATCH.test(ch)).join("");
  if (!root || !wanted) return null;
  let flat = "";
  const where = [];
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const data = node.data;
    for (let i = 0; i < data.length; i += 1) {
      if (IGNORED_IN_MATCH.test(data[i])) continue;
      flat += data[i];
      where.push([node, i]);
    }
  }
  let at = flat.indexOf(wanted);
  let length = wanted.length;
  if (at < 0 && wanted.length > 24) {
    // A segment that does not match whole (list marks, quotes) still finds its start.
    at = flat.indexOf(wanted.slice(0, 24));
    length = 24;
  }
  if (at < 0) return null;
  const range = document.createRange();
  const [startNode, startOffset] = where[at];
  const [endNode, endOffset] = where[at + length - 1];
  range.setStart(startNode, startOffset);
  range.setEnd(endNode, endOffset + 1);
  return range;
}

export function createAudio({ toggle, feedEvents, announce }) {
  const withAudio = new Set(); // narration seqs that have a Listen button
  let state = { autoplay: true, playing: null, blocked: false };

  const voice = createVoicePlayer({ root: feedEvents, onChange: (change) => render(change) });
  state.autoplay = voice.autoplay;

  function entryOf(seq) {
    return feedEvents.querySelector(`li[data-type="dm_narration"][data-seq="${Number(seq)}"]`);
  }

  function render(change) {
    const was = state.playing;
    state = { ...state, ...change };
    renderToggle();
    highlight();
    for (const seq of new Set([Number(was?.narration_seq), Number(state.playing?.narration_seq)])) {
      if (withAudio.has(seq)) renderControl(seq);
    }
  }

  function renderToggle() {
    toggle.setAttribute("aria-pressed", String(state.autoplay));
    const label = state.autoplay ? (state.blocked ? "on · tap to start" : "on") : "off";
    toggle.querySelector(".audio-toggle-state").textContent = label;
  }

  /** The player marks a segment it finds verbatim; Markdown-split text gets a Range. */
  function highlight() {
    if (globalThis.CSS?.highlights) CSS.highlights.delete(HIGHLIGHT);
    for (const old of feedEvents.querySelectorAll(".segment-fallback")) old.classList.remove("segment-fallback");
    const playing = state.playing;
    if (!playing) return;
    const entry = entryOf(playing.narration_seq);
    if (!entry || entry.querySelector("[data-voice-speaking]")) return;
    const body = entry.querySelector(".entry-body");
    const range = body ? findTextRange(body, playing.text) : null;
    if (range && globalThis.Highlight && globalThis.CSS?.highlights) {
      CSS.highlights.set(HIGHLIGHT, new Highlight(range));
    } else {
      body?.classList.add("segment-fallback");
    }
  }

  toggle.addEventListener("click", () => voice.setAutoplay(!voice.autoplay));
  renderToggle();

  function renderControl(seq) {
    const entry = entryOf(seq);
    if (!entry) return;
    let box = entry.querySelector(".entry-audio");
    if (!box) {
      const button = el("button", {
        type: "button",
        class: "btn btn-ghost btn-tiny audio-listen",
        onclick: () => {
          if (Number(state.playing?.narration_seq) === seq) voice.stop();
          else voice.playNarration(seq);
        },
      });
      box = el("div", { class: "entry-audio" }, button, el("span", { class: "audio-progress muted small" }));
      entry.append(box);
    }
    const playing = Number(state.playing?.narration_seq) === seq;
    const button = box.querySelector(".audio-listen");
    button.textContent = playing ? "■ Stop" : "▶ Listen";
    button.setAttribute("aria-label", playing ? "Stop the narration's speech" : "Listen to this narration");
    const total = Number(state.playing?.segments) || 1;
    box.querySelector(".audio-progress").textContent = playing ? `Speaking ${Number(state.playing.segment) + 1} of ${total}` : "";
    entry.classList.toggle("speaking", playing);
  }

  /** Every event, live or caught up, in seq order: the player wants them all. */
  function onEvent(event) {
    if (event.type !== "dm_audio_ready") return;
    voice.handleEvent(event);
    const seq = Number(asObject(event.payload).narration_seq);
    if (Number.isInteger(seq) && voice.hasAudio(seq)) {
      withAudio.add(seq);
      renderControl(seq);
    }
  }

  /** An `audio_cue` event: play its sound when one is configured and autoplay is on. */
  function onCue(event, live) {
    const p = asObject(event.payload);
    const url = safeUrl(p.url);
    if (!live || !voice.autoplay || !url) return;
    const cue = new Audio(url);
    const volume = Number(p.volume);
    cue.volume = Number.isFinite(volume) ? Math.min(1, Math.max(0, volume)) : 1;
    cue.play().catch(() => announce?.(`The sound cue ${asText(p.cue)} could not play.`));
  }

  return { onEvent, onCue, stop: () => voice.stop() };
}
