// The GM's tools in the room: who is at the table (remove and ban, hand the GM role), the
// bans (Unban), the invite code (a new one), today's spend and the daily cap (with the
// banner when the DM stopped at the cap), direct the DM, correct a value, undo an event,
// retry the latest narration, reveal the dice seed (the setup and archiving are
// setup.js's). Each one is a call to the API; the change itself comes back to every member
// as events on the socket, like any other.
//
// Money is for the GM's eyes only (CONTRACTS §7 "What players are told"): this module runs
// on a GM's page alone, and shows the meter in dollars and cents ("$0.42 of $2.00 today").

import { api, asObject, asText, el, errorDetail } from "./dom.js";

/** Whole cents as dollars: 42 -> "$0.42". */
export function dollars(cents) {
  const value = Number.isFinite(cents) ? Math.max(0, Math.round(cents)) : 0;
  return `$${Math.floor(value / 100)}.${String(value % 100).padStart(2, "0")}`;
}

/** A typed dollar amount ("2", "$2.50", "2,50") as a decimal string, or null. */
export function parseDollars(text) {
  const cleaned = asText(text).trim().replace(/^\$/, "").replace(",", ".").trim();
  if (!/^\d{1,6}(\.\d{1,2})?$/.test(cleaned)) return null;
  const [whole, cents = ""] = cleaned.split(".");
  return `${Number.parseInt(whole, 10)}.${cents.padEnd(2, "0")}`;
}

const LIST_FIELDS = new Set(["conditions", "inventory"]);
const NUMBER_FIELDS = new Set(["hp", "max_hp", "ac"]);

