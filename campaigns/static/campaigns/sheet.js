// The table beside the story: the viewer's character sheet, the rest of the party, and the
// people and places met so far, all read from the campaign's snapshot.
//
// The snapshot is re-read (debounced) after events that change it; a response older than
// the one shown is dropped, so a slow answer never rolls the sheet back. A player's
// snapshot leaves out what they have not discovered (hidden entities); a reveal is a
// public state_patch_applied, after which the re-read snapshot has the entity. A GM's
// snapshot has everything: hidden entities are marked as such.

import { api, asObject, asText, el } from "./dom.js";

const REFRESH_DEBOUNCE_MS = 250;
/** Events after which the snapshot has changed in a way the table shows. */
export const STATE_EVENTS = new Set([
  "campaign_created",
  "player_joined",
  "player_left",
  "state_patch_applied",
  "entity_created",
  // A retry undoes its turn's changes, with patches a player may not see (hidden things).
  "dm_narration_retracted",
]);

const ENTITY_GROUPS = [
  { title: "People", kinds: ["npc"] },
  { title: "Creatures", kinds: ["creature"] },
  { title: "Places", kinds: ["location"] },
  { title: "Factions", kinds: ["faction"] },
  { title: "Things", kinds: ["item"] },
];

function hpClass(hp, max) {
  const ratio = max > 0 ? hp / max : 0;
  if (hp <= 0) return "hp-down";
  if (ratio <= 0.25) return "hp-low";
  if (ratio <= 0.5) return "hp-mid";
  return "hp-ok";
}

function number(value, fallback = 0) {
  return Number.isFinite(value) ? value : fallback;
}

function hpBar(character, { label, compact = false } = {}) {
  const max = Math.max(1, number(character.max_hp, 1));
  const hp = Math.max(0, Math.min(max, number(character.hp)));
  const fill = el("span", { class: "hp-fill" });
  fill.style.width = `${Math.round((hp / max) * 100)}%`;
  return el(
    "div",
    { class: `hp ${hpClass(hp, max)}${compact ? " hp-compact" : ""}` },
    compact ? null : el("span", { class: "hp-label", "aria-hidden": "true" }, "HP"),
    el(
      "div",
      {
        class: "hp-bar",
        role: "meter",
        "aria-label": label || "Hit points",
        "aria-valuemin": "0",
        "aria-valuemax": String(max),
        "aria-valuenow": String(hp),
        "aria-valuetext": `${hp} of ${max} hit points`,
      },
      fill,
    ),
    el("span", { class: "hp-text" }, `${hp} / ${max}`),
  );
}

function chips(items, emptyText, className) {
  const list = items.map(asText).filter(Boolean);
  if (!list.length) return el("p", { class: "muted small sheet-empty" }, emptyText);
  return el("ul", { class: className }, list.map((item) => el("li", {}, item)));
}

