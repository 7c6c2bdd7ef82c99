// A tiny, safe Markdown renderer for the DM's narration.
//
// It builds DOM nodes directly (createElement and text nodes): model text is never parsed
// as HTML, so a "<script>" or an "<img onerror>" in a narration is shown as the characters
// it is. Supported: paragraphs (blank lines), line breaks, "-", "*", "+" and "1." lists,
// "#" headings (shown as a bold line), "> " quotes, **bold**, __bold__, *italic*, _italic_,
// ~~struck~~ and `code`. Anything else stays literal text.

const LIST_ITEM = /^\s{0,3}([-*+]|\d{1,3}[.)])\s+(.*)$/;
const HEADING = /^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$/;
const QUOTE = /^\s{0,3}>\s?(.*)$/;
const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;

// Leftmost match wins; at one position the alternatives are tried in this order.
const INLINE = new RegExp(
  [
    /`([^`\n]+)`/.source, // 1: code
    /\*\*(?=\S)([\s\S]+?)(?<=\S)\*\*/.source, // 2: bold
    /(?<![\p{L}\p{N}_])__(?=\S)([\s\S]+?)(?<=\S)__(?![\p{L}\p{N}_])/.source, // 3: bold
    /~~(?=\S)([\s\S]+?)(?<=\S)~~/.source, // 4: struck
    /\*(?=[^\s*])([\s\S]+?)(?<=[^\s*])\*/.source, // 5: italic
    /(?<![\p{L}\p{N}_])_(?=[^\s_])([\s\S]+?)(?<=[^\s_])_(?![\p{L}\p{N}_])/.source, // 6: italic
  ].join("|"),
  "gu",
);
const INLINE_TAGS = [null, "code", "strong", "strong", "s", "em", "em"];
const MAX_DEPTH = 6;

/** Inline Markdown of one block's text, appended to `parent` as nodes. */
export function renderInline(parent, text, depth = 0) {
  if (depth >= MAX_DEPTH) {
    parent.append(document.createTextNode(text));
    return parent;
  }
  const pattern = new RegExp(INLINE.source, INLINE.flags);
  let at = 0;
  for (let match = pattern.exec(text); match; match = pattern.exec(text)) {
    if (match.index > at) appendWithBreaks(parent, text.slice(at, match.index));
    const group = INLINE_TAGS.findIndex((_, i) => i > 0 && match[i] !== undefined);
    const node = document.createElement(INLINE_TAGS[group]);
    if (group === 1) node.textContent = match[1];
    else renderInline(node, match[group], depth + 1);
    parent.append(node);
    at = match.index + match[0].length;
  }
  if (at < text.length) appendWithBreaks(parent, text.slice(at));
  return parent;
}

function appendWithBreaks(parent, text) {
  const lines = text.split("\n");
  lines.forEach((line, i) => {
    if (i > 0) parent.append(document.createElement("br"));
    if (line) parent.append(document.createTextNode(line));
  });
}

/** The narration as a DocumentFragment of <p>, <ul>/<ol>, <blockquote> and <hr>. */
export function renderMarkdown(source) {
  const fragment = document.createDocumentFragment();
  const lines = String(source ?? "").replace(/\r\n?/g, "\n").split("\n");
  let paragraph = [];
  let list = null; // {node, ordered}
  let quote = [];

  const flushParagraph = () => {
    if (paragraph.length) fragment.append(renderInline(document.createElement("p"), paragraph.join("\n")));
    paragraph = [];
  };
  const flushList = () => {
    if (list) fragment.append(list.node);
    list = null;
  };
  const flushQuote = () => {
    if (quote.length) {
      const node = document.createElement("blockquote");
      node.append(renderInline(document.createElement("p"), quote.join("\n")));
      fragment.append(node);
    }
    quote = [];
  };
  const flushAll = () => {
    flushParagraph();
    flushList();
    flushQuote();
  };

  for (const line of lines) {
    if (!line.trim()) {
      flushAll();
      continue;
    }
    if (RULE.test(line)) {
      flushAll();
      fragment.append(document.createElement("hr"));
      continue;
    }
    const item = line.match(LIST_ITEM);
    if (item) {
      flushParagraph();
      flushQuote();
      const ordered = /\d/.test(item[1]);
      if (!list || list.ordered !== ordered) {
        flushList();
        const node = document.createElement(ordered ? "ol" : "ul");
        if (ordered && item[1] !== "1." && item[1] !== "1)") {
          const start = parseInt(item[1], 10);
          if (Number.isFinite(start)) node.setAttribute("start", String(start));
        }
        list = { node, ordered };
      }
      list.node.append(renderInline(document.createElement("li"), item[2]));
      continue;
    }
    const heading = line.match(HEADING);
    if (heading) {
      flushAll();
      const node = document.createElement("p");
      node.className = "md-heading";
      node.append(renderInline(document.createElement("strong"), heading[1]));
      fragment.append(node);
      continue;
    }
    const quoted = line.match(QUOTE);
    if (quoted) {
      flushParagraph();
      flushList();
      quote.push(quoted[1]);
      continue;
    }
    if (list && /^\s{2,}\S/.test(line)) {
      // An indented line continues the last list item.
      const last = list.node.lastElementChild;
      last.append(document.createElement("br"));
      renderInline(last, line.trim());
      continue;
    }
    flushList();
    flushQuote();
    paragraph.push(line);
  }
  flushAll();
  return fragment;
}

/** The text a reader hears: the Markdown marks taken out, whitespace collapsed. */
export function plainText(source) {
  const holder = document.createElement("div");
  holder.append(renderMarkdown(source));
  for (const block of holder.querySelectorAll("p, li, br, hr")) block.after(" ");
  return holder.textContent.replace(/\s+/g, " ").trim();
}
