// Dice in the room: the dice box under the action box (formula, optional DC, reason, a
// private toggle) and the `/roll` and `/gmroll` commands typed in the action box. Both send
// `client.roll` (CONTRACTS §7: `dc`, `private`) with a client-made `action_id`, which the
// server echoes in its `server.ack` or in an `error` about that roll: the answer is shown
// next to where the roll was asked for, in plain words. The roll itself comes back to the
// room as `roll_requested` + `roll_result` events, drawn by room.js like any other.
//
// The same path answers a check the DM asked this player to roll (CONTRACTS §7 "Players roll
// their own checks"): `answer` sends `client.roll` with the request's `roll_id`.
//
// A roll is never resent by itself: a second send would be a second roll. When the
// connection drops before the server answered, the page says so and the log tells.

import { asObject, asText } from "./dom.js";

export const DC_MIN = 1;
export const DC_MAX = 40;
const FORMULA_MAX_CHARS = 100;
const REASON_MAX_CHARS = 500;
const ANSWER_WAIT_MS = 15_000;

/**
 * The words after `/roll`: "1d20+3 dc 15 Stealth check" -> {formula, dc, reason}, or {error}.
 * The formula is the first word (no spaces in it); "dc 15", "dc15" or "dc=15" right after
 * it sets the target; the rest says what the roll is for.
 */
export function parseRollCommand(args) {
  const words = asText(args).trim().split(/\s+/).filter(Boolean);
  if (!words.length) return { error: "Write the dice after /roll, such as /roll 1d20+3 Stealth." };
  const formula = words.shift();
  let dc = null;
  const joined = words[0]?.match(/^dc=?(\S+)$/i);
  if (joined) {
    dc = joined[1];
    words.shift();
  } else if (words[0] && /^dc$/i.test(words[0]) && words.length > 1) {
    dc = words[1];
    words.splice(0, 2);
  }
  const checked = checkRoll({ formula, dc, reason: words.join(" ") });
  return checked;
}

/** The fields of a roll checked before sending: {formula, dc (number or null), reason} or {error}. */
export function checkRoll({ formula, dc, reason }) {
  const f = asText(formula).trim();
  if (!f) return { error: "Write the dice to roll, such as 1d20+3." };
  if (f.length > FORMULA_MAX_CHARS) return { error: `A dice formula is at most ${FORMULA_MAX_CHARS} characters.` };
  let target = null;
  const raw = asText(dc).trim();
  if (raw) {
    if (!/^\d+$/.test(raw) || Number(raw) < DC_MIN || Number(raw) > DC_MAX) {
      return { error: `The DC is a whole number from ${DC_MIN} to ${DC_MAX}.` };
    }
    target = Number(raw);
  }
  const why = asText(reason).trim();
  if (why.length > REASON_MAX_CHARS) return { error: `What the roll is for is at most ${REASON_MAX_CHARS} characters.` };
  return { formula: f, dc: target, reason: why };
}

/** "17 against DC 15: success" (or just "17"), from a roll_result payload. */
export function rollOutcomeWords(payload) {
  const p = asObject(payload);
  const total = asText(p.total);
  if (!Number.isInteger(p.dc)) return total;
  return `${total} against DC ${p.dc}: ${p.success === true ? "success" : "failure"}`;
}

/** "Sorry, that roll was not made: ..." from the server's error detail. */
function refusal(detail) {
  const text = asText(detail).trim() || "the server refused it";
  return `That roll was not made: ${text}${/[.!?]$/.test(text) ? "" : "."}`;
}

/**
 * The dice box and the roll commands.
 * `say(where, text, tone, typed)`: show `text` where the roll was asked for: "command" (by
 * the action box, room.js) or "box" (in the dice box); tone "error", "info" or "ok";
 * `typed`, for a refused command, is what was typed (room.js may put it back in the box).
 */
