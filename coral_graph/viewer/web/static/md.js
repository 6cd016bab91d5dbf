/* Safe Markdown for message content.
 *
 * The text is HTML-escaped first; only the markup produced here is HTML. Links
 * keep http(s)/mailto targets only and open in a new tab without referrer;
 * images are never loaded (they become a placeholder naming the address), so a
 * transcript can't make the browser fetch anything.
 */
"use strict";
(function () {
  const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  function esc(s) {
    return String(s).replace(/[&<>"']/g, (c) => ESC[c]);
  }

  function inline(src) {
    // Code spans first: nothing inside them is markup.
    return src
      .split(/(`[^`\n]+`)/)
      .map((part, i) => {
        if (i % 2 === 1) return "<code>" + esc(part.slice(1, -1)) + "</code>";
        let t = esc(part);
        t = t.replace(/!\[([^\]\n]*)\]\(([^)\s]+)\)/g, (_m, alt, url) =>
          '<span class="img-blocked" title="images are not loaded: ' + url + '">[image' +
          (alt ? ": " + alt : "") + "]</span>");
        t = t.replace(/\[([^\]\n]+)\]\(([^)\s]+)\)/g, (m, text, url) => {
          if (!/^(https?:\/\/|mailto:)/i.test(url)) return m;
          return '<a href="' + url + '" target="_blank" rel="noopener noreferrer nofollow">' +
            text + "</a>";
        });
        t = t.replace(/\*\*([^*\n]+)\*\*/g, "<strong>$1</strong>");
        t = t.replace(/(^|[\s(])\*([^*\s][^*\n]*)\*/g, "$1<em>$2</em>");
        t = t.replace(/(^|[\s(])_([^_\s][^_\n]*)_(?=$|[\s).,!?:;])/g, "$1<em>$2</em>");
        t = t.replace(/~~([^~\n]+)~~/g, "<del>$1</del>");
        return t.replace(/\n/g, "<br>");
      })
      .join("");
  }

  function render(text) {
    const lines = String(text).split(/\r?\n/);
    const out = [];
    let i = 0;
    const isList = (l) => /^\s*([-*+]|\d+[.)])\s+/.test(l);
    const special = (l) => /^(```|#{1,6}\s|>\s?)/.test(l) || isList(l);
    while (i < lines.length) {
      const line = lines[i];
      if (/^```/.test(line)) {
        const body = [];
        i++;
        while (i < lines.length && !/^```/.test(lines[i])) body.push(lines[i++]);
        i++;
        out.push("<pre><code>" + esc(body.join("\n")) + "</code></pre>");
      } else if (/^#{1,6}\s/.test(line)) {
        const level = Math.min(6, line.match(/^#+/)[0].length + 2);
        out.push("<h" + level + ">" + inline(line.replace(/^#+\s+/, "")) + "</h" + level + ">");
        i++;
      } else if (/^>\s?/.test(line)) {
        const body = [];
        while (i < lines.length && /^>\s?/.test(lines[i])) body.push(lines[i++].replace(/^>\s?/, ""));
        out.push("<blockquote>" + inline(body.join("\n")) + "</blockquote>");
      } else if (isList(line)) {
        const ordered = /^\s*\d/.test(line);
        const items = [];
        while (i < lines.length && isList(lines[i])) {
          items.push("<li>" + inline(lines[i].replace(/^\s*([-*+]|\d+[.)])\s+/, "")) + "</li>");
          i++;
        }
        out.push((ordered ? "<ol>" : "<ul>") + items.join("") + (ordered ? "</ol>" : "</ul>"));
      } else if (!line.trim()) {
        i++;
      } else {
        const body = [];
        while (i < lines.length && lines[i].trim() && !special(lines[i])) body.push(lines[i++]);
        out.push("<p>" + inline(body.join("\n")) + "</p>");
      }
    }
    return out.join("");
  }

  window.CoralMD = { render: render, escape: esc };
})();
