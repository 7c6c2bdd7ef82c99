// The whisper box under the action box: a few words to the GM, the DM or one member, which
// only the recipient (and the GMs) will read. It sends `client.whisper` (CONTRACTS §3); the
// whisper itself comes back as a `whisper` event, rendered by room.js like any other.
//
// A whisper carries no client id, so it is never resent by itself: while one is on its way
// the button waits; an `error` (or a connection that drops before the whisper shows up in
// the log) puts the words back in the box.

import { asObject, asText, el } from "./dom.js";

export function createWhisperBox({ config, send, isLive, notify }) {
  const toggle = document.getElementById("whisper-toggle");
  const form = document.getElementById("whisper-form");
  const select = document.getElementById("whisper-to");
  const input = document.getElementById("whisper-text");
  const button = document.getElementById("send-whisper");
  const help = document.getElementById("whisper-help");
  const maxChars = Number(config.maxActionChars) || 2000;
  const isGm = config.role === "gm";
  /** The whisper sent and not yet acknowledged: {to, text}. */
  let pending = null;
  let stopped = false;
  let members = {};

  // --- Recipients -------------------------------------------------------------------------

  /** Who can be whispered to, from the snapshot's members: [{value, label}]. */
  function recipients() {
    const others = Object.entries(members)
      .filter(([userId]) => userId !== config.userId)
      .map(([userId, member]) => ({ userId, name: asText(asObject(member).display_name) || "Someone", gm: asObject(member).role === "gm" }));
    const players = others
      .filter((member) => !member.gm)
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((member) => ({ value: member.userId, label: member.name }));
    const dm = { value: "dm", label: "The DM" };
    if (isGm) {
      const list = [...players, dm];
      if (others.some((member) => member.gm)) list.push({ value: "gm", label: "The other GMs" });
      return list;
    }
    return [{ value: "gm", label: "The GM" }, dm, ...players];
  }

  function renderRecipients() {
    const chosen = select.value;
    select.replaceChildren(...recipients().map((r) => el("option", { value: r.value }, r.label)));
    if ([...select.options].some((option) => option.value === chosen)) select.value = chosen;
    describe();
  }

  /** Say, under the box, who will read the whisper. */
  function describe() {
    const to = select.value;
    const name = select.selectedOptions[0]?.textContent || "";
    let text;
    if (to === "dm") {
      text = isGm ? "The DM takes it into account; no player sees it." : "The DM takes it into account as your secret; the GM sees it too.";
    } else if (to === "gm") {
      text = isGm ? "Only the GMs will read it." : "Only the GM will read it.";
    } else {
      text = isGm ? `Only ${name} will read it.` : `Only ${name} (and the GM) will read it.`;
    }
    help.textContent = text;
  }

  // --- Open, close, send ------------------------------------------------------------------

  function setOpen(open, { focus = true } = {}) {
    form.hidden = !open;
    toggle.setAttribute("aria-expanded", String(open));
    toggle.classList.toggle("active", open);
    if (!focus) return;
    if (open) input.focus();
    else toggle.focus();
  }

  function update() {
    toggle.disabled = stopped;
    select.disabled = stopped;
    input.disabled = stopped;
    button.disabled = stopped || pending !== null || !isLive();
    button.textContent = pending ? "Whispering…" : "Whisper";
    button.title = !stopped && !isLive() ? "Waiting for the connection" : "";
  }

  /** Put the words of a whisper that did not go back in the box (unless new ones are there). */
  function restore(text) {
    if (!input.value.trim()) input.value = text;
    setOpen(true, { focus: false });
  }

  function submit() {
    if (stopped || pending) return;
    const text = input.value.trim();
    if (!text) {
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
    if (text.length > maxChars) {
      notify(`A whisper is at most ${maxChars} characters; this one has ${text.length}.`);
      return;
    }
    const to = select.value;
    if (!to) return;
    input.removeAttribute("aria-invalid");
    if (!isLive() || !send({ type: "client.whisper", to, text })) {
      notify("Not connected: the whisper was not sent. Try again once the room is live.");
      update();
      return;
    }
    pending = { to, text };
    input.value = "";
    update();
  }

  toggle.addEventListener("click", () => setOpen(form.hidden));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
    input.focus();
  });
  form.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      setOpen(false);
    }
  });
  select.addEventListener("change", describe);
  input.addEventListener("input", () => input.removeAttribute("aria-invalid"));

  renderRecipients();
  update();

  return {
    /** The snapshot's `members` (user id -> {display_name, role}). */
    setMembers(value) {
      members = asObject(value);
      renderRecipients();
    },
    /** The connection went live, or was lost: the button follows. */
    onConnection() {
      update();
    },
    /** After a reconnect's catch-up: a whisper still unconfirmed never reached the log. */
    onReady() {
      if (pending) {
        const { text } = pending;
        pending = null;
        restore(text);
        notify("The connection dropped before your whisper was delivered; it is back in the box.");
      }
      update();
    },
    /** An ack without an action_id is the whisper's. Returns whether it was. */
    onAck(data) {
      if (data.action_id || !pending) return false;
      pending = null;
      update();
      return true;
    },
    /** An error without an action_id while a whisper is on its way is the whisper's. */
    onError(data) {
      if (data.action_id || !pending) return false;
      const { text } = pending;
      pending = null;
      restore(text);
      update();
      return true;
    },
    /** Our own whisper in the log settles it, even if its ack was lost. */
    onEvent(event) {
      if (!pending || event.type !== "whisper") return;
      const p = asObject(event.payload);
      if (asText(p.from_user_id) === config.userId && asText(p.text) === pending.text) {
        pending = null;
        update();
      }
    },
    /** Closed for good (signed out, removed). */
    stop() {
      stopped = true;
      pending = null;
      update();
    },
  };
}