export function createTable({ config, elements, onState }) {
  const { sheet, party, partyBlock, met, metCount, phoneHp } = elements;
  let state = null;
  let version = -1;
  let inFlight = false;
  let again = false;
  let timer = null;
  const entityOrder = new Map(); // entity id -> seq of its entity_created, for "latest first"
  const lastHp = new Map(); // character id -> hp, to flash a change

  async function fetchNow() {
    if (inFlight) {
      again = true;
      return;
    }
    inFlight = true;
    try {
      const result = await api(`/api/campaigns/${config.campaignId}/snapshot`);
      if (result.ok && result.data && Number.isInteger(result.data.version)) {
        if (result.data.version >= version) {
          version = result.data.version;
          state = asObject(result.data.state);
          render();
          onState?.(state);
        }
      }
    } finally {
      inFlight = false;
      if (again) {
        again = false;
        refreshSoon();
      }
    }
  }

  function refreshSoon() {
    clearTimeout(timer);
    timer = setTimeout(fetchNow, REFRESH_DEBOUNCE_MS);
  }

  function characters() {
    return Object.entries(asObject(state?.characters)).map(([id, c]) => ({ id, ...asObject(c) }));
  }

  function mine() {
    return characters().filter((c) => c.owner_user_id === config.userId);
  }

  function render() {
    renderSheet();
    renderParty();
    renderMet();
  }

  function renderSheet() {
    const own = mine();
    if (!own.length) {
      sheet.replaceChildren(
        el("p", { class: "muted small" }, config.role === "gm" ? "You run the table: no character of your own." : "No character yet."),
      );
      phoneHp?.replaceChildren();
      return;
    }
    sheet.replaceChildren(...own.map(renderCharacter));
    const first = own[0];
    phoneHp?.replaceChildren(
      el("span", { class: "phone-hp-name" }, asText(first.name)),
      hpBar(first, { label: `${asText(first.name)}: hit points`, compact: true }),
    );
  }

  function renderCharacter(character) {
    const hp = number(character.hp);
    const previous = lastHp.get(character.id);
    lastHp.set(character.id, hp);
    const node = el(
      "article",
      { class: "sheet-card", "aria-label": `Character sheet: ${asText(character.name)}`, "data-character-id": character.id },
      el(
        "div",
        { class: "sheet-head" },
        el("h3", { class: "sheet-name" }, asText(character.name) || "Unnamed"),
        Number.isFinite(character.ac) ? el("span", { class: "sheet-ac", title: "Armour class" }, `AC ${character.ac}`) : null,
      ),
      hpBar(character, { label: `${asText(character.name)}: hit points` }),
      el("h4", { class: "sheet-sub" }, "Conditions"),
      chips(Array.isArray(character.conditions) ? character.conditions : [], "None", "chips"),
      el("h4", { class: "sheet-sub" }, "Inventory"),
      chips(Array.isArray(character.inventory) ? character.inventory : [], "Empty-handed", "inventory"),
    );
    if (previous !== undefined && previous !== hp) {
      node.classList.add(hp < previous ? "flash-hurt" : "flash-heal");
    }
    return node;
  }

  function renderParty() {
    const others = characters().filter((c) => c.owner_user_id !== config.userId);
    partyBlock.hidden = others.length === 0;
    party.replaceChildren(
      ...others.map((c) => {
        const conditions = Array.isArray(c.conditions) ? c.conditions.map(asText).filter(Boolean) : [];
        const previous = lastHp.get(c.id);
        lastHp.set(c.id, number(c.hp));
        const item = el(
          "li",
          { class: "party-member", "data-character-id": c.id },
          el("span", { class: "party-name" }, asText(c.name) || "Unnamed"),
          hpBar(c, { label: `${asText(c.name)}: hit points`, compact: true }),
          conditions.length ? el("span", { class: "party-conditions" }, conditions.join(", ")) : null,
        );
        if (previous !== undefined && previous !== number(c.hp)) {
          item.classList.add(number(c.hp) < previous ? "flash-hurt" : "flash-heal");
        }
        return item;
      }),
    );
  }

  function renderMet() {
    const entities = Object.entries(asObject(state?.entities)).map(([id, e]) => ({ id, ...asObject(e) }));
    metCount.textContent = String(entities.length);
    if (!entities.length) {
      met.replaceChildren(el("p", { class: "muted small" }, "No one and nowhere yet."));
      return;
    }
    const order = (e) => entityOrder.get(e.id) ?? -1;
    const groups = ENTITY_GROUPS.map((group) => ({
      ...group,
      items: entities.filter((e) => group.kinds.includes(e.kind)).sort((a, b) => order(b) - order(a)),
    })).filter((group) => group.items.length);
    met.replaceChildren(
      ...groups.map((group) =>
        el(
          "div",
          { class: "met-group" },
          el("h3", { class: "met-title" }, group.title),
          el(
            "ul",
            { class: "met-list" },
            group.items.map((entity) => {
              const data = asObject(entity.data);
              const description = asText(data.description);
              return el(
                "li",
                { "data-entity-id": entity.id, class: entity.hidden === true ? "met-hidden" : null },
                el("span", { class: "met-name" }, asText(entity.name)),
                entity.hidden === true ? el("span", { class: "badge met-hidden-badge", title: "The players have not discovered it yet" }, "hidden") : null,
                config.role === "gm" ? hideToggle(entity) : null,
                description ? el("span", { class: "met-what" }, description.length > 120 ? `${description.slice(0, 119)}…` : description) : null,
              );
            }),
          ),
        ),
      ),
    );
  }

  /** The GM's hide / reveal button: a GM correction of /entities/<id>/hidden. */
  function hideToggle(entity) {
    const hidden = entity.hidden === true;
    const name = asText(entity.name);
    return el(
      "button",
      {
        type: "button",
        class: "btn btn-ghost btn-tiny met-hide-toggle",
        "aria-label": hidden ? `Reveal ${name} to the players` : `Hide ${name} from the players`,
        onclick: async (event) => {
          const button = event.currentTarget;
          button.disabled = true;
          const result = await api(`/api/campaigns/${config.campaignId}/gm/values`, {
            method: "POST",
            body: { path: `/entities/${entity.id}/hidden`, value: !hidden },
          });
          if (!result.ok) button.disabled = false;
          refreshSoon();
        },
      },
      hidden ? "Reveal" : "Hide",
    );
  }

  return {
    refreshSoon,
    refreshNow: fetchNow,
    noteEntity(entityId, seq) {
      if (entityId && !entityOrder.has(entityId)) entityOrder.set(entityId, seq);
    },
    state: () => state,
    characters,
    characterName(id) {
      return asText(asObject(state?.characters)[id]?.name);
    },
  };
}