export function createDice({ send, isLive, newId, say }) {
  const toggle = document.getElementById("dice-toggle");
  const form = document.getElementById("dice-form");
  const formulaInput = document.getElementById("dice-formula");
  const dcInput = document.getElementById("dice-dc");
  const reasonInput = document.getElementById("dice-reason");
  const privateInput = document.getElementById("dice-private");
  const button = document.getElementById("send-roll");
  const status = document.getElementById("dice-status");
  /** action_id -> {where, timer}: rolls sent and not answered yet. */
  const pending = new Map();
  /** seq -> where: rolls acked whose roll_result has not been seen here yet. */
  const awaiting = new Map();
  /** seq -> roll_result payload: the latest results seen (an ack may come after them). */
  const recent = new Map();
  let stopped = false;

  function boxSay(text, tone) {
    status.textContent = text;
    status.dataset.tone = tone;
  }

  /** `where`: "box", "command", or a function(text, tone) of whoever asked. */
  function tell(where, text, tone, typed = "") {
    if (where === "box") boxSay(text, tone);
    else if (typeof where === "function") where(text, tone);
    else say(where, text, tone, typed);
  }

  function update() {
    const busy = [...pending.values()].some((roll) => roll.where === "box");
    toggle.disabled = stopped;
    for (const input of [formulaInput, dcInput, reasonInput, privateInput]) input.disabled = stopped;
    button.disabled = stopped || busy || !isLive();
    button.textContent = busy ? "Rolling…" : "Roll";
    button.title = !stopped && !isLive() ? "Waiting for the connection" : "";
  }

  function settle(actionId) {
    const roll = pending.get(actionId);
    if (!roll) return null;
    clearTimeout(roll.timer);
    pending.delete(actionId);
    update();
    return roll;
  }

  /** Send one checked roll; false (and said why) when it could not go. */
  function roll({ formula, dc, reason, secret, rollId }, where, typed = "") {
    if (stopped) return false;
    const actionId = newId();
    const message = { type: "client.roll", formula, reason, action_id: actionId };
    if (rollId) message.roll_id = rollId; // the DM's request: the server rolls what it asked
    else message.private = Boolean(secret);
    if (dc !== null && dc !== undefined) message.dc = dc;
    if (!isLive() || !send(message)) {
      tell(where, "Not connected: the roll was not made. Try again once the room is live.", "error");
      return false;
    }
    const timer = setTimeout(() => {
      if (settle(actionId)) tell(where, "No answer about that roll yet: look for it in the story before rolling again.", "error");
    }, ANSWER_WAIT_MS);
    pending.set(actionId, { where, timer, typed });
    tell(where, `Rolling ${formula}${dc !== null && dc !== undefined ? ` against DC ${dc}` : ""}${secret ? " (private)" : ""}…`, "info");
    update();
    return true;
  }

  function rolled(where, payload) {
    const p = asObject(payload);
    tell(where, `Rolled ${asText(p.formula)}: ${rollOutcomeWords(p)}.`, "ok");
  }

  // --- The box ------------------------------------------------------------------------------

  function setOpen(open, { focus = true } = {}) {
    form.hidden = !open;
    toggle.setAttribute("aria-expanded", String(open));
    toggle.classList.toggle("active", open);
    if (!focus) return;
    if (open) formulaInput.focus();
    else toggle.focus();
  }

  toggle.addEventListener("click", () => setOpen(form.hidden));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const checked = checkRoll({ formula: formulaInput.value, dc: dcInput.value, reason: reasonInput.value });
    if (checked.error) {
      boxSay(checked.error, "error");
      (checked.error.includes("DC") ? dcInput : formulaInput).setAttribute("aria-invalid", "true");
      return;
    }
    formulaInput.removeAttribute("aria-invalid");
    dcInput.removeAttribute("aria-invalid");
    roll({ ...checked, secret: privateInput.checked }, "box");
  });
  form.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      setOpen(false);
    }
  });
  for (const input of [formulaInput, dcInput, reasonInput]) {
    input.addEventListener("input", () => {
      input.removeAttribute("aria-invalid");
      if (status.dataset.tone === "error") boxSay("", "");
    });
  }

  update();

  return {
    /** `/roll ...` (or `/gmroll ...`, `secret`) typed in the action box (`typed`, whole);
     * false if refused here. */
    command(args, { secret = false, typed = "" } = {}) {
      const checked = parseRollCommand(args);
      if (checked.error) {
        say("command", checked.error, "error");
        return false;
      }
      return roll({ ...checked, secret }, "command", typed);
    },
    /** Answer the DM's request for this player's roll ({rollId, formula, reason});
     * `where(text, tone)` is told how it goes. False (and said why) if it could not go. */
    answer({ rollId, formula, reason }, where) {
      return roll({ formula, dc: null, reason, rollId }, where);
    },
    /** A server.ack with the action_id of one of our rolls; returns whether it was. */
    onAck(data) {
      const roll = settle(asText(data.action_id));
      if (!roll) return false;
      const seq = data.seq;
      if (recent.has(seq)) rolled(roll.where, recent.get(seq));
      else awaiting.set(seq, roll.where);
      return true;
    },
    /** An error about one of our rolls (by action_id); returns whether it was. */
    onError(data) {
      const roll = settle(asText(data.action_id));
      if (!roll) return false;
      tell(roll.where, refusal(data.detail), "error", roll.typed);
      if (roll.where === "box") formulaInput.setAttribute("aria-invalid", "true");
      return true;
    },
    /** Every event: a roll_result we were told about (or are about to be). */
    onEvent(event) {
      if (event.type !== "roll_result") return;
      recent.set(event.seq, event.payload);
      while (recent.size > 20) recent.delete(recent.keys().next().value);
      const where = awaiting.get(event.seq);
      if (where) {
        awaiting.delete(event.seq);
        rolled(where, event.payload);
      }
    },
    /** The connection went live or was lost: unanswered rolls cannot be told any more. */
    onConnection() {
      if (!isLive()) {
        for (const [actionId, roll] of [...pending]) {
          settle(actionId);
          tell(roll.where, "The connection dropped before the roll was confirmed: if it was made, it is in the story.", "error");
        }
      }
      update();
    },
    /** Closed for good (signed out, removed). */
    stop() {
      stopped = true;
      for (const actionId of [...pending.keys()]) settle(actionId);
      update();
    },
  };
}
