// The campaign's setup in the room (CONTRACTS §7 "Campaign setup"): its premise, tone,
// turns, lines and veils, shown to every member in the table panel; its GM edits them here
// (PATCH /api/campaigns/<id>/, only the fields that changed) and archives or brings back
// the campaign. Every change comes back to the whole table as `campaign_updated`, which
// updates the panel at once; the campaign's detail is then read again.
//
// The server's refusals are shown next to the field they are about, in plain words.

import { api, asObject, asText, el } from "./dom.js";

// The server's limits (campaigns/events.py), checked here first with the create form's words.
const NAME_MAX = 120;
const PREMISE_MAX = 2000;
const TONE_MAX = 200;
const ITEM_MAX = 200;
const ITEMS_MAX = 20;
const DETAIL_DEBOUNCE_MS = 300;

const FIELDS = ["name", "premise", "tone", "lines", "veils"];
const LABELS = { name: "the name", premise: "the premise", tone: "the tone", lines: "the lines", veils: "the veils" };

/** A textarea's lines as a list: blank lines and repeats dropped (as the create form does). */
export function linesOf(text) {
  const items = [];
  for (const line of asText(text).split(/\r?\n/)) {
    const item = line.split(/\s+/).filter(Boolean).join(" ");
    if (item && !items.includes(item)) items.push(item);
  }
  return items;
}

function checkList(items, label) {
  const long = items.findIndex((item) => item.length > ITEM_MAX);
  if (long >= 0) return `Keep each of your ${label} under ${ITEM_MAX} characters (line ${long + 1} is longer).`;
  if (items.length > ITEMS_MAX) return `At most ${ITEMS_MAX} ${label}, one per line (you wrote ${items.length}).`;
  return "";
}

/** A DRF message in plainer words ("Ensure this field has no more than 200 characters."). */
function plainMessage(message, value) {
  const text = asText(message);
  let match = text.match(/no more than (\d+) characters/);
  if (match) return `At most ${match[1]} characters${typeof value === "string" ? ` (this has ${value.length})` : ""}.`;
  match = text.match(/no more than (\d+) elements/);
  if (match) return `At most ${match[1]}, one per line${Array.isArray(value) ? ` (you wrote ${value.length})` : ""}.`;
  if (/may not be blank|required/.test(text)) return "This cannot be empty.";
  return text;
}

/** A 400's field errors as {field: words}; `_` for what is about no one field. */
export function fieldErrors(data, sent = {}) {
  const errors = {};
  const detail = asObject(data).detail;
  if (typeof detail === "string") {
    errors._ = detail;
    return errors;
  }
  for (const [field, problems] of Object.entries(asObject(detail))) {
    const key = FIELDS.includes(field) || field === "archived" ? field : "_";
    let words;
    if (Array.isArray(problems)) words = problems.map((problem) => plainMessage(problem, sent[field])).join(" ");
    else if (problems && typeof problems === "object") {
      // A list's items: {"2": ["Ensure this field has no more than 200 characters."]}
      words = Object.entries(problems)
        .map(([index, list]) => `Line ${Number(index) + 1}: ${(Array.isArray(list) ? list : [list]).map((m) => plainMessage(m)).join(" ")}`)
        .join(" ");
    } else words = plainMessage(problems, sent[field]);
    errors[key] = errors[key] ? `${errors[key]} ${words}` : words;
  }
  if (!Object.keys(errors).length) errors._ = "The change was refused.";
  return errors;
}

/**
 * The setup panel. `elements`: view, editor (GM only), badge. `onArchived(archived, {live})`
 * is told whenever the campaign's archived status is known or changes; `onRenamed(name)`
 * when its name changes.
 */
