// The table beside the story: the viewer's character sheet, the rest of the party, and the
// people and places met so far, all read from the campaign's snapshot.
//
// A sheet shows what the server derived (CONTRACTS §7 "Characters"): class, ancestry,
// level, the six abilities with their modifiers and saving throws, proficiency, HP, AC,
// backstory. Its owner edits the name and backstory; a GM edits any field of any sheet
// (PATCH .../characters/<id>); every change comes back to the whole table as
// character_updated, after which the snapshot is read again. An editor that is open stays
// as it is while the sheet behind it changes (it is never rebuilt under the typing hand).
//
// The snapshot is re-read (debounced) after events that change it; a response older than
// the one shown is dropped, so a slow answer never rolls the sheet back. A player's
// snapshot leaves out what they have not discovered (hidden entities); a reveal is a
// public state_patch_applied, after which the re-read snapshot has the entity. A GM's
// snapshot has everything: hidden entities are marked as such. When the GM hides an entity
// the players had seen, they get `entity_withdrawn` {entity_id}: it leaves their table at
// once. A character whose player left or was removed (`departed`, and `player_left`'s
// `departed_character_ids`) leaves "The party" at once; it stays in the story.

import { describeCharacter, modifier, signed } from "./character.js";
import { api, asObject, asText, el, errorDetail, placeChildren } from "./dom.js";

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
  "character_created",
  "character_updated",
  // Hidden again by the GM: the player's snapshot no longer has it.
  "entity_withdrawn",
  // Roles in the members list (and the page may become the other role's).
  "gm_role_handed",
]);

const LIST_FIELDS = ["conditions", "inventory"];
const NUMBER_FIELDS = ["level", "hp", "max_hp", "ac"];
const NUMBER_LABELS = { level: "The level", hp: "HP", max_hp: "Max HP", ac: "AC" };
const BACKSTORY_FOLD = 280; // longer backstories open on demand

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

