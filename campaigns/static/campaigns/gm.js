// The GM's tools in the room: who is at the table (with kick), direct the DM, correct a
// value, undo an event, retry the latest narration, reveal the dice seed (the setup and
// archiving are setup.js's). Each one is a call to the API; the change itself comes back
// to every member as events on the socket, like any other.

import { api, asObject, asText, el, errorDetail } from "./dom.js";

const LIST_FIELDS = new Set(["conditions", "inventory"]);
const NUMBER_FIELDS = new Set(["hp", "max_hp", "ac"]);

export function createGmTools({ config, table, notify }) {
  const base = `/api/campaigns/${config.campaignId}`;
  const members = document.getElementById("gm-members");
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

  // --- Members and kick -------------------------------------------------------------------

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
                "button",
                {
                  type: "button",
                  class: "btn btn-ghost btn-small gm-kick",
                  "aria-label": `Remove ${name} from the campaign`,
                  onclick: (event) => kick(userId, name, event.currentTarget),
                },
                "Remove",
              )
            : null,
        );
      }),
    );
  }

  async function kick(userId, name, button) {
    if (!window.confirm(`Remove ${name} from this campaign? They can come back only with the invite code.`)) return;
    button.disabled = true;
    const result = await api(`${base}/members/${userId}/kick`, { method: "POST" });
    if (result.ok) {
      notify(`${name} was removed from the campaign.`, "info");
      table.refreshSoon();
    } else {
      button.disabled = false;
      notify(`Could not remove ${name}: ${errorDetail(result)}`);
    }
  }

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

  // --- The spend meter (billing: GET /budget) ---------------------------------------------

  const spendText = document.getElementById("gm-spend");
  const spendFill = document.getElementById("gm-spend-fill");
  let spendTimer = null;

  async function refreshSpend() {
    const result = await api(`${base}/budget`);
    if (!result.ok) {
      spendText.textContent = `Spend unavailable: ${errorDetail(result)}`;
      return;
    }
    const b = asObject(result.data);
    const percent = Math.max(0, Math.min(100, Number(b.percent) || 0));
    spendFill.style.width = `${percent}%`;
    spendFill.dataset.level = percent >= 100 ? "over" : percent >= 80 ? "warn" : "ok";
    const stop = b.hard_stop ? "the DM stops at the cap" : "over the cap the DM degrades";
    spendText.textContent =
      `$${asText(b.spent_usd)} of $${asText(b.daily_cap_usd)} (${percent.toFixed(0)}%)` +
      (Number(b.reserved_usd) > 0 ? `, $${asText(b.reserved_usd)} reserved` : "") +
      `; ${stop}.`;
  }

  function spendSoon() {
    clearTimeout(spendTimer);
    spendTimer = setTimeout(refreshSpend, 400);
  }

  refreshSpend();

  return {
    onState(state) {
      renderMembers(state);
      renderCharacters();
    },
    onEvent(event) {
      if (["dm_narration", "turn_failed", "dm_audio_ready", "budget_warning", "budget_refused", "summary_created"].includes(event.type)) {
        spendSoon();
      }
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