export function createSetup({ config, elements, onArchived, onRenamed, notify }) {
  const { view, editorBox, badge } = elements;
  const isGm = config.role === "gm";
  const url = `/api/campaigns/${config.campaignId}/`;
  /** What is shown: the campaign's detail (name, premise, tone, turn_mode, lines, veils, archived). */
  let setup = null;
  let archived = Boolean(config.archived);
  let detailTimer = null;
  let form = null; // the GM's open editor (kept while the panel behind it changes)
  let busy = false;
  /** The GM's last word about a change ({text, ok}), kept across re-renders of the box. */
  let said = null;

  // --- Reading --------------------------------------------------------------------------------

  async function loadDetail() {
    const result = await api(url);
    if (!result.ok || !result.data) {
      if (!setup) view.replaceChildren(el("p", { class: "muted small" }, "The setup could not be read; it shows again once the room reconnects."));
      return;
    }
    const data = asObject(result.data);
    setup = {
      name: asText(data.name),
      premise: asText(data.premise),
      tone: asText(data.tone),
      turn_mode: asText(data.turn_mode) || "free",
      lines: Array.isArray(data.lines) ? data.lines.map(asText) : [],
      veils: Array.isArray(data.veils) ? data.veils.map(asText) : [],
    };
    render();
    if (typeof data.archived === "boolean") setArchived(data.archived, { live: false });
  }

  function loadSoon() {
    clearTimeout(detailTimer);
    detailTimer = setTimeout(loadDetail, DETAIL_DEBOUNCE_MS);
  }

  // --- Showing --------------------------------------------------------------------------------

  function list(items, empty, className) {
    if (!items.length) return el("p", { class: "muted small setup-none" }, empty);
    return el("ul", { class: `setup-list ${className}` }, items.map((item) => el("li", {}, item)));
  }

  function render() {
    if (!setup) return;
    view.replaceChildren(
      el("h3", { class: "setup-label" }, "Premise"),
      setup.premise ? el("p", { class: "setup-premise" }, setup.premise) : el("p", { class: "muted small setup-none setup-premise-none" }, "No premise: the story finds its own way."),
      el(
        "p",
        { class: "setup-facts small" },
        el("span", {}, el("span", { class: "setup-fact-label" }, "Tone "), setup.tone ? el("span", { class: "setup-tone" }, setup.tone) : el("span", { class: "muted" }, "not set")),
        el(
          "span",
          {},
          el("span", { class: "setup-fact-label" }, "Turns "),
          el("span", { class: "setup-turns" }, setup.turn_mode === "rounds" ? "rounds (the DM waits for everyone present)" : "free (the DM answers as the table acts)"),
        ),
      ),
      el("h3", { class: "setup-label" }, "Lines ", el("span", { class: "setup-hint" }, "never in the story")),
      list(setup.lines, "None agreed.", "setup-lines"),
      el("h3", { class: "setup-label" }, "Veils ", el("span", { class: "setup-hint" }, "only offscreen")),
      list(setup.veils, "None agreed.", "setup-veils"),
      el("p", { class: "muted small setup-xcard-note" }, "Anyone can tap the X-card, under the action box, to move the story away from a scene. Nobody is told who tapped it."),
    );
    renderEditorBox();
  }

  /** The `changes` of a campaign_updated event, shown at once (the detail is read again after). */
  function applyChanges(changes) {
    const c = asObject(changes);
    if (setup) {
      for (const key of ["name", "premise", "tone", "turn_mode"]) if (typeof c[key] === "string") setup[key] = c[key];
      for (const key of ["lines", "veils"]) if (Array.isArray(c[key])) setup[key] = c[key].map(asText);
      render();
    }
    if (typeof c.name === "string") onRenamed?.(c.name);
  }

  function setArchived(value, { live }) {
    const changed = value !== archived;
    archived = value;
    badge.hidden = !archived;
    if (form) updateArchiveButton();
    else renderEditorBox();
    if (changed || !live) onArchived?.(archived, { live, changed });
  }

  // --- The GM's editor ------------------------------------------------------------------------

  function renderEditorBox() {
    if (!isGm || !editorBox || form) return;
    editorBox.replaceChildren(
      el(
        "div",
        { class: "setup-gm-actions" },
        el("button", { type: "button", class: "btn btn-secondary btn-small", id: "setup-edit", disabled: !setup, onclick: openEditor }, "Edit setup"),
        archiveButton(),
      ),
      statusLine(),
    );
  }

  function statusLine() {
    const node = el("p", { id: "setup-archive-status", class: "gm-status small", role: "status" });
    if (said) say(node, said.text, said.ok);
    return node;
  }

  function archiveButton() {
    return el(
      "button",
      {
        type: "button",
        class: `btn btn-ghost btn-small setup-archive${archived ? " setup-unarchive" : ""}`,
        id: "setup-archive",
        onclick: (event) => toggleArchived(event.currentTarget),
      },
      archived ? "Bring the campaign back" : "Archive the campaign",
    );
  }

  function updateArchiveButton() {
    form?.querySelector("#setup-archive")?.replaceWith(archiveButton());
  }

  async function toggleArchived(button) {
    const wanted = !archived;
    const question = wanted
      ? "Archive this campaign? It becomes read-only for everyone (no actions, rolls or DM turns) and leaves the campaign list. You can bring it back at any time."
      : "Bring this campaign back into play? Everyone can act again.";
    if (!window.confirm(question)) return;
    button.disabled = true;
    const status = document.getElementById("setup-archive-status");
    const result = await api(url, { method: "PATCH", body: { archived: wanted } });
    button.disabled = false;
    if (result.ok) {
      setArchived(Boolean(asObject(result.data).archived), { live: true });
      if (status) say(status, wanted ? "Archived: the campaign is read-only." : "Back in play.", true);
    } else {
      const words = fieldErrors(result.data);
      const text = words.archived || words._ || "The change was refused.";
      if (status) say(status, `Not changed: ${text}`, false);
      else notify(`Not changed: ${text}`);
    }
  }

  function say(node, text, ok) {
    said = { text, ok };
    node.textContent = text;
    node.classList.toggle("gm-ok", ok);
    node.classList.toggle("gm-error", !ok);
  }

  function field(key, label, control, help) {
    control.id = `setup-${key}`;
    control.name = key;
    const error = el("p", { class: "setup-error small", id: `setup-${key}-error`, role: "alert", hidden: true });
    const hint = help ? el("p", { class: "muted small setup-field-help", id: `setup-${key}-help` }, help) : null;
    control.setAttribute("aria-describedby", [hint ? hint.id : "", error.id].filter(Boolean).join(" "));
    control.addEventListener("input", () => showError(key, ""));
    return el("div", { class: "setup-field", "data-field": key }, el("label", { for: control.id }, label), control, hint, error);
  }

  function showError(key, text) {
    const node = form?.querySelector(`#setup-${key}-error`);
    const control = form?.querySelector(`#setup-${key}`);
    if (!node) return;
    node.textContent = text;
    node.hidden = !text;
    if (control) {
      if (text) control.setAttribute("aria-invalid", "true");
      else control.removeAttribute("aria-invalid");
    }
  }

  function openEditor() {
    if (!setup || form) return;
    const name = el("input", { type: "text", maxlength: String(NAME_MAX), autocomplete: "off", value: setup.name });
    const premise = el("textarea", { rows: "4", maxlength: String(PREMISE_MAX) });
    premise.value = setup.premise;
    const tone = el("input", { type: "text", maxlength: String(TONE_MAX), autocomplete: "off", value: setup.tone, placeholder: "grim, cosy, heroic, eerie…" });
    const lines = el("textarea", { rows: "3", placeholder: "one per line" });
    lines.value = setup.lines.join("\n");
    const veils = el("textarea", { rows: "3", placeholder: "one per line" });
    veils.value = setup.veils.join("\n");
    const save = el("button", { type: "submit", class: "btn btn-primary btn-small", id: "setup-save" }, "Save setup");
    form = el(
      "form",
      { class: "setup-form", id: "setup-form", "aria-label": "Edit the campaign's setup", novalidate: true },
      field("name", "Name", name),
      field("premise", "Premise", premise, "What the story is about. The DM keeps to it from its next turn."),
      field("tone", "Tone", tone),
      field("lines", "Lines", lines, "Things that never appear in the story, one per line."),
      field("veils", "Veils", veils, "Things that may happen only offscreen, one per line."),
      el(
        "div",
        { class: "setup-form-actions" },
        save,
        el("button", { type: "button", class: "btn btn-ghost btn-small", id: "setup-cancel", onclick: closeEditor }, "Cancel"),
      ),
      el("p", { class: "setup-error small", id: "setup-_-error", role: "alert", hidden: true }),
      el("div", { class: "setup-archive-row" }, el("p", { class: "muted small" }, "Archived campaigns are read-only: the story can be read and downloaded, nothing can be played."), archiveButton()),
      statusLine(),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      submit({ name, premise, tone, lines, veils });
    });
    form.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.stopPropagation();
        closeEditor();
      }
    });
    editorBox.replaceChildren(form);
    name.focus();
  }

  function closeEditor() {
    form = null;
    renderEditorBox();
    document.getElementById("setup-edit")?.focus();
  }

  async function submit(inputs) {
    if (busy) return;
    for (const key of [...FIELDS, "_"]) showError(key, "");
    const wanted = {
      name: inputs.name.value.trim(),
      premise: inputs.premise.value.trim(),
      tone: inputs.tone.value.trim(),
      lines: linesOf(inputs.lines.value),
      veils: linesOf(inputs.veils.value),
    };
    const problems = {};
    if (!wanted.name) problems.name = "Give the campaign a name.";
    for (const key of ["lines", "veils"]) {
      const problem = checkList(wanted[key], key);
      if (problem) problems[key] = problem;
    }
    if (Object.keys(problems).length) {
      for (const [key, text] of Object.entries(problems)) showError(key, text);
      form.querySelector(`#setup-${Object.keys(problems)[0]}`)?.focus();
      return;
    }
    const changes = {};
    for (const key of FIELDS) {
      const before = setup[key];
      const same = Array.isArray(before) ? before.join("\u0000") === wanted[key].join("\u0000") : before === wanted[key];
      if (!same) changes[key] = wanted[key];
    }
    if (!Object.keys(changes).length) {
      closeEditor();
      return;
    }
    busy = true;
    const save = form.querySelector("#setup-save");
    save.disabled = true;
    const result = await api(url, { method: "PATCH", body: changes });
    busy = false;
    if (!form) return;
    save.disabled = false;
    if (!result.ok) {
      const errors = fieldErrors(result.data, changes);
      for (const [key, text] of Object.entries(errors)) showError(key, text);
      const first = Object.keys(errors).find((key) => key !== "_");
      if (first) form.querySelector(`#setup-${first}`)?.focus();
      return;
    }
    const data = asObject(result.data);
    applyChanges(Object.fromEntries(FIELDS.filter((key) => key in data).map((key) => [key, data[key]])));
    form = null;
    renderEditorBox();
    const status = document.getElementById("setup-archive-status");
    if (status) say(status, `Saved: ${Object.keys(changes).map((key) => LABELS[key]).join(", ")}. The DM keeps to it from its next turn.`, true);
    document.getElementById("setup-edit")?.focus();
  }

  loadDetail();

  return {
    /** Every event: campaign_updated changes the panel (and may archive the campaign). */
    onEvent(event, { live }) {
      if (event.type !== "campaign_updated") return;
      const changes = asObject(asObject(event.payload).changes);
      applyChanges(changes);
      if (typeof changes.archived === "boolean") setArchived(changes.archived, { live });
      if (live) loadSoon();
    },
    /** The server said the campaign is archived (a refused action): believe it. */
    markArchived() {
      if (!archived) setArchived(true, { live: true });
    },
    /** The GM's quick way back from the archived banner. */
    unarchive: () => toggleArchived(document.getElementById("setup-archive") || el("button")),
    isArchived: () => archived,
    refresh: loadSoon,
  };
}