export function createTable({ config, elements, onState, options = null, onMakeCharacter = null }) {
  const { sheet, party, partyBlock, met, metCount, phoneHp } = elements;
  const isGm = config.role === "gm";
  const base = `/api/campaigns/${config.campaignId}`;
  let state = null;
  let version = -1;
  let inFlight = false;
  let again = false;
  let timer = null;
  const entityOrder = new Map(); // entity id -> seq of its entity_created, for "latest first"
  const lastHp = new Map(); // character id -> hp, to flash a change
  /** character id -> its open editor (a form node kept across renders). */
  const editors = new Map();
  /** Party members whose full sheet is unfolded. */
  const unfolded = new Set();

  async function fetchNow() {
    if (inFlight) {
      again = true;
      return;
    }
    inFlight = true;
    try {
      const result = await api(`${base}/snapshot`);
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
      placeChildren(sheet, [
        el("p", { class: "muted small" }, isGm ? "You run the table: no character of your own. The party's sheets are below." : "No character yet."),
      ]);
      phoneHp?.replaceChildren();
      return;
    }
    placeChildren(sheet, own.map((c) => editors.get(c.id) || renderCharacter(c, { own: true })));
    const first = own[0];
    phoneHp?.replaceChildren(
      ...[
        el("span", { class: "phone-hp-name" }, asText(first.name)),
        hpBar(first, { label: `${asText(first.name)}: hit points`, compact: true }),
        Number.isFinite(first.ac) ? el("span", { class: "phone-ac", title: "Armour class" }, `AC ${first.ac}`) : null,
      ].filter(Boolean),
    );
  }

  function flash(node, character) {
    const hp = number(character.hp);
    const previous = lastHp.get(character.id);
    lastHp.set(character.id, hp);
    if (previous !== undefined && previous !== hp) node.classList.add(hp < previous ? "flash-hurt" : "flash-heal");
  }

  function abilityGrid(character) {
    const scores = asObject(character.abilities);
    const mods = asObject(character.modifiers);
    const keys = ["str", "dex", "con", "int", "wis", "cha"].filter((k) => Number.isFinite(scores[k]));
    if (!keys.length) return null;
    const saves = new Set(Array.isArray(character.saving_throws) ? character.saving_throws : []);
    const names = Object.fromEntries((options?.abilities || []).map((a) => [a.key, a.name]));
    return el(
      "ul",
      { class: "sheet-abilities", "aria-label": "Abilities" },
      keys.map((key) => {
        const mod = Number.isFinite(mods[key]) ? mods[key] : modifier(scores[key]);
        const name = names[key] || key.toUpperCase();
        return el(
          "li",
          {
            class: `sheet-ability${saves.has(key) ? " save" : ""}`,
            "data-ability": key,
            "aria-label": `${name} ${scores[key]}, modifier ${signed(mod)}${saves.has(key) ? ", saving throw proficiency" : ""}`,
          },
          el("span", { class: "sheet-ability-key", "aria-hidden": "true" }, key.toUpperCase()),
          el("span", { class: "sheet-ability-mod", "aria-hidden": "true" }, signed(mod)),
          el("span", { class: "sheet-ability-score", "aria-hidden": "true" }, String(scores[key])),
        );
      }),
    );
  }

  function backstory(character) {
    const text = asText(character.backstory).trim();
    if (!text) return el("p", { class: "muted small sheet-empty sheet-backstory" }, "No backstory yet.");
    if (text.length <= BACKSTORY_FOLD) return el("p", { class: "sheet-backstory" }, text);
    return el(
      "details",
      { class: "sheet-backstory-fold" },
      el("summary", {}, el("span", { class: "sheet-backstory" }, `${text.slice(0, BACKSTORY_FOLD - 40).trimEnd()}… `), el("span", { class: "sheet-more" }, "read all")),
      el("p", { class: "sheet-backstory" }, text),
    );
  }

  /** A whole sheet: `own` for the viewer's character (the one they may make and edit). */
  function renderCharacter(character, { own = false, flashes = true } = {}) {
    const blank = !character.sheet;
    const what = blank ? "" : describeCharacter(options, character);
    const bonus = Number.isFinite(character.proficiency_bonus) ? character.proficiency_bonus : null;
    const saves = Array.isArray(character.saving_throws) ? character.saving_throws.map((k) => asText(k).toUpperCase()) : [];
    const canEdit = isGm || (own && character.owner_user_id === config.userId);
    const node = el(
      "article",
      { class: `sheet-card${blank ? " sheet-blank" : ""}`, "aria-label": `Character sheet: ${asText(character.name)}`, "data-character-id": character.id },
      el(
        "div",
        { class: "sheet-head" },
        el("h3", { class: "sheet-name" }, asText(character.name) || "Unnamed"),
        Number.isFinite(character.ac) ? el("span", { class: "sheet-ac", title: "Armour class" }, `AC ${character.ac}`) : null,
      ),
      what ? el("p", { class: "sheet-what" }, what) : null,
      hpBar(character, { label: `${asText(character.name)}: hit points` }),
      blank && own && !isGm
        ? el(
            "div",
            { class: "sheet-make" },
            el("p", { class: "small" }, "A blank sheet for now: give them a class, an ancestry, abilities and a story."),
            el("button", { type: "button", class: "btn btn-primary btn-small sheet-make-button", onclick: () => onMakeCharacter?.() }, "Make your character"),
          )
        : null,
      blank && !own ? el("p", { class: "muted small" }, "Not made yet.") : null,
      abilityGrid(character),
      bonus !== null || saves.length
        ? el(
            "p",
            { class: "sheet-line small" },
            bonus !== null ? el("span", { class: "sheet-proficiency" }, "Proficiency ", el("strong", {}, signed(bonus))) : null,
            saves.length ? el("span", { class: "sheet-saves" }, `Saves ${saves.join(", ")}`) : null,
          )
        : null,
      blank ? null : el("h4", { class: "sheet-sub" }, "Backstory"),
      blank ? null : backstory(character),
      el("h4", { class: "sheet-sub" }, "Conditions"),
      chips(Array.isArray(character.conditions) ? character.conditions : [], "None", "chips"),
      el("h4", { class: "sheet-sub" }, "Inventory"),
      chips(Array.isArray(character.inventory) ? character.inventory : [], "Empty-handed", "inventory"),
      canEdit && !(blank && own && !isGm)
        ? el(
            "div",
            { class: "sheet-actions" },
            el(
              "button",
              {
                type: "button",
                class: "btn btn-ghost btn-tiny sheet-edit",
                "aria-label": isGm ? `Edit ${asText(character.name)}'s sheet` : "Edit your name and backstory",
                onclick: () => openEditor(character),
              },
              isGm ? "Edit sheet" : "Edit name & backstory",
            ),
          )
        : null,
    );
    if (flashes) flash(node, character);
    return node;
  }

  // --- Editing: the owner's story fields, or a GM's whole sheet --------------------------------

  function openEditor(character) {
    editors.set(character.id, editorFor(character));
    render();
    editors.get(character.id)?.querySelector("input, textarea, select")?.focus();
  }

  function closeEditor(characterId) {
    editors.delete(characterId);
    render();
    document.querySelector(`[data-character-id="${CSS.escape(characterId)}"] .sheet-edit`)?.focus();
  }

  function editorFor(character) {
    const five = character.sheet === "5e";
    const name = asText(character.name);
    const inputs = {};
    const row = (key, label, control, wide = false) => {
      control.id = `se-${key}-${character.id}`;
      control.name = key;
      inputs[key] = control;
      return el("div", { class: `se-field${wide ? " se-wide" : ""}` }, el("label", { for: control.id }, label), control);
    };
    const text = (key, limit, value) => el("input", { type: "text", maxlength: String(limit), value: asText(value), autocomplete: "off" });
    const whole = (key, value, min, max) => el("input", { type: "number", inputmode: "numeric", min: String(min), max: String(max), value: Number.isFinite(value) ? String(value) : "" });
    const pick = (list, value) => {
      const select = el("select", {}, list.map((item) => el("option", { value: item.key }, item.name)));
      select.value = asText(value);
      return select;
    };
    const parts = [row("name", "Name", text("name", 60, character.name), true)];
    if (isGm) {
      const classes = options?.classes || [];
      const ancestries = options?.ancestries || [];
      parts.push(
        row("class", "Class", five && classes.length ? pick(classes, character.class) : text("class", 40, character.class)),
        row("ancestry", "Ancestry", five && ancestries.length ? pick(ancestries, character.ancestry) : text("ancestry", 40, character.ancestry)),
        row("level", "Level", whole("level", character.level ?? 1, 1, 20)),
        row("ac", "AC", whole("ac", character.ac, 0, 100)),
        row("hp", "HP", whole("hp", character.hp, 0, 10000)),
        row("max_hp", "Max HP", whole("max_hp", character.max_hp, 1, 10000)),
      );
      const scores = asObject(character.abilities);
      if (five || Object.keys(scores).length) {
        const abilityInputs = ["str", "dex", "con", "int", "wis", "cha"].map((key) => {
          const input = whole(key, scores[key], 1, 30);
          input.id = `se-ab-${key}-${character.id}`;
          input.dataset.ability = key;
          inputs[`ab_${key}`] = input;
          return el("label", { class: "se-ability", for: input.id }, key.toUpperCase(), input);
        });
        parts.push(el("fieldset", { class: "se-abilities se-wide" }, el("legend", {}, "Abilities"), abilityInputs));
      }
      parts.push(
        row("conditions", "Conditions (commas between)", text("conditions", 2000, (character.conditions || []).join(", ")), true),
        row("inventory", "Inventory (commas between)", text("inventory", 4000, (character.inventory || []).join(", ")), true),
      );
    }
    const story = el("textarea", { rows: "4", maxlength: "4000" });
    story.value = asText(character.backstory);
    parts.push(row("backstory", "Backstory", story, true));
    const status = el("p", { class: "se-status small", role: "alert" });
    const save = el("button", { type: "submit", class: "btn btn-primary btn-small" }, "Save");
    const form = el(
      "form",
      { class: "sheet-editor", "data-character-id": character.id, "aria-label": `Edit ${name}`, novalidate: true },
      el("h3", { class: "sheet-name" }, isGm ? `Edit ${name}` : "Your name and backstory"),
      isGm && five ? el("p", { class: "muted small se-note" }, "Class, level and abilities recompute HP, AC and the modifiers, unless you set HP or AC yourself.") : null,
      el("div", { class: "se-grid" }, parts),
      el("div", { class: "se-actions" }, save, el("button", { type: "button", class: "btn btn-ghost btn-small", onclick: () => closeEditor(character.id) }, "Cancel")),
      status,
    );
    form.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.stopPropagation();
        closeEditor(character.id);
      }
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const changes = {};
      const before = character;
      const textOf = (key) => inputs[key].value.trim();
      if (textOf("name") !== asText(before.name)) changes.name = textOf("name");
      if (inputs.backstory.value.trim() !== asText(before.backstory).trim()) changes.backstory = inputs.backstory.value.trim();
      if (isGm) {
        for (const key of ["class", "ancestry"]) if (textOf(key) !== asText(before[key])) changes[key] = textOf(key);
        for (const key of NUMBER_FIELDS) {
          const raw = textOf(key);
          if (raw === "" && !Number.isFinite(before[key])) continue;
          if (!/^-?\d+$/.test(raw)) {
            status.textContent = `${NUMBER_LABELS[key]} is a whole number.`;
            inputs[key].focus();
            return;
          }
          const value = Number.parseInt(raw, 10);
          if (value !== before[key]) changes[key] = value;
        }
        const abilities = {};
        const scores = asObject(before.abilities);
        for (const key of ["str", "dex", "con", "int", "wis", "cha"]) {
          const input = inputs[`ab_${key}`];
          if (!input) continue;
          const raw = input.value.trim();
          if (raw === "" && !Number.isFinite(scores[key])) continue;
          if (!/^\d+$/.test(raw)) {
            status.textContent = `${key.toUpperCase()} is a whole number from 1 to 30.`;
            input.focus();
            return;
          }
          if (Number.parseInt(raw, 10) !== scores[key]) abilities[key] = Number.parseInt(raw, 10);
        }
        if (Object.keys(abilities).length) changes.abilities = abilities;
        for (const key of LIST_FIELDS) {
          const list = textOf(key) ? textOf(key).split(",").map((part) => part.trim()).filter(Boolean) : [];
          const old = Array.isArray(before[key]) ? before[key].map(asText) : [];
          if (list.join("\u0000") !== old.join("\u0000")) changes[key] = list;
        }
      }
      if (!Object.keys(changes).length) {
        closeEditor(character.id);
        return;
      }
      save.disabled = true;
      status.textContent = "";
      const result = await api(`${base}/characters/${character.id}`, { method: "PATCH", body: changes });
      save.disabled = false;
      if (!result.ok) {
        const detail = errorDetail(result);
        status.textContent = `Not saved: ${detail}${/[.!?]$/.test(detail) ? "" : "."}`;
        return;
      }
      editors.delete(character.id);
      // The answer is the sheet as it is now: shown at once, the snapshot follows.
      const updated = asObject(result.data);
      if (state?.characters?.[character.id] && updated.id === character.id) {
        const { id, ...fields } = updated;
        state.characters[character.id] = { ...state.characters[character.id], ...fields };
      }
      render();
      refreshSoon();
      document.querySelector(`[data-character-id="${CSS.escape(character.id)}"] .sheet-edit`)?.focus();
    });
    return form;
  }

  function renderParty() {
    const others = characters().filter((c) => c.owner_user_id !== config.userId && c.departed !== true);
    partyBlock.hidden = others.length === 0;
    placeChildren(
      party,
      others.map((c) => {
        const conditions = Array.isArray(c.conditions) ? c.conditions.map(asText).filter(Boolean) : [];
        const editor = editors.get(c.id);
        const full = editor || renderCharacter(c, { flashes: false });
        const fold = el("details", { class: "party-sheet", open: unfolded.has(c.id) || Boolean(editor) }, el("summary", { "aria-label": `${asText(c.name) || "Unnamed"}: the whole sheet` }, "Sheet"), full);
        fold.addEventListener("toggle", () => {
          if (fold.open) unfolded.add(c.id);
          else unfolded.delete(c.id);
        });
        const item = el(
          "li",
          { class: "party-member", "data-character-id": c.id },
          el("span", { class: "party-name" }, asText(c.name) || "Unnamed"),
          hpBar(c, { label: `${asText(c.name)}: hit points`, compact: true }),
          c.sheet ? el("span", { class: "party-what" }, describeCharacter(options, c)) : null,
          conditions.length ? el("span", { class: "party-conditions" }, conditions.join(", ")) : null,
          fold,
        );
        flash(item, c);
        if (editor) {
          // The open editor keeps its place: the item around it is the one already shown.
          const shown = party.querySelector(`:scope > li[data-character-id="${CSS.escape(c.id)}"]`);
          if (shown && shown.contains(editor)) return shown;
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
    /** An entity hidden from the players (entity_withdrawn): off the table now. */
    withdrawEntity(entityId) {
      const entities = asObject(state?.entities);
      if (!entityId || !(entityId in entities)) return;
      if (isGm) {
        entities[entityId] = { ...asObject(entities[entityId]), hidden: true };
      } else {
        delete entities[entityId];
      }
      renderMet();
      refreshSoon();
    },
    /** Characters that left the party with their player (player_left): off the party now. */
    markDeparted(characterIds) {
      const all = asObject(state?.characters);
      let changed = false;
      for (const id of characterIds) {
        if (all[id] && typeof all[id] === "object") {
          all[id] = { ...all[id], departed: true };
          changed = true;
        }
      }
      if (changed) renderParty();
    },
  };
}
