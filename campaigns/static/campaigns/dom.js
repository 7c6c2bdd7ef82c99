// Small DOM and HTTP helpers shared by the room's modules.
//
// Every piece of player or model text goes into the page as a text node (or textContent):
// nothing here ever parses a string as HTML.

/** el("p", {class: "x"}, "text", child): strings become text nodes, never HTML. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
}

export function asText(value) {
  return typeof value === "string" ? value : value === undefined || value === null ? "" : String(value);
}

export function asObject(value) {
  return value && typeof value === "object" && !Array.isArray(value) ? value : {};
}

export function timeOf(isoString) {
  const when = new Date(isoString);
  if (Number.isNaN(when.getTime())) return null;
  return el("time", {
    class: "entry-time",
    datetime: isoString,
    title: when.toLocaleString(),
    text: when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }),
  });
}

/** Only our own server's paths or http(s) URLs: never javascript:, data: or the like. */
export function safeUrl(value) {
  const url = asText(value).trim();
  if (!url) return "";
  if (url.startsWith("/") && !url.startsWith("//")) return url;
  return /^https?:\/\//i.test(url) ? url : "";
}

function csrfToken() {
  return document.querySelector('meta[name="csrf-token"]')?.getAttribute("content") || "";
}

/**
 * A JSON call to our API with the session cookie (and the CSRF token on writes).
 * Resolves to {ok, status, data}; a network failure is {ok: false, status: 0}.
 */
export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") {
    headers["X-CSRFToken"] = csrfToken();
    if (body !== undefined) headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    return { ok: false, status: 0, data: { detail: "the server could not be reached." } };
  }
  let data = null;
  if (response.status !== 204) {
    try {
      data = await response.json();
    } catch {
      data = null;
    }
  }
  return { ok: response.ok, status: response.status, data };
}

/** What an HTTP status means, for an answer that says nothing more. */
const STATUS_WORDS = {
  400: "the server could not use that.",
  401: "your session ended: log in again.",
  403: "that is not yours to do.",
  404: "that is not there any more.",
  409: "that clashes with a change made meanwhile; try again.",
  413: "that is too large.",
  429: "too many tries just now; wait a moment.",
  503: "the server is busy for a moment; try again shortly.",
};

/** A field's name in words ("daily_cap_usd" -> "daily cap usd"); none for the form as a whole. */
function fieldWords(field) {
  return field === "non_field_errors" || field === "detail" ? "" : `${field.replaceAll("_", " ")}: `;
}

/** The human message of an API error body ({detail, code}, or DRF's field errors): always
 * a sentence, never a bare status code. */
export function errorDetail(result) {
  const data = result.data;
  if (!data) {
    if (!result.status) return "the server could not be reached.";
    return STATUS_WORDS[result.status] || "something went wrong on the server; try again in a moment.";
  }
  const detail = data.detail ?? data;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map(asText).join(" ");
  if (detail && typeof detail === "object") {
    return Object.entries(detail)
      .map(([field, problems]) => `${fieldWords(field)}${Array.isArray(problems) ? problems.map(asText).join(" ") : asText(problems)}`)
      .join("; ");
  }
  return "something went wrong.";
}

/**
 * Make `nodes` the children of `container`, in order, without moving a node that is already
 * in its place: a form being typed in (an open editor) keeps its focus and its text.
 */
export function placeChildren(container, nodes) {
  const wanted = new Set(nodes);
  for (const child of [...container.childNodes]) if (!wanted.has(child)) child.remove();
  nodes.forEach((node, index) => {
    const current = container.children[index];
    if (current !== node) container.insertBefore(node, current || null);
  });
}
