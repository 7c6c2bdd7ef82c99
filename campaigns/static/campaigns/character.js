// Making a character (CONTRACTS §7 "Characters"): the form a player is offered while their
// character is still the placeholder made when they joined (a banner in the room, the
// sheet's button, or at once when they arrive from the join form at …/#make-character),
// until it is filled in.
//
// A 5e campaign offers the SRD 5.1 classes and ancestries (the page embeds the server's
// lists and numbers: `character-options`), a level, and the ability scores by standard
// array (the class's placement, reorderable), point buy (27 points, SRD costs, a live
// counter) or a roll of 4d6 drop lowest, made once by the server with the campaign's dice.
// The preview of modifiers, proficiency, HP and AC is computed here for the player's
// comfort; the server derives them again, and its numbers are the ones the sheet shows.
// Other editions get a rules-light form. The server's refusals are shown in its own words
// next to the field they are about.

import { api, asObject, asText, el, errorDetail, placeChildren } from "./dom.js";

const ROLL_FORMULA_FALLBACK = "4d6kh3";

// --- The SRD's arithmetic (campaigns/srd.py), for the preview only --------------------------

export function modifier(score) {
  return Math.floor((score - 10) / 2);
}

export function signed(value) {
  return value >= 0 ? `+${value}` : `−${Math.abs(value)}`;
}

function proficiencyBonus(level) {
  return 2 + Math.floor((level - 1) / 4);
}

function maxHitPoints(cls, level, con) {
  const die = cls.hit_die;
  const bonus = modifier(con);
  let total = Math.max(1, die + bonus);
  for (let n = 1; n < level; n += 1) total += Math.max(1, Math.floor(die / 2) + 1 + bonus);
  return total;
}

function armourClass(cls, scores) {
  const dex = modifier(scores.dex);
  const armour = cls.armour;
  if (armour) {
    if (armour.dex_max === 0) return armour.base;
    return armour.base + (armour.dex_max === null || armour.dex_max === undefined ? dex : Math.min(dex, armour.dex_max));
  }
  return 10 + dex + (cls.unarmoured ? modifier(scores[cls.unarmoured]) : 0);
}

/** "Chain mail", "Unarmored Defense (CON)", "No armour": how the preview's AC is made. */
function armourWords(cls) {
  if (cls.armour) return cls.armour.name;
  if (cls.unarmoured) return `Unarmored Defense (${cls.unarmoured.toUpperCase()})`;
  return "no armour";
}

/** The embedded options (the room template's json_script), or null. */
export function readOptions() {
  const node = document.getElementById("character-options");
  if (!node) return null;
  try {
    return asObject(JSON.parse(node.textContent));
  } catch {
    return null;
  }
}

/** "Level 1 Human Fighter" (5e: the SRD names; light: the player's own words). */
export function describeCharacter(options, character) {
  const classes = Array.isArray(options?.classes) ? options.classes : [];
  const ancestries = Array.isArray(options?.ancestries) ? options.ancestries : [];
  const five = character.sheet === "5e";
  const cls = asText(character.class);
  const ancestry = asText(character.ancestry);
  const className = five ? classes.find((c) => c.key === cls)?.name || cls : cls;
  let ancestryName = five ? ancestries.find((a) => a.key === ancestry)?.name || ancestry : ancestry;
  // "Dwarf (hill dwarf)" reads better as "Hill dwarf" in a sentence.
  const sub = ancestryName.match(/^[^(]+\(([^)]+)\)$/);
  if (sub) ancestryName = sub[1].charAt(0).toUpperCase() + sub[1].slice(1);
  const level = Number.isInteger(character.level) ? `Level ${character.level}` : "";
  return [level, ancestryName, className].filter(Boolean).join(" ");
}

/** Which field a refusal of the server is about (its `code`, else its words). */
function fieldOfError(code, detail) {
  const words = asText(detail).toLowerCase();
  if (code === "point_buy_over_budget") return "abilities";
  if (code === "invalid_method") return "method";
  if (code === "character_exists" || code === "player_only") return "submit";
  if (/^(give your character a name|name\b)/.test(words)) return "name";
  if (/^backstory/.test(words)) return "backstory";
  if (/^(choose a class|class\b)/.test(words)) return "class";
  if (/half-elf|^(choose an? ancestry|ancestry\b)|increases \d+ different/.test(words)) return "ancestry";
  if (/^level\b/.test(words)) return "level";
  if (/abilit|score|point buy|standard array|dice choose/.test(words)) return "abilities";
  return "submit";
}

