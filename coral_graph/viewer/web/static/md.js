/* Safe Markdown for message content.
 *
 * The renderer builds DOM nodes; it never produces or parses HTML. The source is
 * read once, left to right, by a small tokenizer: each token becomes an element
 * (or a text node), and the text of a token is inserted with createTextNode, so
 * nothing the renderer made is ever scanned again (the bug this replaces: a link
 * pass ran over the HTML of an image placeholder and produced an attribute).
 *
 * Attributes are set with setAttribute from fixed names; the only attribute whose
 * value comes from the text is a link's href, and only after the URL parses with
 * an http(s) or mailto scheme. Images are never loaded: they become a placeholder
 * naming the address, so a transcript can't make the browser fetch anything.
 *
 *   CoralMD.render(text)  -> DocumentFragment
 *   CoralMD.escape(text)  -> the text with & < > " ' escaped (for the tests)
 */
"use strict";
(function () {
  const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  function esc(s) {
    return String(s).replace(/[&<>"']/g, (c) => ESC[c]);
  }

  const SCHEMES = new Set(["http:", "https:", "mailto:"]);
  /* The URL if it is an absolute http(s)/mailto address, else null. */
  function safeUrl(raw) {
    if (!/^(https?:\/\/|mailto:)/i.test(raw)) return null;
    let u;
    try { u = new URL(raw); } catch (_e) { return null; }
    return SCHEMES.has(u.protocol) ? u.href : null;
  }

  function elem(tag, children) {
    const node = document.createElement(tag);
    for (const c of children) node.append(c);
    return node;
  }

  // Inline tokens, tried at the current position (sticky regexes: they match here or not at all).
  const CODE = /`([^`\n]+)`/y;
  const IMAGE = /!\[([^\]\n]*)\]\(([^)\s]+)\)/y;
  const LINK = /\[([^\]\n]+)\]\(([^)\s]+)\)/y;
  const STRONG = /\*\*([^*\n]+)\*\*/y;
  const EM_STAR = /\*([^*\s][^*\n]*)\*/y;
  const EM_UNDER = /_([^_\s][^_\n]*)_(?=$|[\s).,!?:;])/y;
  const DEL = /~~([^~\n]+)~~/y;

  function at(re, src, i) {
    re.lastIndex = i;
    return re.exec(src);
  }

  /* Inline markup of `src` as a list of nodes. `inLink`: no links inside a link. */
  function inline(src, inLink) {
    const out = [];
    let text = "";
    const flush = () => { if (text) { out.push(document.createTextNode(text)); text = ""; } };
    let i = 0;
    while (i < src.length) {
      const c = src[i];
      const prev = i === 0 ? "" : src[i - 1];
      const wordStart = prev === "" || /[\s(]/.test(prev);
      let m = null;
      let node = null;
      if (c === "`" && (m = at(CODE, src, i))) {
        node = elem("code", [document.createTextNode(m[1])]);
      } else if (c === "!" && (m = at(IMAGE, src, i))) {
        node = document.createElement("span");
        node.className = "img-blocked";
        node.setAttribute("title", "images are not loaded: " + m[2]);
        node.textContent = "[image" + (m[1] ? ": " + m[1] : "") + "]";
      } else if (c === "[" && !inLink && (m = at(LINK, src, i))) {
        const href = safeUrl(m[2]);
        if (href === null) m = null; // not a link we make: the text stays as it was
        else {
          node = elem("a", inline(m[1], true));
          node.setAttribute("href", href);
          node.setAttribute("target", "_blank");
          node.setAttribute("rel", "noopener noreferrer nofollow");
        }
      } else if (c === "*" && (m = at(STRONG, src, i))) {
        node = elem("strong", inline(m[1], inLink));
      } else if (c === "*" && wordStart && (m = at(EM_STAR, src, i))) {
        node = elem("em", inline(m[1], inLink));
      } else if (c === "_" && wordStart && (m = at(EM_UNDER, src, i))) {
        node = elem("em", inline(m[1], inLink));
      } else if (c === "~" && (m = at(DEL, src, i))) {
        node = elem("del", inline(m[1], inLink));
      } else if (c === "\n") {
        flush();
        out.push(document.createElement("br"));
        i++;
        continue;
      }
      if (m && node) {
        flush();
        out.push(node);
        i += m[0].length;
      } else {
        text += c;
        i++;
      }
    }
    flush();
    return out;
  }

  const LIST = /^\s*([-*+]|\d+[.)])\s+/;
  const isList = (l) => LIST.test(l);
  const special = (l) => /^(```|#{1,6}\s|>\s?)/.test(l) || isList(l);

  /* Block structure: fenced code, headings, quotes, lists, paragraphs. */
  function render(source) {
    const frag = document.createDocumentFragment();
    const lines = String(source === null || source === undefined ? "" : source).split(/\r?\n/);
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      if (/^```/.test(line)) {
        const body = [];
        i++;
        while (i < lines.length && !/^```/.test(lines[i])) body.push(lines[i++]);
        i++;
        frag.append(elem("pre", [elem("code", [document.createTextNode(body.join("\n"))])]));
      } else if (/^#{1,6}\s/.test(line)) {
        const level = Math.min(6, line.match(/^#+/)[0].length + 2);
        frag.append(elem("h" + level, inline(line.replace(/^#+\s+/, ""), false)));
        i++;
      } else if (/^>\s?/.test(line)) {
        const body = [];
        while (i < lines.length && /^>\s?/.test(lines[i])) body.push(lines[i++].replace(/^>\s?/, ""));
        frag.append(elem("blockquote", inline(body.join("\n"), false)));
      } else if (isList(line)) {
        const ordered = /^\s*\d/.test(line);
        const items = [];
        while (i < lines.length && isList(lines[i])) {
          items.push(elem("li", inline(lines[i].replace(LIST, ""), false)));
          i++;
        }
        frag.append(elem(ordered ? "ol" : "ul", items));
      } else if (!line.trim()) {
        i++;
      } else {
        const body = [];
        while (i < lines.length && lines[i].trim() && !special(lines[i])) body.push(lines[i++]);
        if (!body.length) body.push(lines[i++]); // never stall on a line no rule took
        frag.append(elem("p", inline(body.join("\n"), false)));
      }
    }
    return frag;
  }

  window.CoralMD = { render: render, escape: esc, safeUrl: safeUrl };
})();