export function createGmTools({ config, table, notify, setBanner }) {
  const base = `/api/campaigns/${config.campaignId}`;
  const members = document.getElementById("gm-members");
  const membersStatus = document.getElementById("gm-members-status");
  const bansList = document.getElementById("gm-bans");
  const form = document.getElementById("gm-set-form");
  const characterSelect = document.getElementById("gm-character");
  const fieldSelect = document.getElementById("gm-field");
  const valueInput = document.getElementById("gm-value");
  const reasonInput = document.getElementById("gm-reason");
  const setStatus = document.getElementById("gm-set-status");
  const revealButton = document.getElementById("gm-reveal");
  const diceStatus = document.getElementById("gm-dice-status");
  let prefilledFor = "";

  function say(node, text, ok) {
    node.textContent = text;
    node.classList.toggle("gm-ok", ok);
    node.classList.toggle("gm-error", !ok);
  }

  // --- Members: remove (a ban) and hand the GM role -------------------------------------------

  function renderMembers(state) {
    const entries = Object.entries(asObject(state.members)).filter(([userId]) => userId !== config.userId);
    if (!entries.length) {
      members.replaceChildren(el("li", { class: "muted small" }, "No players yet: share the invite code."));
      return;
    }
    members.replaceChildren(
      ...entries.map(([userId, member]) => {
        const name = asText(asObject(member).display_name) || "Someone";
        const role = asObject(member).role === "gm" ? "gm" : "player";
        return el(
          "li",
          { class: "gm-member", "data-user-id": userId },
          el("span", { class: "gm-member-name" }, name),
          el("span", { class: `badge badge-${role}` }, role === "gm" ? "GM" : "Player"),
          role === "player"
            ? el(
                "span",
                { class: "gm-member-actions" },
                el(
                  "button",
                  {
                    type: "button",
                    class: "btn btn-ghost btn-small gm-hand",
                    "aria-label": `Hand the GM role to ${name}`,
                    title: `${name} becomes the game master; you become a player`,
                    onclick: (event) => handRole(userId, name, event.currentTarget),
                  },
                  "Make GM",
                ),
                el(
                  "button",
                  {
                    type: "button",
                    class: "btn btn-ghost btn-small gm-kick",
                    "aria-label": `Remove ${name} from the campaign and ban them`,
                    title: "Removed players are banned: they cannot join again until you lift the ban",
                    onclick: (event) => kick(userId, name, event.currentTarget),
                  },
                  "Remove & ban",
                ),
              )
            : null,
        );
      }),
    );
  }

  async function kick(userId, name, button) {
    if (
      !window.confirm(
        `Remove ${name} from this campaign and ban them? Their character leaves the party, and they cannot join again, even with a new invite code, until you lift the ban.`,
      )
    ) {
      return;
    }
    button.disabled = true;
    const result = await api(`${base}/members/${userId}/kick`, { method: "POST" });
    if (result.ok) {
      say(membersStatus, `${name} was removed and banned.`, true);
      table.refreshSoon();
      refreshBans();
    } else {
      button.disabled = false;
      say(membersStatus, `${name} was not removed: ${errorDetail(result)}`, false);
    }
  }

  async function handRole(userId, name, button) {
    if (
      !window.confirm(
        `Hand the GM role to ${name}? They become the game master of this campaign and you become a player: the GM's tools go to them.`,
      )
    ) {
      return;
    }
    button.disabled = true;
    const result = await api(`${base}/gm_role`, { method: "POST", body: { to: userId } });
    if (result.ok) {
      // The event comes back to everyone; this page then reloads as a player's (room.js).
      say(membersStatus, `${name} is the GM now. This page reloads with a player's view…`, true);
    } else {
      button.disabled = false;
      say(membersStatus, `The GM role was not handed over: ${errorDetail(result)}`, false);
    }
  }

  // --- Bans (CONTRACTS §7 "GM controls") ---------------------------------------------------

  async function refreshBans() {
    const result = await api(`${base}/bans`);
    if (!result.ok) {
      bansList.replaceChildren(el("li", { class: "muted small" }, `The bans could not be read: ${errorDetail(result)}`));
      return;
    }
    const bans = Array.isArray(result.data) ? result.data.map(asObject) : [];
    if (!bans.length) {
      bansList.replaceChildren(el("li", { class: "muted small gm-bans-none" }, "Nobody is banned."));
      return;
    }
    bansList.replaceChildren(
      ...bans.map((ban) => {
        const name = asText(ban.display_name) || asText(ban.username) || "Someone";
        return el(
          "li",
          { class: "gm-member gm-ban", "data-user-id": asText(ban.user_id) },
          el("span", { class: "gm-member-name" }, name),
          el(
            "button",
            {
              type: "button",
              class: "btn btn-ghost btn-small gm-unban",
              "aria-label": `Unban ${name}`,
              onclick: (event) => unban(asText(ban.user_id), name, event.currentTarget),
            },
            "Unban",
          ),
        );
      }),
    );
  }

  async function unban(userId, name, button) {
    button.disabled = true;
    const result = await api(`${base}/bans/${userId}`, { method: "DELETE" });
    if (result.ok) {
      say(membersStatus, `${name} may join again with the invite code.`, true);
      refreshBans();
    } else {
      button.disabled = false;
      say(membersStatus, `The ban was not lifted: ${errorDetail(result)}`, false);
    }
  }

  let bansTimer = null;
  function bansSoon() {
    clearTimeout(bansTimer);
    bansTimer = setTimeout(refreshBans, 300);
  }

  // --- The invite code -----------------------------------------------------------------------

  const inviteCode = document.getElementById("invite-code");
  const copyInvite = document.getElementById("copy-invite");
  const rotateInvite = document.getElementById("rotate-invite");
  const inviteStatus = document.getElementById("invite-status");

  rotateInvite?.addEventListener("click", async () => {
    if (!window.confirm("Make a new invite code? The current code stops working at once: share the new one with whoever should still join.")) return;
    rotateInvite.disabled = true;
    const result = await api(`${base}/invite_code`, { method: "POST" });
    rotateInvite.disabled = false;
    const code = asText(asObject(result.data).invite_code);
    if (result.ok && code) {
      inviteCode.textContent = code;
      if (copyInvite) copyInvite.dataset.copy = code;
      say(inviteStatus, "A new code is ready. The old one no longer works.", true);
    } else {
      say(inviteStatus, `No new code was made: ${errorDetail(result)}`, false);
    }
  });

  // --- Correct a value --------------------------------------------------------------------

  function renderCharacters() {
    const chosen = characterSelect.value;
    const list = table.characters();
    characterSelect.replaceChildren(
      ...(list.length
        ? list.map((c) => el("option", { value: c.id }, asText(c.name) || "Unnamed"))
        : [el("option", { value: "" }, "No characters yet")]),
    );
    if (list.some((c) => c.id === chosen)) characterSelect.value = chosen;
    form.querySelector("button[type=submit]").disabled = !list.length;
    prefill(false);
  }

  /** Put the current value in the box, unless the GM is typing one for this same choice. */
  function prefill(force) {
    const key = `${characterSelect.value}/${fieldSelect.value}`;
    if (!force && key === prefilledFor) return;
    prefilledFor = key;
    const character = asObject(asObject(table.state()?.characters)[characterSelect.value]);
    const current = character[fieldSelect.value];
    valueInput.value = Array.isArray(current) ? current.map(asText).join(", ") : asText(current);
    valueInput.setAttribute("inputmode", NUMBER_FIELDS.has(fieldSelect.value) ? "numeric" : "text");
  }

  function parseValue(field, raw) {
    const text = raw.trim();
    if (NUMBER_FIELDS.has(field)) {
      if (!/^-?\d+$/.test(text)) return { error: `${field} is a whole number` };
      return { value: Number.parseInt(text, 10) };
    }
    if (LIST_FIELDS.has(field)) {
      return { value: text ? text.split(",").map((part) => part.trim()).filter(Boolean) : [] };
    }
    if (!text) return { error: "the value is empty" };
    return { value: text };
  }

  async function submitValue(event) {
    event.preventDefault();
    const field = fieldSelect.value;
    const parsed = parseValue(field, valueInput.value);
    if (parsed.error) {
      say(setStatus, parsed.error, false);
      valueInput.setAttribute("aria-invalid", "true");
      valueInput.focus();
      return;
    }
    valueInput.removeAttribute("aria-invalid");
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    const result = await api(`${base}/gm/values`, {
      method: "POST",
      body: {
        character_id: characterSelect.value,
        field,
        value: parsed.value,
        reason: reasonInput.value.trim(),
      },
    });
    submit.disabled = false;
    if (result.ok) {
      const name = characterSelect.selectedOptions[0]?.textContent || "the character";
      const label = (fieldSelect.selectedOptions[0]?.textContent || field).toLowerCase();
      say(setStatus, `Set ${name}'s ${label}.`, true);
      reasonInput.value = "";
      prefilledFor = "";
      table.refreshSoon();
    } else {
      say(setStatus, `Not set: ${errorDetail(result)}`, false);
    }
  }

  form.addEventListener("submit", submitValue);
  characterSelect.addEventListener("change", () => prefill(true));
  fieldSelect.addEventListener("change", () => prefill(true));

  // --- Undo an event ----------------------------------------------------------------------

  function undoButton(seq, label) {
    return el(
      "button",
      {
        type: "button",
        class: "btn btn-ghost btn-tiny entry-undo",
        "aria-label": `Undo event ${seq}: ${label}`,
        title: "Undo this change (a GM correction, recorded in the log)",
        onclick: async (event) => {
          const button = event.currentTarget;
          button.disabled = true;
          const result = await api(`${base}/gm/reverts`, { method: "POST", body: { seq } });
          if (result.ok) {
            button.textContent = "Undone";
          } else {
            button.disabled = false;
            notify(`Could not undo: ${errorDetail(result)}`);
          }
        },
      },
      "Undo",
    );
  }

  // --- Retry the latest narration (CONTRACTS §7 "Retry keeps the dice") --------------------

  /** A Retry button for narration `seq`: the DM answers the same actions again, with the
   * same dice. The retraction comes back as an event (room.js folds the old answer away). */
  function retryButton(seq) {
    return el(
      "button",
      {
        type: "button",
        class: "btn btn-ghost btn-tiny entry-retry",
        "aria-label": "Retry: ask the DM for another answer to this narration",
        title: "Ask the DM for another answer (the same dice; its changes are undone)",
        onclick: async (event) => {
          const button = event.currentTarget;
          button.disabled = true;
          button.textContent = "Retrying…";
          const result = await api(`${base}/narrations/${seq}/retry`, { method: "POST" });
          if (result.ok) {
            button.textContent = "Retried";
            return;
          }
          button.textContent = "Retry";
          if (result.status === 409) button.remove(); // it cannot be retried any more
          else button.disabled = false;
          notify(`The DM was not asked again: ${errorDetail(result)}`);
        },
      },
      "Retry",
    );
  }

  // --- Direct the DM (CONTRACTS §7 "GM direction") -----------------------------------------

  const directForm = document.getElementById("gm-direct-form");
  const directText = document.getElementById("gm-direct-text");
  const directSecret = document.getElementById("gm-direct-secret");
  const directNow = document.getElementById("gm-direct-now");
  const directStatus = document.getElementById("gm-direct-status");
  const directButton = document.getElementById("gm-direct-send");

  directForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = directText.value.trim();
    if (!text) {
      say(directStatus, "Write what happens, or what the DM should do.", false);
      directText.setAttribute("aria-invalid", "true");
      directText.focus();
      return;
    }
    if (text.length > 2000) {
      // Refused here, the text kept (the box has no maxlength: nothing is cut silently).
      say(directStatus, `A direction has at most 2,000 characters; this one has ${text.length.toLocaleString("en")}. Shorten it; nothing was sent.`, false);
      directText.setAttribute("aria-invalid", "true");
      directText.focus();
      return;
    }
    directText.removeAttribute("aria-invalid");
    const secret = directSecret.checked;
    const now = directNow.checked;
    directButton.disabled = true;
    const result = await api(`${base}/directions`, { method: "POST", body: { text, secret, now } });
    directButton.disabled = false;
    if (result.ok) {
      const who = secret ? "the DM and the GMs only" : "the whole table";
      say(directStatus, `Sent to the DM (${who}; ${now ? "to narrate now" : "for its next turn"}).`, true);
      directText.value = "";
    } else {
      say(directStatus, `Not sent: ${errorDetail(result)}`, false);
    }
  });
  directText.addEventListener("input", () => directText.removeAttribute("aria-invalid"));

  // --- The dice seed ----------------------------------------------------------------------

  revealButton.addEventListener("click", async () => {
    if (!window.confirm("Reveal the dice seed? Everyone can then check every roll made with it; a new secret seed is sealed for the next rolls.")) return;
    revealButton.disabled = true;
    const result = await api(`${base}/gm/dice/reveal`, { method: "POST" });
    revealButton.disabled = false;
    if (result.ok) say(diceStatus, "Revealed. A new seed is sealed for the next rolls.", true);
    else say(diceStatus, `Not revealed: ${errorDetail(result)}`, false);
  });

  // --- Today's spend and the daily cap (billing: GET, PUT .../budget) ------------------------

  const spendText = document.getElementById("gm-spend");
  const spendFill = document.getElementById("gm-spend-fill");
  const budgetForm = document.getElementById("gm-budget-form");
  const capInput = document.getElementById("gm-cap");
  const hardStopInput = document.getElementById("gm-hard-stop");
  const budgetStatus = document.getElementById("gm-budget-status");
  const budgetSave = document.getElementById("gm-budget-save");
  let spendTimer = null;
  /** The last budget read: {spent, reserved, cap, hardStop, stopped, stoppedBy}. */
  let budget = null;
  /** The GM edited the cap box: a refresh leaves what they typed alone. */
  let capTouched = false;
  /** The words of the failed turn that stopped the DM (the server's, without figures). */
  let stopDetail = "";

  function readBudget(data) {
    const b = asObject(data);
    return {
      spent: Number(b.spent_today_cents) || 0,
      reserved: Number(b.reserved_cents) || 0,
      cap: Number(b.daily_cap_cents) || 0,
      hardStop: b.hard_stop === true,
      stopped: b.dm_stopped === true,
      stoppedBy: asText(b.stopped_by),
    };
  }

  function showBudget(data) {
    budget = readBudget(data);
    const { spent, reserved, cap, hardStop } = budget;
    const percent = cap > 0 ? Math.max(0, Math.min(100, (spent / cap) * 100)) : spent > 0 ? 100 : 0;
    spendFill.style.width = `${percent}%`;
    spendFill.dataset.level = percent >= 100 ? "over" : percent >= 80 ? "warn" : "ok";
    spendText.textContent =
      `${dollars(spent)} of ${dollars(cap)} today` +
      (reserved > 0 ? ` (${dollars(reserved)} held for the DM's answer in progress)` : "") +
      (hardStop ? ". The DM stops at the cap." : ". Past the cap the DM goes on.");
    if (!capTouched || document.activeElement !== capInput) {
      capInput.value = (cap / 100).toFixed(2);
      capTouched = false;
    }
    hardStopInput.checked = hardStop;
    showStopped();
  }

  async function refreshSpend() {
    const result = await api(`${base}/budget`);
    if (!result.ok) {
      spendText.textContent = `Today's spend cannot be read just now: ${errorDetail(result)}`;
      return;
    }
    showBudget(result.data);
  }

  function spendSoon() {
    clearTimeout(spendTimer);
    spendTimer = setTimeout(refreshSpend, 400);
  }

  /** PUT the budget; `where` is the status line to speak in. Returns whether it was saved. */
  async function saveBudget(body, where) {
    const result = await api(`${base}/budget`, { method: "PUT", body });
    if (!result.ok) {
      say(where, `Not saved: ${budgetError(result)}`, false);
      return false;
    }
    const wasStopped = budget?.stopped;
    showBudget(result.data);
    if (wasStopped && !budget.stopped) say(where, "Saved. The DM is answering what was waiting.", true);
    else if (budget.stopped) say(where, "Saved, but the DM still has no room to answer: raise the cap more.", false);
    else say(where, "Saved.", true);
    return true;
  }

  function budgetError(result) {
    const data = asObject(result.data);
    if (data.code === "cap_too_high" || typeof data.detail === "string") return errorDetail(result);
    if (asObject(data.detail).daily_cap_usd) return "the cap is an amount in dollars, such as 2.50.";
    return errorDetail(result);
  }

  budgetForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const cap = parseDollars(capInput.value);
    if (cap === null) {
      say(budgetStatus, "The cap is an amount in dollars, such as 2.50.", false);
      capInput.setAttribute("aria-invalid", "true");
      capInput.focus();
      return;
    }
    capInput.removeAttribute("aria-invalid");
    budgetSave.disabled = true;
    await saveBudget({ daily_cap_usd: cap, hard_stop: hardStopInput.checked }, budgetStatus);
    budgetSave.disabled = false;
    capTouched = false;
  });
  capInput.addEventListener("input", () => {
    capTouched = true;
    capInput.removeAttribute("aria-invalid");
  });

  /** The banner when the DM stopped at the cap: what happened, and the raise right there. */
  function showStopped() {
    const shown = document.querySelector('[data-banner="turn"][data-budget-stop="gm"]');
    if (!budget?.stopped) {
      shown?.remove();
      return;
    }
    if (shown) return; // one already offered (it may hold what the GM is typing)
    const told = stopDetail ? ` ${stopDetail}${/[.!?]$/.test(stopDetail) ? "" : "."}` : "";
    if (budget.stoppedBy === "user") {
      setBanner("turn", {
        tone: "budget",
        role: "alert",
        title: "The DM stopped: a player's daily allowance on this server is used up.",
        text: `${told.trim()} It frees up over the next 24 hours; only whoever runs the server can change it.`.trim(),
        marker: "gm",
      });
      return;
    }
    // A round figure with room for a few more turns: twice the cap, at least a dollar more.
    const suggested = Math.ceil(Math.max(budget.cap * 2, budget.spent + budget.reserved + 100) / 100) * 100;
    const input = el("input", {
      type: "text",
      inputmode: "decimal",
      id: "raise-cap",
      class: "banner-input",
      "aria-label": "New daily cap in dollars",
      value: (suggested / 100).toFixed(2),
      maxlength: "12",
    });
    const status = el("span", { class: "banner-status", role: "status" });
    const button = el("button", { type: "submit", class: "btn btn-primary btn-small", id: "raise-cap-button" }, "Raise the cap");
    const form = el(
      "form",
      { class: "banner-form", novalidate: true, "aria-label": "Raise the daily cap" },
      el("label", { for: "raise-cap", class: "banner-label" }, "New cap $"),
      input,
      button,
      status,
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const cap = parseDollars(input.value);
      if (cap === null) {
        status.textContent = "An amount in dollars, such as 5.00.";
        input.focus();
        return;
      }
      button.disabled = true;
      await saveBudget({ daily_cap_usd: cap }, budgetStatus);
      button.disabled = false;
      if (budget?.stopped) status.textContent = budgetStatus.textContent;
    });
    setBanner("turn", {
      tone: "budget",
      role: "alert",
      title: "The DM stopped: today's cap is reached.",
      text: `Today's budget is spent: ${dollars(budget.spent)} of ${dollars(budget.cap)}.${told} Raise the cap and the DM answers what is waiting.`,
      actions: [form],
      marker: "gm",
    });
  }

  refreshSpend();
  refreshBans();

  return {
    onState(state) {
      renderMembers(state);
      renderCharacters();
    },
    onEvent(event) {
      if (["dm_narration", "turn_failed", "turn_reopened", "dm_audio_ready", "budget_warning", "budget_refused", "summary_created"].includes(event.type)) {
        spendSoon();
      }
      if (["player_left", "player_joined"].includes(event.type)) bansSoon();
    },
    /** The DM stopped for budget (a turn_failed just arrived, with the server's words):
     * the meter says why, and the banner offers the raise. */
    onStopped(detail) {
      stopDetail = asText(detail).trim();
      document.querySelector('[data-banner="turn"][data-budget-stop="gm"]')?.remove();
      refreshSpend();
    },
    /** Archived: directing the DM and correcting values wait until the campaign is back. */
    setArchived(value) {
      for (const node of [form, directForm]) {
        node.inert = value;
        node.classList.toggle("gm-form-archived", value);
      }
    },
    undoButton,
    retryButton,
  };
}