export function createCharacterMaker({ config, options, table, announce }) {
  const dialog = document.getElementById("character-dialog");
  const base = `/api/campaigns/${config.campaignId}`;
  const opts = asObject(options);
  const five = opts.sheet === "5e";
  const abilities = Array.isArray(opts.abilities) ? opts.abilities : [];
  const classes = Array.isArray(opts.classes) ? opts.classes : [];
  const ancestries = Array.isArray(opts.ancestries) ? opts.ancestries : [];
  const standard = Array.isArray(opts.standard_array) ? opts.standard_array : [15, 14, 13, 12, 10, 8];
  const pointBuy = { budget: 27, min: 8, max: 15, costs: {}, ...asObject(opts.point_buy) };
  const levels = { min: 1, max: 20, ...asObject(opts.levels) };
  const range = { min: 1, max: 30, ...asObject(opts.ability_range) };
  const rollFormula = asText(asObject(opts.roll).formula) || ROLL_FORMULA_FALLBACK;
  const attribution = asObject(opts.attribution);

  let busy = false;
  /** This player's 4d6 rolls as they arrive (roll_result events), and the made sheet's id. */
  const myRolls = [];
  let rolledFor = null; // {characterId, seq}: the character_created that followed a roll
  let resultFor = null; // the character shown in the "your rolls" view

  // --- The form's parts --------------------------------------------------------------------

  const fields = {};
  const errors = {};
  const form = el("form", { id: "character-form", class: "character-form", novalidate: true });
  const title = el("h2", { id: "character-title", class: "character-title" }, "Make your character");
  const formError = errorLine("form");

  function errorLine(key) {
    const node = el("p", { id: `cf-${key}-error`, class: "cf-error", role: "alert", hidden: true });
    errors[key] = node;
    return node;
  }

  function showError(key, text) {
    const node = errors[key] || errors.submit;
    node.textContent = text;
    node.hidden = !text;
    const input = fields[key];
    if (input && input.setAttribute) {
      if (text) input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
    }
  }

  function clearErrors() {
    for (const key of Object.keys(errors)) showError(key, "");
  }

  function field(key, label, control, help) {
    control.id = `cf-${key}`;
    fields[key] = control;
    const described = [help ? `cf-${key}-help` : "", `cf-${key}-error`].filter(Boolean).join(" ");
    control.setAttribute("aria-describedby", described);
    return el(
      "div",
      { class: `cf-field cf-field-${key}` },
      el("label", { for: control.id }, label),
      control,
      help ? el("p", { id: `cf-${key}-help`, class: "cf-help muted small" }, help) : null,
      errorLine(key),
    );
  }

  // Name, class, ancestry, level.
  const nameInput = el("input", { type: "text", maxlength: "60", required: true, autocomplete: "off" });
  const levelInput = el("input", { type: "number", inputmode: "numeric", min: String(levels.min), max: String(levels.max), value: "1", required: true });
  let classInput;
  let ancestryInput;
  if (five) {
    classInput = el("select", {}, classes.map((c) => el("option", { value: c.key }, `${c.name} (d${c.hit_die})`)));
    classInput.value = classes.some((c) => c.key === "fighter") ? "fighter" : classes[0]?.key || "";
    ancestryInput = el("select", {}, ancestries.map((a) => el("option", { value: a.key }, a.name)));
    ancestryInput.value = ancestries.some((a) => a.key === "human") ? "human" : ancestries[0]?.key || "";
  } else {
    classInput = el("input", { type: "text", maxlength: "40", autocomplete: "off", placeholder: "Witch, pilot, knight…" });
    ancestryInput = el("input", { type: "text", maxlength: "40", autocomplete: "off", placeholder: "Human, android, fae…" });
  }
  const backstoryInput = el("textarea", { rows: "4", maxlength: "4000", placeholder: "Where they come from, what they want, what they fear…" });

  // --- 5e: the ability scores ----------------------------------------------------------------

  let method = "standard_array";
  const placed = {}; // standard array: ability -> value
  let placedByHand = false;
  const bought = Object.fromEntries(abilities.map((a) => [a.key, pointBuy.min]));
  const choices = new Set(); // half-elf: the two abilities that get +1
  let choicesByHand = false;

  const currentClass = () => classes.find((c) => c.key === classInput.value) || classes[0];
  const currentAncestry = () => ancestries.find((a) => a.key === ancestryInput.value) || ancestries[0];

  function placeForClass() {
    const order = currentClass()?.ability_order || abilities.map((a) => a.key);
    const values = [...standard].sort((a, b) => b - a);
    order.forEach((key, i) => {
      placed[key] = values[i];
    });
  }

  function defaultChoices() {
    const ancestry = currentAncestry();
    choices.clear();
    if (!ancestry?.choose) return;
    const fixed = Object.keys(asObject(ancestry.increases));
    const order = currentClass()?.ability_order || abilities.map((a) => a.key);
    for (const key of order.filter((k) => !fixed.includes(k)).slice(0, ancestry.choose)) choices.add(key);
  }

  function increases() {
    const ancestry = currentAncestry();
    const result = { ...asObject(ancestry?.increases) };
    if (ancestry?.choose) for (const key of choices) result[key] = (result[key] || 0) + 1;
    return result;
  }

  function cost(score) {
    const value = pointBuy.costs[String(score)];
    return Number.isInteger(value) ? value : null;
  }

  function spent() {
    let total = 0;
    for (const a of abilities) {
      const c = cost(bought[a.key]);
      if (c === null) return null;
      total += c;
    }
    return total;
  }

  /** The scores before the ancestry (null for a roll: the dice decide). */
  function baseScores() {
    if (method === "standard_array") return { ...placed };
    if (method === "point_buy") return { ...bought };
    return null;
  }

  // Method radios.
  const methodBox = el("fieldset", { class: "cf-methods" }, el("legend", {}, "Ability scores"));
  const methodRadios = {};
  const METHODS = [
    ["standard_array", "Standard array", "15, 14, 13, 12, 10, 8"],
    ["point_buy", "Point buy", `${pointBuy.budget} points`],
    ["roll", "Roll 4d6", "drop the lowest, once"],
  ];
  const methodRow = el("div", { class: "cf-method-row", role: "radiogroup", "aria-label": "How to find the scores" });
  for (const [key, label, hint] of METHODS) {
    const radio = el("input", { type: "radio", name: "ability_method", value: key, id: `cf-method-${key}`, checked: key === method });
    radio.addEventListener("change", () => {
      if (!radio.checked) return;
      method = key;
      showError("abilities", "");
      showError("method", "");
      render();
    });
    methodRadios[key] = radio;
    methodRow.append(el("label", { class: "cf-method", for: radio.id }, radio, el("span", { class: "cf-method-name" }, label), el("span", { class: "cf-method-hint" }, hint)));
  }
  methodBox.append(methodRow, errorLine("method"));
  fields.method = methodRow;

  const scoresBox = el("div", { class: "cf-scores", id: "cf-scores" });
  const pointsLine = el("p", { id: "cf-points", class: "cf-points", role: "status", "aria-live": "polite" });
  const resetButton = el("button", { type: "button", class: "btn btn-ghost btn-tiny", id: "cf-reset" }, "Class default");
  resetButton.addEventListener("click", () => {
    placedByHand = false;
    placeForClass();
    render();
  });
  const choicesBox = el("fieldset", { class: "cf-choices", id: "cf-choices" });
  methodBox.append(scoresBox, pointsLine, errorLine("abilities"));
  fields.abilities = scoresBox;

  const preview = el("p", { id: "cf-preview", class: "cf-preview", "aria-live": "polite" });

  function standardRow(a) {
    const select = el(
      "select",
      { id: `cf-std-${a.key}`, "aria-label": `${a.name} (before your ancestry)`, "data-ability": a.key },
      standard.map((v) => el("option", { value: String(v) }, String(v))),
    );
    select.value = String(placed[a.key]);
    select.addEventListener("change", () => {
      // Each value once: taking a value swaps it with the ability that had it.
      const value = Number(select.value);
      const other = abilities.find((b) => b.key !== a.key && placed[b.key] === value);
      if (other) placed[other.key] = placed[a.key];
      placed[a.key] = value;
      const wasByHand = placedByHand;
      placedByHand = true;
      if (!wasByHand) renderScores(); // the "Class default" button appears
      updateLive();
      document.getElementById(`cf-std-${a.key}`)?.focus();
    });
    return select;
  }

  function pointRow(a) {
    const input = el("input", {
      type: "number",
      inputmode: "numeric",
      id: `cf-pb-${a.key}`,
      min: String(pointBuy.min),
      max: String(pointBuy.max),
      value: String(bought[a.key]),
      "aria-label": `${a.name} (before your ancestry)`,
      "data-ability": a.key,
    });
    input.addEventListener("input", () => {
      const value = Number.parseInt(input.value, 10);
      bought[a.key] = Number.isFinite(value) ? value : NaN;
      showError("abilities", "");
      updateLive();
    });
    const step = (delta) => {
      if (!Number.isInteger(bought[a.key])) return;
      bought[a.key] += delta;
      input.value = String(bought[a.key]);
      showError("abilities", "");
      updateLive();
    };
    const down = el("button", { type: "button", class: "cf-step", id: `cf-pb-${a.key}-down`, "aria-label": `Lower ${a.name}`, onclick: () => step(-1) }, "−");
    const up = el("button", { type: "button", class: "cf-step", id: `cf-pb-${a.key}-up`, "aria-label": `Raise ${a.name}`, onclick: () => step(1) }, "+");
    return el("span", { class: "cf-stepper" }, down, input, up);
  }

  function renderScores() {
    const plus = increases();
    const scores = baseScores();
    const cls = currentClass();
    const saves = new Set(cls?.saving_throws || []);
    const rows = abilities.map((a) => {
      const bonus = plus[a.key] || 0;
      let control;
      if (method === "standard_array") control = standardRow(a);
      else if (method === "point_buy") control = pointRow(a);
      else control = el("span", { class: "cf-dice-slot", title: "The dice decide" }, "🎲");
      const final = scores && Number.isFinite(scores[a.key]) ? Math.min(range.max, scores[a.key] + bonus) : null;
      return el(
        "div",
        { class: "cf-score-row", "data-ability": a.key },
        el("span", { class: "cf-ability" }, el("abbr", { title: a.name }, a.key.toUpperCase()), saves.has(a.key) ? el("span", { class: "cf-save", title: "Saving throw proficiency" }, "save") : null),
        el("span", { class: "cf-control" }, control),
        method === "point_buy" ? el("span", { class: "cf-cost", title: "Points this score costs" }, cost(bought[a.key]) === null ? "–" : `${cost(bought[a.key])} pt`) : null,
        el("span", { class: "cf-bonus", title: "Your ancestry's increase" }, bonus ? `+${bonus}` : ""),
        el("span", { class: "cf-final", "data-final": a.key }, final === null ? "?" : String(final)),
        el("span", { class: "cf-mod", "data-mod": a.key }, final === null ? "" : signed(modifier(final))),
      );
    });
    scoresBox.dataset.method = method;
    placeChildren(scoresBox, [
      el(
        "div",
        { class: "cf-score-head", "aria-hidden": "true" },
        el("span", {}, ""),
        el("span", {}, method === "roll" ? "" : "Score"),
        method === "point_buy" ? el("span", {}, "Cost") : null,
        el("span", { title: "Your ancestry's increase" }, "Bonus"),
        el("span", {}, "Total"),
        el("span", {}, "Mod"),
      ),
      ...rows,
      method === "standard_array" ? el("div", { class: "cf-score-tools" }, el("span", { class: "muted small" }, placedByHand ? "Placed by you." : `Placed for a ${cls?.name || "class"}: pick a value to swap it.`), placedByHand ? resetButton : null) : null,
      method === "roll"
        ? el(
            "p",
            { class: "cf-roll-note small" },
            `The server rolls ${rollFormula.replace("kh3", "")} six times with the campaign's dice (the lowest die of each dropped), in front of the table, and places the totals for a ${cls?.name || "class"}, highest first: ${(cls?.ability_order || []).map((k) => k.toUpperCase()).join(", ")}. `,
            el("strong", {}, "Once only: the rolls are final."),
          )
        : null,
    ].filter(Boolean));
  }

  function renderChoices() {
    const ancestry = currentAncestry();
    if (!five || !ancestry?.choose) {
      choicesBox.hidden = true;
      choicesBox.replaceChildren();
      return;
    }
    const fixed = Object.keys(asObject(ancestry.increases));
    choicesBox.hidden = false;
    choicesBox.replaceChildren(
      el("legend", {}, `${ancestry.name}: +1 to ${ancestry.choose} other abilities`),
      el(
        "div",
        { class: "cf-choice-row" },
        abilities
          .filter((a) => !fixed.includes(a.key))
          .map((a) => {
            const box = el("input", { type: "checkbox", value: a.key, checked: choices.has(a.key), id: `cf-choice-${a.key}` });
            box.addEventListener("change", () => {
              if (box.checked) choices.add(a.key);
              else choices.delete(a.key);
              choicesByHand = true;
              showError("ancestry", "");
              render();
            });
            return el("label", { class: "cf-choice", for: box.id }, box, a.key.toUpperCase());
          }),
      ),
    );
  }

  /** What can change while a number is typed, without rebuilding the inputs. */
  function updateLive() {
    const scores = baseScores();
    const plus = increases();
    if (scores) {
      for (const a of abilities) {
        const final = Number.isFinite(scores[a.key]) ? Math.min(range.max, scores[a.key] + (plus[a.key] || 0)) : null;
        const finalNode = scoresBox.querySelector(`[data-final="${a.key}"]`);
        const modNode = scoresBox.querySelector(`[data-mod="${a.key}"]`);
        if (finalNode) finalNode.textContent = final === null ? "?" : String(final);
        if (modNode) modNode.textContent = final === null ? "" : signed(modifier(final));
      }
    }
    if (method === "standard_array") {
      for (const a of abilities) {
        const select = document.getElementById(`cf-std-${a.key}`);
        if (select && select.value !== String(placed[a.key])) select.value = String(placed[a.key]);
      }
    }
    if (method === "point_buy") {
      const total = spent();
      const left = total === null ? -Infinity : pointBuy.budget - total;
      for (const a of abilities) {
        const current = bought[a.key];
        const whole = Number.isInteger(current);
        const down = document.getElementById(`cf-pb-${a.key}-down`);
        const up = document.getElementById(`cf-pb-${a.key}-up`);
        if (down) down.disabled = !(whole && current > pointBuy.min);
        // Never past 15, and never into debt: a step that would overspend is not offered.
        const step = whole ? (cost(current + 1) ?? Infinity) - (cost(current) ?? 0) : Infinity;
        if (up) up.disabled = !(whole && current < pointBuy.max && step <= left);
      }
      pointsLine.hidden = false;
      pointsLine.dataset.state = total === null || left < 0 ? "over" : left === 0 ? "done" : "left";
      pointsLine.textContent =
        total === null
          ? `Each score is ${pointBuy.min} to ${pointBuy.max} before your ancestry.`
          : left < 0
            ? `${total} of ${pointBuy.budget} points: ${-left} over. Lower a score.`
            : `${total} of ${pointBuy.budget} points spent, ${left} left.`;
      for (const a of abilities) {
        const costNode = scoresBox.querySelector(`.cf-score-row[data-ability="${a.key}"] .cf-cost`);
        if (costNode) costNode.textContent = cost(bought[a.key]) === null ? "–" : `${cost(bought[a.key])} pt`;
      }
    } else {
      pointsLine.hidden = true;
      pointsLine.textContent = "";
    }
    renderPreview();
  }

  function renderPreview() {
    if (!five) return;
    const cls = currentClass();
    const level = Number.parseInt(levelInput.value, 10);
    const okLevel = Number.isInteger(level) && level >= levels.min && level <= levels.max;
    const scores = baseScores();
    const plus = increases();
    const parts = [el("span", {}, "Proficiency ", el("strong", {}, okLevel ? signed(proficiencyBonus(level)) : "?"))];
    if (scores && abilities.every((a) => Number.isFinite(scores[a.key])) && cls) {
      const final = Object.fromEntries(abilities.map((a) => [a.key, Math.min(range.max, scores[a.key] + (plus[a.key] || 0))]));
      parts.push(el("span", {}, "HP ", el("strong", { "data-preview": "hp" }, okLevel ? String(maxHitPoints(cls, level, final.con)) : "?")));
      parts.push(el("span", {}, "AC ", el("strong", { "data-preview": "ac" }, String(armourClass(cls, final))), ` (${armourWords(cls)})`));
    } else {
      const after = method === "roll" ? ", after the dice" : "";
      parts.push(el("span", {}, `HP: d${cls?.hit_die || "?"} + CON, AC: ${cls ? armourWords(cls) : "?"}${after}`));
    }
    preview.replaceChildren(el("span", { class: "cf-preview-label" }, "Preview"), ...parts);
  }

  function render() {
    if (!five) return;
    for (const [key, radio] of Object.entries(methodRadios)) radio.checked = key === method;
    renderChoices();
    renderScores();
    updateLive();
    submitButton.textContent = method === "roll" ? "Roll the dice and make my character" : "Make my character";
  }

  // --- Rules-light: abilities if the player wants them --------------------------------------

  const lightToggle = el("input", { type: "checkbox", id: "cf-light-abilities" });
  const lightScores = el("div", { class: "cf-light-scores", hidden: true });
  if (!five) {
    for (const a of abilities) {
      const input = el("input", { type: "number", inputmode: "numeric", min: String(range.min), max: String(range.max), value: "10", id: `cf-light-${a.key}`, "data-ability": a.key });
      const mod = el("span", { class: "cf-mod" }, signed(0));
      input.addEventListener("input", () => {
        const value = Number.parseInt(input.value, 10);
        mod.textContent = Number.isFinite(value) ? signed(modifier(value)) : "";
      });
      lightScores.append(el("label", { class: "cf-light-score", for: input.id }, el("abbr", { title: a.name }, a.key.toUpperCase()), input, mod));
    }
    lightToggle.addEventListener("change", () => {
      lightScores.hidden = !lightToggle.checked;
    });
    fields.abilities = lightScores;
  }

  // --- Assembling the form --------------------------------------------------------------------

  const submitButton = el("button", { type: "submit", class: "btn btn-primary", id: "cf-submit" }, "Make my character");
  const laterButton = el("button", { type: "button", class: "btn btn-ghost", id: "cf-later", onclick: () => close() }, "Later");

  form.append(
    el(
      "div",
      { class: "cf-head" },
      title,
      el("p", { class: "muted small cf-lead" }, five ? "A 5e character from the SRD 5.1: the server works out the numbers." : `A rules-light sheet for this ${asText(opts.edition) || "campaign"}: a name, a few words, a story.`),
    ),
    formError,
    el(
      "div",
      { class: "cf-grid" },
      field("name", "Name", nameInput),
      field("class", "Class", classInput),
      field("ancestry", "Ancestry", ancestryInput),
      field("level", "Level", levelInput, `${levels.min} to ${levels.max}`),
    ),
    five ? choicesBox : null,
    five
      ? methodBox
      : el(
          "fieldset",
          { class: "cf-methods" },
          el("legend", {}, "Ability scores"),
          el("label", { class: "cf-choice", for: lightToggle.id }, lightToggle, "Give them ability scores (optional)"),
          lightScores,
          errorLine("abilities"),
        ),
    five ? preview : null,
    field("backstory", "Backstory", backstoryInput, "The table reads it; you can change it later."),
    el("div", { class: "cf-actions" }, submitButton, laterButton, errorLine("submit")),
    five
      ? el(
          "p",
          { class: "cf-credit small muted" },
          asText(attribution.text) || "Classes and ancestries from the SRD 5.1 by Wizards of the Coast LLC, CC-BY-4.0.",
          " ",
          el("a", { href: asText(attribution.licence_url) || "https://creativecommons.org/licenses/by/4.0/legalcode", target: "_blank", rel: "noopener" }, "CC-BY-4.0"),
        )
      : null,
  );

  classInput.addEventListener("change", () => {
    if (!placedByHand) placeForClass();
    if (!choicesByHand) defaultChoices();
    showError("class", "");
    render();
  });
  ancestryInput.addEventListener("change", () => {
    choicesByHand = false;
    defaultChoices();
    showError("ancestry", "");
    render();
  });
  levelInput.addEventListener("input", () => {
    showError("level", "");
    renderPreview();
  });
  nameInput.addEventListener("input", () => showError("name", ""));
  backstoryInput.addEventListener("input", () => showError("backstory", ""));

  if (five) {
    placeForClass();
    defaultChoices();
  }

  // --- Checking before sending (the server checks again) ---------------------------------------

  function body() {
    const data = {
      name: nameInput.value.trim(),
      class: classInput.value.trim(),
      ancestry: ancestryInput.value.trim(),
      level: Number.parseInt(levelInput.value, 10),
      backstory: backstoryInput.value.trim(),
    };
    if (five) {
      data.ability_method = method;
      if (method === "standard_array" && placedByHand) data.abilities = { ...placed };
      if (method === "point_buy") data.abilities = { ...bought };
      if (currentAncestry()?.choose && choicesByHand) data.ancestry_choices = [...choices];
    } else if (lightToggle.checked) {
      data.abilities = Object.fromEntries(abilities.map((a) => [a.key, Number.parseInt(document.getElementById(`cf-light-${a.key}`).value, 10)]));
    }
    return data;
  }

  /** The first problem the page can see by itself, as [field, words], or null. */
  function problem(data) {
    if (!data.name) return ["name", "Give your character a name."];
    if (!Number.isInteger(data.level) || data.level < levels.min || data.level > levels.max) return ["level", `The level is a whole number from ${levels.min} to ${levels.max}.`];
    if (five && method === "point_buy") {
      for (const a of abilities) {
        const score = bought[a.key];
        if (!Number.isInteger(score) || score < pointBuy.min || score > pointBuy.max) {
          return ["abilities", `With point buy each score is ${pointBuy.min} to ${pointBuy.max} before your ancestry's increases; ${a.name} is ${Number.isFinite(score) ? score : "empty"}.`];
        }
      }
      const total = spent();
      if (total > pointBuy.budget) {
        return ["abilities", `These scores cost ${total} points; point buy has ${pointBuy.budget}. Lower a score by ${total - pointBuy.budget} points' worth first.`];
      }
    }
    const ancestry = currentAncestry();
    if (five && ancestry?.choose && choices.size !== ancestry.choose) return ["ancestry", `A ${ancestry.name.toLowerCase()} picks exactly ${ancestry.choose} abilities for +1.`];
    if (!five && data.abilities) {
      for (const a of abilities) {
        const score = data.abilities[a.key];
        if (!Number.isInteger(score) || score < range.min || score > range.max) return ["abilities", `${a.name} is a whole number from ${range.min} to ${range.max}.`];
      }
    }
    return null;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (busy) return; // one request at a time: a double click never sends twice
    clearErrors();
    const data = body();
    const found = problem(data);
    if (found) {
      showError(found[0], found[1]);
      (fields[found[0]]?.querySelector?.("input, select") || fields[found[0]])?.focus?.();
      return;
    }
    busy = true;
    submitButton.disabled = true;
    const label = submitButton.textContent;
    submitButton.textContent = method === "roll" && five ? "Rolling…" : "Making…";
    const result = await api(`${base}/characters`, { method: "POST", body: data });
    busy = false;
    submitButton.disabled = false;
    submitButton.textContent = label;
    if (!result.ok) {
      const detail = errorDetail(result);
      const code = asText(result.data?.code);
      const key = result.status === 400 || result.status === 409 || result.status === 403 ? fieldOfError(code, detail) : "submit";
      showError(key, `${capital(detail)}${/[.!?]$/.test(detail) ? "" : "."}`);
      if (code === "character_exists") {
        errors.submit.append(" ", el("button", { type: "button", class: "btn btn-ghost btn-tiny", onclick: () => close() }, "Show my sheet"));
      }
      return;
    }
    const made = asObject(result.data);
    announce?.(`${asText(made.name)} is ready.`);
    table.refreshNow();
    if (five && made.ability_method === "roll") showRolls(made);
    else close();
  });

  function capital(text) {
    return text ? text.charAt(0).toUpperCase() + text.slice(1) : text;
  }

  // --- After a roll: the dice, as they fell -----------------------------------------------------

  const resultView = el("div", { class: "cf-result", id: "cf-result", hidden: true });

  function rollsOf(characterId) {
    if (!rolledFor || rolledFor.characterId !== characterId) return null;
    const rolls = myRolls.filter((r) => r.seq < rolledFor.seq && r.seq >= rolledFor.seq - 2 * 6 - 1).slice(-6);
    return rolls.length === 6 ? rolls : null;
  }

  function showRolls(made) {
    resultFor = made;
    form.hidden = true;
    resultView.hidden = false;
    renderRolls();
    resultView.querySelector("button")?.focus();
  }

  function renderRolls() {
    if (!resultFor) return;
    const rolls = rollsOf(asText(resultFor.id));
    const cls = classes.find((c) => c.key === resultFor.class);
    const order = cls?.ability_order || [];
    const sorted = rolls ? [...rolls].map((r, i) => ({ ...r, i })).sort((a, b) => b.total - a.total) : [];
    const placedTo = new Map(sorted.map((r, n) => [r.i, order[n]]));
    const scores = asObject(resultFor.abilities);
    resultView.replaceChildren(
      el("h2", { class: "character-title", tabindex: "-1" }, "The dice have spoken"),
      el("p", { class: "muted small" }, `Six rolls of 4d6, the lowest die of each dropped, placed for a ${cls?.name || "class"} from the highest. Everyone at the table saw them.`),
      rolls
        ? el(
            "ol",
            { class: "cf-rolls" },
            rolls.map((r, i) =>
              el(
                "li",
                { class: "cf-roll" },
                el(
                  "span",
                  { class: "roll-dice" },
                  r.dice.map((d) => el("span", { class: `die${d.kept === false ? " dropped" : ""}`, title: d.kept === false ? "dropped" : "kept" }, el("span", { class: "die-sides" }, "d6"), el("span", { class: "die-value" }, asText(d.value)))),
                ),
                el("span", { class: "cf-roll-total" }, `= ${r.total}`),
                placedTo.get(i) ? el("span", { class: "cf-roll-to" }, `→ ${placedTo.get(i).toUpperCase()}`) : null,
              ),
            ),
          )
        : el("p", { class: "muted" }, "The rolls are on their way…"),
      el(
        "p",
        { class: "cf-result-scores" },
        abilities.map((a) => el("span", { class: "cf-result-score" }, el("abbr", { title: a.name }, a.key.toUpperCase()), ` ${asText(scores[a.key])} (${signed(modifier(Number(scores[a.key]) || 10))})`)),
      ),
      el("p", { class: "cf-result-derived" }, `HP ${asText(resultFor.max_hp)} · AC ${asText(resultFor.ac)} · Proficiency ${signed(Number(resultFor.proficiency_bonus) || 2)}`),
      el("div", { class: "cf-actions" }, el("button", { type: "button", class: "btn btn-primary", onclick: () => close() }, "To the table")),
    );
  }

  // --- The dialog ---------------------------------------------------------------------------------

  dialog?.append(form, resultView);
  dialog?.addEventListener("close", () => {
    form.hidden = false;
    resultView.hidden = true;
    resultFor = null;
  });
  // A click on the backdrop (outside the dialog's box) is "Later".
  dialog?.addEventListener("click", (event) => {
    if (event.target === dialog) close();
  });

  function open(character) {
    if (!dialog || config.role === "gm") return;
    if (character && !nameInput.value) nameInput.value = asText(character.name);
    if (five) render();
    form.hidden = false;
    resultView.hidden = true;
    if (!dialog.open) dialog.showModal();
    nameInput.focus();
  }

  function close() {
    if (dialog?.open) dialog.close();
  }

  function ownCharacter(state) {
    return Object.entries(asObject(state?.characters))
      .map(([id, c]) => ({ id, ...asObject(c) }))
      .find((c) => c.owner_user_id === config.userId);
  }

  return {
    open: () => open(ownCharacter(table.state())),
    isOpen: () => Boolean(dialog?.open),
    onEvent(event) {
      const p = asObject(event.payload);
      if (event.type === "roll_result" && event.actor?.user_id === config.userId && p.formula === rollFormula) {
        myRolls.push({ seq: event.seq, total: Number(p.total), dice: (Array.isArray(p.dice) ? p.dice : []).map(asObject) });
        if (myRolls.length > 24) myRolls.shift();
      } else if (event.type === "character_created") {
        const character = asObject(p.character);
        if (character.owner_user_id === config.userId && character.ability_method === "roll") {
          rolledFor = { characterId: asText(character.id), seq: event.seq };
          renderRolls();
        }
      }
    },
  };
}
