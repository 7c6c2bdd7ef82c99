// "Previously on…" (CONTRACTS §7 "Recap and journal"): as the room opens, it reads the
// member's recap (GET /api/campaigns/<id>/recap: since where they left, only what they may
// see, no model call). When the server advises the card (`card`: away an hour or more and
// something to tell), it is shown above the story until dismissed. The text is plain text
// (names, actions and narrations as the server tells them), never HTML.

import { api, asObject, asText, el } from "./dom.js";

/** "about an hour", "3 days": how long a member was away, in round words. */
export function awayWords(seconds) {
  const s = Number(seconds);
  if (!Number.isFinite(s) || s < 0) return "";
  const hours = s / 3600;
  if (hours < 1.5) return "about an hour";
  if (hours < 36) return `${Math.round(hours)} hours`;
  const days = Math.round(hours / 24);
  if (days < 14) return `${days} days`;
  const weeks = Math.round(days / 7);
  return weeks < 9 ? `${weeks} weeks` : `${Math.round(days / 30)} months`;
}

export function createRecap({ config, box, journalUrl, onShown, onDismissed }) {
  const url = `/api/campaigns/${config.campaignId}/recap`;

  function dismiss() {
    box.hidden = true;
    box.replaceChildren();
    onDismissed?.();
  }

  function show(recap) {
    const paragraphs = asText(recap.text)
      .split(/\n\s*\n/)
      .map((part) => part.trim())
      .filter(Boolean);
    if (!paragraphs.length) return;
    // The server's first paragraph is the title ("Previously on The Sunken Crown…").
    const title = /^previously on/i.test(paragraphs[0]) ? paragraphs.shift() : "Previously on…";
    const away = awayWords(recap.away_seconds);
    box.replaceChildren(
      el(
        "div",
        { class: "recap-head" },
        el("h2", { id: "recap-title", class: "recap-title" }, title),
        el("button", { type: "button", class: "btn btn-ghost btn-small recap-close", "aria-label": "Dismiss the recap and read the story", onclick: dismiss }, "Dismiss"),
      ),
      away ? el("p", { class: "recap-away muted small" }, `Welcome back: you were away ${away}. Here is what happened since.`) : null,
      el(
        "div",
        { class: "recap-body", tabindex: "0", "aria-label": "What happened since you left" },
        paragraphs.map((text) => el("p", {}, text)),
      ),
      el(
        "div",
        { class: "recap-foot" },
        el("button", { type: "button", class: "btn btn-primary btn-small recap-back", onclick: dismiss }, "Back to the story"),
        el("a", { class: "recap-journal small", href: journalUrl, download: true }, "Download the whole journal"),
      ),
    );
    box.hidden = false;
    onShown?.();
  }

  /** Read the recap once, as the room opens (before this page's socket could ever close). */
  async function load() {
    const result = await api(url);
    if (!result.ok || !result.data) return null;
    const recap = asObject(result.data);
    if (recap.card === true && asText(recap.text).trim()) show(recap);
    return recap;
  }

  box.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !box.hidden) {
      event.stopPropagation();
      dismiss();
    }
  });

  return { load, dismiss, isShown: () => !box.hidden };
}
