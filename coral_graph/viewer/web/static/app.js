/* coral-graph transcript viewer. Hand-written, no build step, no dependencies.
 *
 * State lives in the URL hash (#run=…&thread=…&agent=…&from=…&to=…&kind=…&errors=1
 * &q=…&m=<message id>&tab=…), so every view and every message has a link.
 *
 * The message list is a window over the run: at most MAX_ROWS rows are in the DOM;
 * pages are fetched by cursor (gseq) as you scroll, and jumps (deep links, search
 * hits, g/G, e) re-anchor the window. Untrusted text only ever reaches the DOM as
 * textContent, or through CoralMD.render, which builds DOM nodes (never HTML).
 */
"use strict";
(function () {
  const MODE = document.body.dataset.mode === "static" ? "static" : "server";
  const PAGE = 60;
  const MAX_ROWS = 240;
  const KINDS = ["task", "answer", "llm", "tool"];
  const FILTER_KEYS = ["thread", "agent", "from", "to", "kind", "errors"];
  const STATE_KEYS = ["run", "thread", "agent", "from", "to", "kind", "errors", "q", "m", "tab", "call", "compare"];
  const TABS = ["members", "graph", "timeline", "logs", "run"];

  const $ = (sel, root) => (root || document).querySelector(sel);

  /* el("div.cls", {title: "x", onclick: fn}, "text", child…) — text is never parsed. */
  function el(spec, attrs, ...children) {
    const [tag, ...classes] = spec.split(".");
    const node = document.createElement(tag);
    if (classes.length) node.className = classes.join(" ");
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(node.dataset, v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }
  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }

  /* ---------------------------------------------------------------- formatting */

  const colours = new Map();
  function colour(name) {
    if (!colours.has(name)) {
      if (name === "user") colours.set(name, "hsl(215, 15%, 40%)");
      else {
        let h = 2166136261;
        for (const ch of String(name)) { h ^= ch.codePointAt(0); h = Math.imul(h, 16777619) >>> 0; }
        colours.set(name, "hsl(" + (h % 360) + ", " + (55 + (h >> 9) % 25) + "%, " + (38 + (h >> 17) % 12) + "%)");
      }
    }
    return colours.get(name);
  }
  function agentTag(name, cls) {
    const dot = el("span.dot");
    dot.style.backgroundColor = colour(name);
    const label = el("span.name", {}, name);
    label.style.color = colour(name);
    return el("span." + (cls || "agent"), { dataset: { agent: name } }, dot, label);
  }
  function rel(ts) {
    if (ts === null || ts === undefined) return "";
    const d = Date.now() / 1000 - ts;
    if (d < 5) return "just now";
    if (d < 60) return Math.round(d) + " s ago";
    if (d < 3600) return Math.round(d / 60) + " min ago";
    if (d < 86400) return Math.round(d / 3600) + " h ago";
    if (d < 86400 * 30) return Math.round(d / 86400) + " d ago";
    return new Date(ts * 1000).toLocaleDateString();
  }
  function abs(ts) {
    if (ts === null || ts === undefined) return "";
    const d = new Date(ts * 1000);
    return d.toLocaleString() + " (" + d.toISOString() + ")";
  }
  /* "14:03:05" today, "2026-11-30 14:03:05" before (24-hour clock, local time). */
  function shortAbs(ts) {
    const d = new Date(ts * 1000);
    const p2 = (n) => String(n).padStart(2, "0");
    const t = p2(d.getHours()) + ":" + p2(d.getMinutes()) + ":" + p2(d.getSeconds());
    if (d.toDateString() === new Date().toDateString()) return t;
    return d.getFullYear() + "-" + p2(d.getMonth() + 1) + "-" + p2(d.getDate()) + " " + t;
  }
  /* Both clocks: the absolute time, and how long ago (kept fresh by a timer). */
  function timeEl(ts) {
    if (ts === null || ts === undefined) return el("time", {}, "–");
    return el("time", { datetime: new Date(ts * 1000).toISOString(), title: abs(ts), dataset: { ts: ts } },
      el("span.abs", {}, shortAbs(ts)), " ", el("span.rel", {}, rel(ts)));
  }
  const nf = new Intl.NumberFormat();
  // Numbers may arrive as "NaN"/"Infinity" strings (the store's JSON has no NaN): shown as they are.
  const num = (n) => (n === null || n === undefined ? "–" : typeof n === "number" ? nf.format(n) : String(n));
  const usd = (x) => (typeof x !== "number" ? (x ? String(x) : "–") : x ? "$" + (x < 0.01 ? x.toFixed(4) : x.toFixed(2)) : "–");
  function secs(s) {
    if (s === null || s === undefined) return "–";
    if (typeof s !== "number") return String(s);
    if (s < 0.001) return "<1 ms";
    if (s < 1) return Math.round(s * 1000) + " ms";
    if (s < 120) return s.toFixed(s < 10 ? 2 : 1) + " s";
    return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
  }
  /* How a run ended, as a colour class: ok (answered), idle, budget, bad (error,
   * interrupted, every model call failed), live, off (cancelled). */
  function stopClass(r) {
    const reason = r.stop_reason || "";
    if (r.live) return "live";
    if (r.status === "interrupted" || reason === "error") return "bad";
    if (r.llm_calls && r.llm_failed === r.llm_calls) return "bad";
    if (reason === "answer") return "ok";
    if (reason.startsWith("budget")) return "budget";
    if (reason === "cancelled") return "off";
    return "idle";
  }
  function stopPill(r) {
    const text = r.live ? "running" : (r.status === "interrupted" ? "interrupted" : (r.stop_reason || r.status || "?"));
    return el("span.stop.stop-" + stopClass(r), { title: r.error || "" }, text);
  }
  function failureText(r) {
    const bits = [];
    if (r.llm_failed) bits.push(num(r.llm_failed) + " of " + num(r.llm_calls) + " model calls failed");
    if (r.turn_errors) bits.push(num(r.turn_errors) + (r.turn_errors === 1 ? " turn raised" : " turns raised"));
    if (r.tool_failed) bits.push(num(r.tool_failed) + " tool calls failed");
    return bits.join(" · ");
  }

  function toast(text) {
    const t = $("#toast");
    t.textContent = text;
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.hidden = true; }, 1800);
  }

  /* ---------------------------------------------------------------- data sources */

  async function getJSON(url) {
    const r = await fetch(url, { credentials: "same-origin" });
    if (!r.ok) {
      let detail = r.statusText;
      try { detail = (await r.json()).error || detail; } catch (_e) { /* not JSON */ }
      const err = new Error(detail);
      err.status = r.status;
      throw err;
    }
    return r.json();
  }
  const qs = (params) => {
    const u = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "" && v !== false) u.set(k, v === true ? "1" : v);
    return u.toString();
  };

  function serverApi() {
    const base = (rid) => "api/runs/" + encodeURIComponent(rid);
    return {
      live: true,
      config: () => getJSON("api/config"),
      runs: () => getJSON("api/runs"),
      evals: () => getJSON("api/evals"),
      evalItems: (id) => getJSON("api/evals/" + encodeURIComponent(id)),
      run: (rid) => getJSON(base(rid)),
      messages: (rid, p) => getJSON(base(rid) + "/messages?" + qs(p)),
      search: (rid, p) => getJSON(base(rid) + "/search?" + qs(p)),
      locate: (rid, p) => getJSON(base(rid) + "/locate?" + qs(p)),
      agents: (rid) => getJSON(base(rid) + "/agents"),
      graph: (rid) => getJSON(base(rid) + "/graph"),
      timeline: (rid) => getJSON(base(rid) + "/timeline"),
      logs: (rid) => getJSON(base(rid) + "/logs"),
      llmCall: (rid, seq) => getJSON(base(rid) + "/llm_calls/" + Number(seq)),
      compare: true,
      eventsUrl: (rid, after) => base(rid) + "/events?after=" + after,
    };
  }

  /* The static export: the same questions answered in the browser from data/*.js,
   * scripts that fill window.__coralData (a page opened from file:// may load
   * scripts but not fetch files). */
  function staticApi() {
    let all = null;
    let run = null;
    const DATA = (window.__coralData = window.__coralData || {});
    function data(name) {
      if (Object.prototype.hasOwnProperty.call(DATA, name)) return Promise.resolve(DATA[name]);
      return new Promise((resolve, reject) => {
        const tag = document.createElement("script");
        tag.src = "data/" + name + ".js";
        tag.onload = () => {
          if (Object.prototype.hasOwnProperty.call(DATA, name)) resolve(DATA[name]);
          else reject(new Error("data/" + name + ".js did not define its data"));
        };
        tag.onerror = () => reject(new Error("cannot load data/" + name + ".js: is the export complete?"));
        document.head.append(tag);
      });
    }
    async function load() {
      if (all) return all;
      run = run || (await data("run"));
      const parts = await Promise.all(
        Array.from({ length: run.chunks }, (_x, i) => data("messages/" + String(i).padStart(5, "0"))));
      all = [].concat(...parts);
      return all;
    }
    function match(m, p) {
      return matches(m, {
        thread: p.thread, agent: p.agent, from: p.from, to: p.to, kind: p.kind,
        errors: p.errors === "1" || p.errors === true, q: p.q,
      });
    }
    function lowerBound(xs, gseq) {
      let lo = 0, hi = xs.length;
      while (lo < hi) { const mid = (lo + hi) >> 1; if (xs[mid].gseq < gseq) lo = mid + 1; else hi = mid; }
      return lo;
    }
    async function messages(_rid, p) {
      const xs = (await load()).filter((m) => match(m, { ...p, q: null }));
      const limit = Number(p.limit) || 100;
      let start, stop;
      let around = p.around !== undefined ? Number(p.around) : undefined;
      if (p.around_id) {
        const hit = all.find((m) => m.id === p.around_id);
        if (!hit) throw new Error("no message " + p.around_id);
        around = hit.gseq;
      }
      if (around !== undefined) {
        const i = lowerBound(xs, around);
        start = Math.max(0, i - (limit >> 1));
        stop = Math.min(xs.length, start + limit);
      } else if (p.end) { stop = xs.length; start = Math.max(0, stop - limit); }
      else if (p.before !== undefined) { stop = lowerBound(xs, Number(p.before)); start = Math.max(0, stop - limit); }
      else { start = p.after !== undefined ? lowerBound(xs, Number(p.after) + 1) : 0; stop = Math.min(xs.length, start + limit); }
      return { items: xs.slice(start, stop), has_before: start > 0, has_after: stop < xs.length, total: xs.length };
    }
    return {
      live: false,
      compare: false,
      config: () => data("config"),
      runs: () => data("runs"),
      run: async () => (run = run || (await data("run"))),
      messages,
      search: async (_rid, p) => {
        const hits = (await load()).filter((m) => match(m, p)).map((m) => m.gseq);
        return { total: hits.length, hits: hits.slice(0, 10000) };
      },
      locate: async (_rid, p) => {
        const xs = (await load()).filter((m) => match(m, p));
        const after = Number(p.after) || 0;
        const hit = p.dir === "prev" ? xs.filter((m) => m.gseq < after).pop() : xs.find((m) => m.gseq > after);
        return { gseq: hit ? hit.gseq : null };
      },
      agents: () => data("agents"),
      graph: () => data("graph"),
      timeline: () => data("timeline"),
      logs: () => data("logs"),
      llmCall: async (_rid, seq) => {
        const hit = (await data("calls")).find((c) => c.seq === Number(seq));
        if (!hit) throw new Error("no model call at seq " + seq);
        return hit;
      },
    };
  }

  const api = MODE === "static" ? staticApi() : serverApi();

  /* A message matches a view's filters (the same rules as the server's). */
  function matches(m, f) {
    if (f.thread && m.thread_id !== f.thread) return false;
    if (f.agent && m.sender !== f.agent && !m.mentions.includes(f.agent)) return false;
    if (f.from && m.sender !== f.from) return false;
    if (f.to && !m.mentions.includes(f.to)) return false;
    if (f.kind === "task" && m.sender !== "user") return false;
    if (f.kind === "answer" && !m.mentions.includes("user")) return false;
    if (f.kind === "llm" && !(m.metadata && m.metadata.model)) return false;
    if (f.kind === "tool" && !(m.tools && m.tools.length)) return false;
    if (f.errors && !(m.errors && m.errors.length)) return false;
    if (f.q) {
      const q = f.q.toLowerCase();
      if (!m.content.toLowerCase().includes(q) && !m.sender.toLowerCase().includes(q)) return false;
    }
    return true;
  }

  /* ---------------------------------------------------------------- state and URL */

  let S = {};            // the state shown (parsed from the URL)
  let R = null;          // the open run's summary
  let cfg = { default_run: null };
  const W = { items: [], ids: new Set(), hasBefore: false, hasAfter: false, key: null, busy: false, total: null,
    upto: null, loading: false, pending: [] };
  const H = { key: null, total: 0, list: [], idx: -1 };
  let selected = null;
  let stream = null;
  let pill = 0;
  let firstScreen = false;

  function parseHash() {
    const p = new URLSearchParams(location.hash.replace(/^#/, ""));
    const s = {};
    for (const k of STATE_KEYS) s[k] = p.get(k) || null;
    s.errors = s.errors === "1";
    if (s.kind && !KINDS.includes(s.kind)) s.kind = null;
    if (!TABS.includes(s.tab)) s.tab = "members";
    return s;
  }
  function hashOf(s) {
    const p = new URLSearchParams();
    for (const k of STATE_KEYS) {
      const v = s[k];
      if (k === "tab" && v === "members") continue;
      if (v === true) p.set(k, "1");
      else if (v) p.set(k, v);
    }
    return "#" + p.toString();
  }
  function navigate(patch, replace) {
    const next = { ...S, ...patch };
    const h = hashOf(next);
    if (h === location.hash) return apply();
    if (replace) history.replaceState(null, "", h);
    else history.pushState(null, "", h);
    return apply();
  }
  function setMessageInUrl(id) {
    S.m = id;
    history.replaceState(null, "", hashOf(S));
  }
  const filterKey = (s) => FILTER_KEYS.map((k) => s[k] || "").join("\u0000");
  const filterParams = (s, withQuery) => ({
    thread: s.thread, agent: s.agent, from: s.from, to: s.to, kind: s.kind,
    errors: s.errors ? "1" : null, q: withQuery ? s.q : null,
  });

  /* ---------------------------------------------------------------- the runs list */

  let runsCache = [];
  const picked = [];
  function showOnly(id) {
    for (const v of ["#runs-view", "#run-view", "#compare-view"]) $(v).hidden = v !== id;
  }

  async function showRuns() {
    closeStream();
    R = null;
    showOnly("#runs-view");
    setBanner(null);
    setEndpoints(null);
    $("#run-title").textContent = "";
    $("#run-meta").textContent = "";
    $("#live-badge").hidden = true;
    document.title = "coral-graph · runs";
    runsCache = await api.runs();
    $("#runs-empty").hidden = runsCache.length > 0;
    $("#compare-btn").hidden = !api.compare;
    renderRunRows();
    renderEvals(api.evals ? await api.evals() : []);
  }

  /* The evals of `coral-graph eval` in this store (none: the section stays hidden):
   * per config its accuracy; a click lists the items, each linked to its run. */
  function renderEvals(evals) {
    $("#evals").hidden = !evals.length;
    const pct = (x) => (x === null || x === undefined ? "–" : (100 * x).toFixed(1) + "%");
    $("#evals-table tbody").replaceChildren(...evals.map((e) => {
      const items = el("tr.eval-items", { hidden: true }, el("td", { colspan: 5 }));
      const open = el("button.link.eval-open", { type: "button", title: "show the items",
        onclick: async () => {
          items.hidden = !items.hidden;
          if (items.hidden || items.dataset.loaded) return;
          items.dataset.loaded = "1";
          const d = await api.evalItems(e.eval_id);
          items.firstChild.replaceChildren(el("table.eval-items-table", {},
            el("thead", {}, el("tr", {}, ...["config", "item", "run", "stop reason", "extracted", "score", "tokens", "error"].map((h) => el("th", {}, h)))),
            el("tbody", {}, ...d.items.map((it) => el("tr" + (it.error || it.scorer_error ? ".failed" : ""), {},
              el("td", {}, it.config), el("td.mono", {}, it.item_id),
              el("td.mono", {}, it.run_id && it.run_stored ? el("a", { href: hashOf({ run: it.run_id, tab: "members" }) }, it.run_id) : (it.run_id || "–")),
              el("td", {}, it.stop_reason), el("td", {}, it.extracted === null ? "–" : it.extracted),
              el("td.num", {}, String(it.score)), el("td.num", {}, num(it.tokens)),
              el("td.err-text", {}, it.error || it.scorer_error || ""))))));
        } }, e.eval_id);
      const head = el("tr.eval-row", { dataset: { eval: e.eval_id } },
        el("td.mono", {}, open),
        el("td", { title: e.source }, e.dataset),
        el("td", {}, ...e.configs.map((c) => el("div.eval-config", { title: c.errors ? c.errors + " failed" : "" },
          el("b", {}, c.config), " ", pct(c.accuracy), el("span.dim", {}, " (" + c.done + "/" + e.n + ")")))),
        el("td.num", {}, num(e.n)),
        el("td.started", {}, timeEl(e.created)));
      return [head, items];
    }).flat());
  }

  function runMatches(r, q, status) {
    if (status) {
      const c = stopClass(r);
      if (status === "answer" && r.stop_reason !== "answer") return false;
      if (status === "idle" && r.stop_reason !== "idle") return false;
      if (status === "budget" && !(r.stop_reason || "").startsWith("budget")) return false;
      if (status === "failed" && c !== "bad" && !r.error_count) return false;
      if (status === "interrupted" && r.status !== "interrupted") return false;
      if (status === "live" && !r.live) return false;
    }
    if (q) {
      const hay = [r.run_id, r.graph_name, r.task, r.answer, r.stop_reason, r.error].join("\n").toLowerCase();
      if (!hay.includes(q.toLowerCase())) return false;
    }
    return true;
  }

  function renderRunRows() {
    const q = $("#runs-search").value.trim();
    const status = $("#runs-status").value;
    const body = $("#runs-table tbody");
    const shown = runsCache.filter((r) => runMatches(r, q, status));
    $("#runs-count").textContent = shown.length === runsCache.length ? num(runsCache.length) + " runs"
      : num(shown.length) + " of " + num(runsCache.length) + " runs";
    body.replaceChildren(...shown.map((r) => {
      const link = el("a", { href: hashOf({ run: r.run_id, tab: "members" }) }, r.run_id);
      const box = el("input.pick", { type: "checkbox", title: "compare this run", checked: picked.includes(r.run_id) || null,
        onchange: (ev) => {
          const i = picked.indexOf(r.run_id);
          if (ev.target.checked && i < 0) picked.push(r.run_id);
          if (!ev.target.checked && i >= 0) picked.splice(i, 1);
          while (picked.length > 2) picked.shift();
          for (const b of document.querySelectorAll("#runs-table input.pick")) b.checked = picked.includes(b.closest("tr").dataset.run);
          $("#compare-btn").disabled = picked.length !== 2;
        } });
      const answer = r.answer ? r.answer.replace(/\s+/g, " ").slice(0, 140) : (r.error ? "" : "–");
      return el("tr.run-row.row-" + stopClass(r), { dataset: { run: r.run_id, stop: stopClass(r) } },
        el("td", {}, api.compare ? box : "", r.live ? el("span.live", {}, " ●") : ""),
        el("td.mono.rid", {}, link),
        el("td.graph", {}, r.graph_name || ""),
        el("td.task", { title: r.task }, (r.task || "").slice(0, 160)),
        el("td.stopcell", {}, stopPill(r)),
        el("td.answer", { title: r.answer || r.error || "" }, r.error ? el("span.err-text", {}, r.error.slice(0, 140)) : answer),
        el("td.num", { title: "messages (the task included)" }, num(r.messages)),
        el("td.num" + (r.error_count ? ".err-count" : ""), { title: failureText(r) || "no failures" }, num(r.error_count || 0)),
        el("td.num", {}, num(r.tokens)),
        el("td.num", {}, usd(r.cost_usd)),
        el("td.num", {}, secs(r.duration_s)),
        el("td.started", {}, timeEl(r.started_at)));
    }));
    $("#compare-btn").disabled = picked.length !== 2;
  }

  /* The banner under the top bar: an interrupted run (with the command that resumes
   * it), or a run whose model calls failed. */
  function setBanner(r) {
    const b = $("#banner");
    if (!r) { b.hidden = true; b.replaceChildren(); return; }
    const parts = [];
    if (r.status === "interrupted") {
      parts.push(el("div.banner-line", {}, el("b", {}, "This run was interrupted"),
        " (its process stopped before the run finished). Resume it with:"));
      if (r.resume) {
        const cmd = el("code.resume-cmd", {}, r.resume);
        parts.push(el("div.banner-line", {}, cmd, " ",
          el("button.icon", { type: "button", title: "copy the command", onclick: async () => {
            try { await navigator.clipboard.writeText(r.resume); toast("Command copied"); } catch (_e) { toast(r.resume); }
          } }, "copy")));
      }
    }
    if (r.error || stopClass(r) === "bad" && r.status !== "interrupted") {
      const line = el("div.banner-line", {}, el("b", {}, "Stopped: " + (r.stop_reason || r.status)));
      if (r.error) line.append(" — ", r.error);
      parts.push(line);
    }
    if (r.llm_failed) {
      const f = r.first_llm_error;
      const line = el("div.banner-line", {}, "⚠ " + failureText(r));
      if (f) {
        line.append(" — first: ", agentTag(f.agent), " ", el("b", {}, f.outcome), ": ", f.error || "",
          " ", el("a", { href: hashOf({ ...S, call: String(f.seq) }) }, "inspect"));
      }
      parts.push(line);
    }
    b.hidden = !parts.length;
    b.className = r.status === "interrupted" ? "warn" : "bad";
    b.replaceChildren(...parts);
  }

  /* ---------------------------------------------------------------- compare two runs */

  async function showCompare(ids) {
    closeStream();
    R = null;
    setBanner(null);
    setEndpoints(null);
    showOnly("#compare-view");
    $("#run-title").textContent = "compare";
    $("#run-meta").textContent = "";
    $("#live-badge").hidden = true;
    document.title = "coral-graph · compare";
    const box = $("#compare-view");
    const [a, b] = ids;
    const [ra, rb, aa, ab] = await Promise.all([api.run(a), api.run(b), api.agents(a), api.agents(b)]);
    const head = (r) => el("th.cmp-run", {},
      el("a.mono", { href: hashOf({ run: r.run_id, tab: "members" }) }, r.run_id), el("div", {}, r.graph_name || ""));
    const row = (label, fa, fb, cls) => el("tr" + (cls || ""), {}, el("th", {}, label), el("td", {}, fa), el("td", {}, fb));
    const both = (fn) => [fn(ra), fn(rb)];
    const md = (text) => { const d = el("div.md.box"); d.append(window.CoralMD.render(text || "–")); return d; };
    const runTable = el("table.cmp", {},
      el("thead", {}, el("tr", {}, el("th", {}, ""), head(ra), head(rb))),
      el("tbody", {},
        row("stop reason", ...both((r) => stopPill(r))),
        row("error", ...both((r) => r.error ? el("span.err-text", {}, r.error) : "–")),
        row("task", ...both((r) => md(r.task))),
        row("answer", ...both((r) => md(r.answer)), ".cmp-answer"),
        row("messages", ...both((r) => num(r.messages)), ".n"),
        row("model calls", ...both((r) => num(r.llm_calls) + (r.llm_failed ? " (" + num(r.llm_failed) + " failed)" : "")), ".n"),
        row("errors", ...both((r) => num(r.error_count)), ".n"),
        row("tokens", ...both((r) => num(r.tokens)), ".n"),
        row("cost", ...both((r) => usd(r.cost_usd)), ".n"),
        row("duration", ...both((r) => secs(r.duration_s)), ".n"),
        row("started", ...both((r) => timeEl(r.started_at)))));
    const names = [];
    for (const x of [...aa, ...ab]) if (!names.includes(x.name)) names.push(x.name);
    const byA = new Map(aa.map((x) => [x.name, x])), byB = new Map(ab.map((x) => [x.name, x]));
    const cols = [["sent", "sent", num], ["calls", "llm_calls", num], ["tokens", "tokens", num], ["cost", "cost_usd", usd], ["errors", "errors", num]];
    const cells = (x) => cols.map(([, k, f]) => el("td.num" + (k === "errors" && x && x[k] ? ".err-count" : ""), {}, x ? f(x[k]) : "–"));
    const agentTable = el("table.cmp.cmp-agents", {},
      el("thead", {},
        el("tr", {}, el("th", {}, ""), el("th.grp", { colspan: cols.length }, ra.run_id), el("th.grp", { colspan: cols.length }, rb.run_id)),
        el("tr", {}, el("th", {}, "agent"), ...[...cols, ...cols].map(([h]) => el("th.num", {}, h)))),
      el("tbody", {}, ...names.map((n) => el("tr", { dataset: { agent: n } }, el("td", {}, agentTag(n)), ...cells(byA.get(n)), ...cells(byB.get(n))))));
    box.replaceChildren(el("h1", {}, "Two runs side by side"),
      el("div.table-wrap", {}, runTable), el("h2", {}, "Per agent"), el("div.table-wrap", {}, agentTable));
  }

  /* ---------------------------------------------------------------- a run */

  /* A run the store does not have yet: a run's address opened as it starts, before
   * the store's first write (within a second or so). The viewer asks again every half
   * second for WAIT_FOR_RUN_MS, saying what it waits for, before it says there is no
   * such run. (Not in a static export: nothing is written there any more.) */
  const WAIT_FOR_RUN_MS = 20000;
  async function runWhenStored(rid, onWait) {
    const until = Date.now() + WAIT_FOR_RUN_MS;
    for (;;) {
      try {
        return await api.run(rid);
      } catch (err) {
        if (err.status !== 404 || !api.live || Date.now() > until) throw err;
        if (parseHash().run !== rid) {  // the reader went elsewhere meanwhile
          err.quiet = true;
          throw err;
        }
        onWait();
        toast("waiting for run " + rid + " to be stored…");
        await new Promise((done) => setTimeout(done, 500));
      }
    }
  }

  async function openRun(rid, prefetch) {
    closeStream();
    W.key = null;
    H.key = null;
    R = null;
    // (The first page, asked for with the run, is not used if the run was not there.)
    const settled = prefetch ? prefetch.catch(() => null) : null;
    let waited = false;
    const run = await runWhenStored(rid, () => { waited = true; });
    const page = waited ? null : await settled;
    R = run;
    W.prefetched = page && !R.live ? page : null;
    showOnly("#run-view");
    renderRunHeader();
    renderThreads();
    setEndpoints(null);
    if (api.live && R.live) openStream(R.last_gseq || 0);
    api.logs(rid).then((lg) => { if (R && R.run_id === rid) setEndpoints(lg.endpoints); })
      .catch((err) => toast("logs: " + String(err.message || err)));
  }

  /* Where an outsider connects: the MCP endpoint of each external (or process) agent,
   * from the run's agent_logged events. Text only. */
  function setEndpoints(eps) {
    const box = $("#endpoints");
    if (!eps || !eps.length) { box.hidden = true; box.replaceChildren(); return; }
    box.replaceChildren(...eps.map((e) => el("div.endpoint-line", {},
      agentTag(e.agent), " connects at ", el("code.endpoint-url", { title: "MCP, streamable HTTP" }, e.url),
      e.sse_url ? el("span.dim", {}, "  (SSE: ", el("code", {}, e.sse_url), ")") : "")));
    box.hidden = false;
  }

  function renderRunHeader() {
    document.title = "coral-graph · " + (R.graph_name || R.run_id);
    $("#run-title").replaceChildren(el("span.graph-name", {}, R.graph_name || "run"), " ", el("span.mono.dim.rid", {}, R.run_id));
    $("#live-badge").hidden = !R.live;
    const bits = [
      num(R.messages) + (R.messages === 1 ? " message" : " messages"),
      num(R.tokens) + " tokens",
      usd(R.cost_usd),
      secs(R.duration_s),
    ];
    const meta = [stopPill(R), " " + bits.join(" · ")];
    if (R.error_count) meta.push(" · ", el("span.err-count", { title: failureText(R) }, "⚠ " + num(R.error_count) + (R.error_count === 1 ? " error" : " errors")));
    if (R.error) meta.push(" · ", el("span.err-text", { title: R.error }, R.error));
    $("#run-meta").replaceChildren(...meta);
    setBanner(R);
  }

  function seenKey(tid) { return "coral-seen:" + R.run_id + ":" + tid; }
  function seen(tid) {
    try { const v = localStorage.getItem(seenKey(tid)); return v === null ? 0 : Number(v); } catch (_e) { return 0; }
  }
  function markSeen(t) {
    try { localStorage.setItem(seenKey(t.thread_id), String(t.messages)); } catch (_e) { /* private mode */ }
  }

  function renderThreads() {
    const ul = $("#threads");
    const items = [];
    const total = R.threads.reduce((a, t) => a + t.messages, 0);
    const errs = R.threads.reduce((a, t) => a + t.errors, 0);
    items.push(el("li.thread" + (S.thread ? "" : ".active"), { dataset: { thread: "" }, onclick: () => navigate({ thread: null, m: null }) },
      el("div.t-name", {}, el("span.t-state", {}, "≡"), "All threads"),
      el("div.t-counts", {}, num(total) + (total === 1 ? " message" : " messages"), errs ? el("span.err-count", {}, " · ⚠ " + num(errs)) : "")));
    for (const t of R.threads) {
      const unread = Math.max(0, t.messages - seen(t.thread_id));
      const active = S.thread === t.thread_id;
      if (active && unread) markSeen(t);
      const people = el("div.t-people");
      for (const p of t.participants) {
        const tag = agentTag(p.agent, "person");
        if (p.removed_at) tag.classList.add("removed");
        people.append(tag);
      }
      items.push(el("li.thread" + (active ? ".active" : "") + (unread && !active ? ".unread" : "") + (t.state === "closed" ? ".closed" : ""),
        { dataset: { thread: t.thread_id }, title: t.thread_id, onclick: () => navigate({ thread: t.thread_id, m: null }) },
        el("div.t-name", {},
          el("span.t-state", { title: t.state }, t.state === "closed" ? "✓" : "●"),
          el("span.t-title", {}, t.name || t.thread_id),
          unread && !active ? el("span.badge", { title: "unread since you last looked" }, String(unread)) : ""),
        el("div.t-counts", {}, num(t.messages) + (t.messages === 1 ? " message" : " messages"), t.errors ? el("span.err-count", {}, " · ⚠ " + num(t.errors)) : ""),
        t.summary ? el("div.t-summary", { title: t.summary }, t.summary) : "",
        people));
    }
    ul.replaceChildren(...items);
  }

  function threadById(tid) { return R.threads.find((t) => t.thread_id === tid); }

  function renderViewHead() {
    const head = $("#view-head");
    const t = S.thread ? threadById(S.thread) : null;
    const parts = [];
    if (t) {
      parts.push(el("h2", {}, el("span.t-state", {}, t.state === "closed" ? "✓ " : "# "), t.name || t.thread_id));
      const sub = el("div.sub", {}, t.state + " · created by ", agentTag(t.creator), " · ", timeEl(t.created_at));
      parts.push(sub);
      if (t.summary) parts.push(el("div.summary", {}, "Summary: ", t.summary));
    } else {
      parts.push(el("h2", {}, "All threads"));
      parts.push(el("div.sub.task", { title: R.task }, "Task: ", (R.task || "").slice(0, 300)));
    }
    parts.push(el("div.sub.count", {}, W.total === null ? "" : num(W.total) + (W.total === 1 ? " message" : " messages") + " in this view"));
    head.replaceChildren(...parts);
    document.documentElement.style.setProperty("--head-h", head.offsetHeight + "px");
  }

  function renderChips() {
    const kinds = $("#kinds");
    kinds.replaceChildren(...["all", ...KINDS].map((k) =>
      el("button.chip-btn" + ((S.kind || "all") === k ? ".on" : ""), { type: "button", dataset: { kind: k }, onclick: () => navigate({ kind: k === "all" ? null : k, m: null }) }, k)));
    $("#errors-toggle").classList.toggle("on", !!S.errors);
    const chips = [];
    const chip = (label, key, node) => chips.push(el("span.chip", { dataset: { filter: key } }, label + ": ", node,
      el("button.x", { type: "button", title: "remove this filter", onclick: () => navigate(key === "edge" ? { from: null, to: null, m: null } : { [key]: null, m: null }) }, "×")));
    if (S.thread) { const t = threadById(S.thread); chip("thread", "thread", document.createTextNode(t ? t.name : S.thread)); }
    if (S.agent) chip("agent", "agent", agentTag(S.agent));
    if (S.from || S.to) chip("edge", "edge", el("span", {}, S.from ? agentTag(S.from) : "*", " → ", S.to ? agentTag(S.to) : "*"));
    if (S.q) chip("search", "q", document.createTextNode(S.q));
    $("#chips").replaceChildren(...chips);
  }

  /* ---------------------------------------------------------------- message rows */

  function usageOf(meta) {
    if (!meta) return null;
    const bits = [];
    if (meta.model) bits.push(meta.model);
    const tokens = meta.tokens !== undefined ? meta.tokens
      : (meta.prompt_tokens || 0) + (meta.completion_tokens || 0);
    if (tokens) bits.push(num(tokens) + " tok");
    if (meta.cost_usd) bits.push(usd(meta.cost_usd));
    if (meta.latency_s !== undefined) bits.push(secs(meta.latency_s));
    return bits.length ? bits.join(" · ") : null;
  }

  /* Case-folded text with a map back to the original offsets (ß → ss, ſ → s …, as
   * the server's casefold search matches), so a hit is found and marked exactly. */
  const FOLD = { "ß": "ss", "ẞ": "ss", "ſ": "s", "ς": "σ", "ﬁ": "fi", "ﬂ": "fl" };
  function fold(text) {
    let out = "";
    const map = [];
    let i = 0;
    for (const ch of text) {
      const f = FOLD[ch] || ch.toLowerCase();
      for (let k = 0; k < f.length; k++) map.push(i);
      out += f;
      i += ch.length;
    }
    map.push(i);
    return { text: out, map };
  }

  /* Mark every hit of `q` in the text under `root`, across element boundaries
   * (a hit may span "**Ray**leigh"): each text node's part of a hit is wrapped. */
  function highlight(root, q) {
    if (!q) return 0;
    const needle = fold(q).text;
    if (!needle) return 0;
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    const nodes = [];
    let whole = "";
    while (walker.nextNode()) {
      const n = walker.currentNode;
      nodes.push({ node: n, start: whole.length });
      whole += n.nodeValue;
    }
    const f = fold(whole);
    const ranges = [];
    for (let i = f.text.indexOf(needle); i >= 0; i = f.text.indexOf(needle, i + needle.length)) {
      ranges.push([f.map[i], f.map[i + needle.length]]);
    }
    // Cut per text node, last first, so earlier offsets stay valid.
    for (let k = nodes.length - 1; k >= 0; k--) {
      const { node, start } = nodes[k];
      const end = start + node.nodeValue.length;
      for (let r = ranges.length - 1; r >= 0; r--) {
        const a = Math.max(ranges[r][0], start), b = Math.min(ranges[r][1], end);
        if (a >= b) continue;
        const mid = node.splitText(a - start);
        mid.splitText(b - a);
        const mark = el("mark.hit");
        mid.replaceWith(mark);
        mark.append(mid);
      }
    }
    return ranges.length;
  }
  function unhighlight(root) {
    for (const m of root.querySelectorAll("mark.hit")) m.replaceWith(...m.childNodes);
    root.normalize();
  }
  /* The query changed: mark the rows already on screen again. */
  function rehighlight() {
    for (const row of list().children) {
      for (const part of row.querySelectorAll(".md, .msg-head .sender .name")) {
        unhighlight(part);
        if (highlight(part, S.q) && part.closest(".clamped")) expand(row);
      }
    }
  }

  const CLAMP_CHARS = 1200, CLAMP_LINES = 14;
  function expand(row) {
    const body = row.querySelector(".md");
    body.classList.remove("clamped");
    const b = row.querySelector(".more-btn");
    if (b) b.textContent = "show less";
  }

  function callChip(c) {
    const ok = c.outcome === "ok";
    return el("a.call" + (ok ? "" : ".failed"), {
      href: hashOf({ ...S, call: String(c.seq) }),
      title: "inspect this model call (prompt, response, tokens, cost)",
      dataset: { seq: c.seq, agent: c.agent },
    },
    ok ? "⚙ " : "⚠ ", agentTag(c.agent), " " + c.model,
    c.attempt > 1 ? " · attempt " + c.attempt : "",
    " · " + secs(c.latency_s),
    ok ? " · " + num(c.prompt_tokens + c.completion_tokens) + " tok" : "",
    ok ? "" : el("span.call-err", {}, " · " + c.outcome + ": " + (c.error || "")));
  }

  function linkTo(id) {
    return location.href.replace(/#.*$/, "") + hashOf({ run: S.run, thread: S.thread, agent: S.agent, from: S.from, to: S.to, kind: S.kind, errors: S.errors, q: S.q, m: id, tab: S.tab });
  }

  function renderRow(m) {
    const head = el("div.msg-head", {}, agentTag(m.sender, "sender"));
    if (m.mentions.length) {
      head.append(el("span.arrow", {}, "→"));
      for (const x of m.mentions) head.append(el("span.mention", {}, "@", agentTag(x)));
    }
    if (!S.thread) {
      const t = threadById(m.thread_id);
      head.append(el("a.thread-tag", { href: hashOf({ ...S, thread: m.thread_id, m: m.id }), title: m.thread_id }, "# " + (t ? t.name : m.thread_id)));
    }
    head.append(el("span.spacer"));
    const usage = usageOf(m.metadata);
    if (usage) head.append(el("span.usage", {}, usage));
    if (m.produced_by) {
      head.append(el("a.icon.call-link", { href: hashOf({ ...S, call: String(m.produced_by) }), title: "the model call that wrote this message" }, "call"));
    }
    head.append(timeEl(m.ts));
    head.append(el("span.mid.mono", { title: "message id · position in the run" }, m.id));
    const rawBtn = el("button.icon.raw-btn", { type: "button", title: "raw JSON" }, "{ }");
    const copyBtn = el("button.icon.copy-btn", { type: "button", title: "copy a link to this message" }, "link");
    head.append(rawBtn, copyBtn);

    const body = el("div.md");
    body.append(window.CoralMD.render(m.content)); // DOM nodes, never HTML
    const hits = highlight(body, S.q);
    highlight(head.querySelector(".sender .name"), S.q);
    const row = el("article.msg", { id: "m-" + m.id, dataset: { id: m.id, gseq: m.gseq, sender: m.sender } }, head, body);
    const content = m.content || "";
    if (content.length > CLAMP_CHARS || content.split("\n").length > CLAMP_LINES) {
      // A long message is collapsed (unless a search hit is in it); "show more" opens it.
      const more = el("button.more-btn", { type: "button" }, "show more");
      more.addEventListener("click", () => {
        const closed = body.classList.toggle("clamped");
        more.textContent = closed ? "show more" : "show less";
      });
      if (!hits) body.classList.add("clamped");
      else more.textContent = "show less";
      body.after(more);
    }
    if (m.llm_calls && m.llm_calls.length) {
      const failed = m.llm_calls.filter((c) => c.outcome !== "ok").length;
      if (failed) row.classList.add("has-error");
      row.append(el("div.calls", {}, el("div.label", {}, "model calls while handling this" + (failed ? " · " + failed + " failed" : "")),
        ...m.llm_calls.map(callChip)));
    }
    if (m.reply_to) body.before(el("div.reply", {}, "↪ in reply to ", el("a", { href: hashOf({ ...S, m: m.reply_to }) }, m.reply_to)));
    for (const t of m.tools || []) {
      row.append(el("details.tool" + (t.ok ? "" : ".failed"), {},
        el("summary", {}, "tool ", el("b", {}, t.tool), " · " + secs(t.duration_s) + " · " + (t.ok ? "ok" : "failed")),
        el("div.label", {}, "arguments"), el("pre", {}, JSON.stringify(t.arguments, null, 2)),
        el("div.label", {}, "result"), el("pre", {}, t.result === null ? "" : String(t.result))));
    }
    for (const h of m.handled || []) {
      // a distributed run: the worker process (host:pid) that handled this delivery
      row.append(el("div.handled.dim.small" + (h.ok ? "" : ".failed"), { dataset: { agent: h.agent, worker: h.worker } },
        "handled by ", agentTag(h.agent), " on ", el("span.mono.worker", {}, h.worker),
        " · " + (h.via === "handle" ? "turn " : "wait ") + secs(h.duration_s) + (h.ok ? "" : " · raised")));
    }
    if (m.errors && m.errors.length) row.classList.add("has-error");
    for (const e of m.errors || []) {
      row.append(el("div.error", {},
        el("div", {}, "⚠ ", agentTag(e.agent), " raised ", el("b", {}, e.error_type), ": ", e.error, el("span.dim", {}, " — " + e.action)),
        e.traceback ? el("details", {}, el("summary", {}, "traceback"), el("pre", {}, e.traceback)) : ""));
    }
    rawBtn.addEventListener("click", () => {
      let raw = row.querySelector("pre.raw");
      if (raw) { raw.remove(); return; }
      raw = el("pre.raw", {}, JSON.stringify(m, null, 2));
      row.append(raw);
    });
    copyBtn.addEventListener("click", async () => {
      const url = linkTo(m.id);
      setMessageInUrl(m.id);
      select(m.id, false);
      try { await navigator.clipboard.writeText(url); toast("Link copied"); } catch (_e) { toast(url); }
    });
    row.addEventListener("click", (ev) => {
      if (ev.target.closest("a, button, summary, pre")) return;
      select(m.id, false);
      setMessageInUrl(m.id);
    });
    return row;
  }

  /* ---------------------------------------------------------------- the window */

  const scroller = () => $("#scroller");
  const list = () => $("#list");

  function setStatus() {
    $("#top-status").textContent = W.hasBefore ? "…" : (W.items.length ? "— start —" : "");
    $("#bottom-status").textContent = W.hasAfter ? "…" : (W.items.length ? (R && R.live ? "— waiting for messages —" : "— end —") : "No messages in this view.");
  }

  function resetWindow(page) {
    W.items = page.items;
    W.ids = new Set(page.items.map((m) => m.id));
    W.hasBefore = page.has_before;
    W.hasAfter = page.has_after;
    list().replaceChildren(...page.items.map(renderRow));
    setStatus();
    if (!firstScreen && page.items.length) {
      firstScreen = true;
      window.__coralFirstScreen = performance.now();
    }
  }

  async function loadWindow(params) {
    W.busy = true;
    W.loading = true;
    try {
      const page = await api.messages(S.run, { ...filterParams(S, false), limit: PAGE * 2, ...params });
      if (page.total !== undefined) W.total = page.total;
      W.upto = page.upto === undefined ? null : page.upto;
      resetWindow(page);
      return page;
    } finally {
      W.busy = false;
      W.loading = false;
      const held = W.pending.splice(0);
      for (const m of held) onLive(m);
    }
  }

  async function loadMore(dir) {
    if (W.busy || !W.items.length) return;
    if (dir < 0 ? !W.hasBefore : !W.hasAfter) return;
    W.busy = true;
    try {
      const sc = scroller();
      const edge = dir < 0 ? { before: W.items[0].gseq } : { after: W.items[W.items.length - 1].gseq };
      const page = await api.messages(S.run, { ...filterParams(S, false), limit: PAGE, ...edge });
      const fresh = page.items.filter((m) => !W.ids.has(m.id));
      fresh.forEach((m) => W.ids.add(m.id));
      const rows = fresh.map(renderRow);
      if (dir < 0) {
        const h0 = sc.scrollHeight, t0 = sc.scrollTop;
        list().prepend(...rows);
        W.items = fresh.concat(W.items);
        W.hasBefore = page.has_before;
        sc.scrollTop = t0 + (sc.scrollHeight - h0);
        trim(+1);
      } else {
        list().append(...rows);
        W.items = W.items.concat(fresh);
        W.hasAfter = page.has_after;
        trim(-1);
      }
      setStatus();
    } finally { W.busy = false; }
  }

  /* Keep at most MAX_ROWS rows: drop from the end opposite to where we grew. */
  function trim(side) {
    const extra = W.items.length - MAX_ROWS;
    if (extra <= 0) return;
    const sc = scroller();
    if (side > 0) {
      const gone = W.items.splice(W.items.length - extra, extra);
      gone.forEach((m) => { W.ids.delete(m.id); const n = document.getElementById("m-" + m.id); if (n) n.remove(); });
      W.hasAfter = true;
    } else {
      const h0 = sc.scrollHeight, t0 = sc.scrollTop;
      const gone = W.items.splice(0, extra);
      gone.forEach((m) => { W.ids.delete(m.id); const n = document.getElementById("m-" + m.id); if (n) n.remove(); });
      sc.scrollTop = t0 - (h0 - sc.scrollHeight);
      W.hasBefore = true;
    }
  }

  function atBottom() {
    const sc = scroller();
    return sc.scrollHeight - sc.scrollTop - sc.clientHeight < 40;
  }

  let scrollQueued = false;
  function onScroll() {
    if (scrollQueued) return;
    scrollQueued = true;
    requestAnimationFrame(async () => {
      scrollQueued = false;
      const sc = scroller();
      if (sc.scrollTop < 700 && W.hasBefore) await loadMore(-1);
      else if (sc.scrollHeight - sc.scrollTop - sc.clientHeight < 700 && W.hasAfter) await loadMore(+1);
      if (!W.hasAfter && atBottom()) setPill(0);
    });
  }

  function rowOf(id) { return document.getElementById("m-" + id); }

  function select(id, scroll, block) {
    const prev = selected && rowOf(selected);
    if (prev) prev.classList.remove("selected");
    selected = id;
    const row = rowOf(id);
    if (!row) return false;
    row.classList.add("selected");
    if (scroll) row.scrollIntoView({ block: block || "start" });
    return true;
  }

  /* Bring message `gseq` (or id) into the window, scroll it below the sticky header. */
  async function goTo(target, block) {
    const byId = typeof target === "string";
    let row = byId ? rowOf(target) : list().querySelector('[data-gseq="' + target + '"]');
    if (!row) {
      await loadWindow(byId ? { around_id: target } : { around: target });
      row = byId ? rowOf(target) : list().querySelector('[data-gseq="' + target + '"]');
      if (!row) {
        // Not in this view (filtered out): land on the nearest one.
        const g = byId ? null : target;
        row = g === null ? list().firstElementChild : [...list().children].find((r) => Number(r.dataset.gseq) >= g) || list().lastElementChild;
      }
    }
    if (!row) return;
    select(row.dataset.id, true, block);
    setMessageInUrl(row.dataset.id);
  }

  async function toTop() {
    await loadWindow({});
    scroller().scrollTop = 0;
    const first = list().firstElementChild;
    if (first) { select(first.dataset.id, false); setMessageInUrl(first.dataset.id); }
  }
  async function toBottom() {
    await loadWindow({ end: "1" });
    const sc = scroller();
    sc.scrollTop = sc.scrollHeight;
    const last = list().lastElementChild;
    if (last) { select(last.dataset.id, false); setMessageInUrl(last.dataset.id); }
    setPill(0);
  }

  function currentRow() {
    const row = selected && rowOf(selected);
    if (row) return row;
    const top = scroller().getBoundingClientRect().top + $("#view-head").offsetHeight;
    return [...list().children].find((r) => r.getBoundingClientRect().bottom > top) || null;
  }

  async function step(dir) {
    let row = currentRow();
    if (!row) return;
    if (selected && rowOf(selected)) {
      let next = dir > 0 ? row.nextElementSibling : row.previousElementSibling;
      if (!next) {
        await loadMore(dir);
        row = rowOf(selected);
        next = row && (dir > 0 ? row.nextElementSibling : row.previousElementSibling);
      }
      if (!next) return;
      row = next;
    }
    select(row.dataset.id, true, "nearest");
    setMessageInUrl(row.dataset.id);
  }

  async function nextError() {
    const row = currentRow();
    const after = row ? Number(row.dataset.gseq) : 0;
    const r = await api.locate(S.run, { ...filterParams(S, false), errors: "1", after, dir: "next" });
    if (r.gseq === null) { toast("No more errors in this view"); return; }
    await goTo(r.gseq);
  }

  /* ---------------------------------------------------------------- search */

  async function runSearch() {
    const key = S.q ? filterKey(S) + "\u0000" + S.q : null;
    if (key === H.key) return false;
    H.key = key;
    H.list = [];
    H.total = 0;
    H.idx = -1;
    $("#search").value = S.q || "";
    if (!S.q) { renderHits(); return false; }
    const r = await api.search(S.run, filterParams(S, true));
    if (H.key !== key) return false;
    H.list = r.hits;
    H.total = r.total;
    renderHits();
    return true;
  }
  function renderHits() {
    const c = $("#search-count");
    if (!S.q) c.textContent = "";
    else if (!H.total) c.textContent = "no matches";
    else c.textContent = (H.idx >= 0 ? num(H.idx + 1) : "–") + " of " + num(H.total);
  }
  async function hit(dir) {
    if (!H.list.length) return;
    if (H.idx < 0) {
      const row = currentRow();
      const g = row ? Number(row.dataset.gseq) : 0;
      const i = H.list.findIndex((x) => x >= g);
      H.idx = dir > 0 ? (i < 0 ? 0 : i) : (i <= 0 ? H.list.length - 1 : i - 1);
    } else {
      H.idx = (H.idx + dir + H.list.length) % H.list.length;
    }
    renderHits();
    await goTo(H.list[H.idx]);
  }

  /* ---------------------------------------------------------------- live */

  function setPill(n) {
    pill = n;
    const p = $("#new-pill");
    p.hidden = n <= 0;
    p.textContent = n === 1 ? "1 new message ↓" : num(n) + " new messages ↓";
  }
  let refreshTimer = null;
  let rowsWanted = false;
  /* rows: render the rows on screen again too (at the end of a live run: a delivery
   * handled after its message was shown, e.g. by a worker process, is labelled then). */
  function refreshSoon(rows) {
    if (rows) rowsWanted = true;
    if (refreshTimer) return;
    refreshTimer = setTimeout(async () => {
      refreshTimer = null;
      if (!R) return;
      const fresh = await api.run(R.run_id);
      if (!R || fresh.run_id !== R.run_id) return;
      const failuresChanged = rowsWanted || fresh.error_count !== R.error_count || fresh.llm_calls !== R.llm_calls;
      rowsWanted = false;
      R = fresh;
      renderRunHeader();
      renderThreads();
      renderViewHead();
      // Calls and errors come after the message they belong to: show them on its row.
      if (failuresChanged) await refreshRows();
      await renderPanel(); // live Members, graph and timeline counts
    }, 700);
  }

  /* Render the rows on screen again from the server (their calls, tools and errors
   * may have grown since they were first shown), keeping the place and selection. */
  async function refreshRows() {
    if (!W.items.length || W.loading) return;
    const page = await api.messages(S.run, { ...filterParams(S, false), after: W.items[0].gseq - 1, limit: Math.min(500, W.items.length) });
    for (const m of page.items) {
      const old = rowOf(m.id);
      const i = W.items.findIndex((x) => x.id === m.id);
      if (!old || i < 0) continue;
      W.items[i] = m;
      const row = renderRow(m);
      if (old.classList.contains("selected")) row.classList.add("selected");
      old.replaceWith(row);
    }
  }
  function closeStream() {
    if (stream) { stream.close(); stream = null; }
  }
  function openStream(after) {
    const es = new EventSource(api.eventsUrl(R.run_id, after));
    stream = es;
    es.addEventListener("message", (ev) => {
      const m = JSON.parse(ev.data);
      onLive(m);
    });
    es.addEventListener("run", (ev) => {
      const st = JSON.parse(ev.data);
      if (!R || st.run_id !== R.run_id) return;
      Object.assign(R, st);
      renderRunHeader();
      setStatus();
      refreshSoon();
    });
    es.addEventListener("end", () => { es.close(); if (stream === es) stream = null; refreshSoon(true); });
  }
  function onLive(m) {
    if (!R) return;
    // A page is on its way: keep the message until it has landed (it would be
    // replaced by the page, or counted twice).
    if (W.loading) { W.pending.push(m); return; }
    window.__coralLive = (window.__coralLive || 0) + 1;
    const t = threadById(m.thread_id);
    if (!t) refreshSoon();
    if (W.ids.has(m.id)) return; // already shown (from a page or an earlier stream)
    if (t && m.seq > t.last_seq) { t.messages += 1; t.last_seq = m.seq; if (S.thread === t.thread_id) markSeen(t); }
    renderThreadsSoon();
    if (!matches(m, { ...S, q: null })) return;
    // Counted once: the page's count covers every message up to W.upto.
    if (W.upto !== null && m.gseq > W.upto) {
      W.upto = m.gseq;
      if (W.total !== null) W.total += 1;
    }
    if (W.ids.has(m.id)) return;
    if (W.hasAfter || (W.items.length && m.gseq < W.items[W.items.length - 1].gseq)) { setPill(pill + 1); return; }
    const follow = atBottom();
    W.items.push(m);
    W.ids.add(m.id);
    list().append(renderRow(m));
    if (follow) {
      trim(-1);
      scroller().scrollTop = scroller().scrollHeight;
    } else setPill(pill + 1);
    setStatus();
  }
  let threadsQueued = false;
  function renderThreadsSoon() {
    if (threadsQueued) return;
    threadsQueued = true;
    setTimeout(() => { threadsQueued = false; if (R) { renderThreads(); renderViewHead(); } }, 300);
  }

  /* ---------------------------------------------------------------- side panel */

  async function renderPanel() {
    for (const b of document.querySelectorAll("#panel .tabs button")) b.classList.toggle("on", b.dataset.tab === S.tab);
    for (const tab of TABS) $("#tab-" + tab).hidden = tab !== S.tab;
    if (S.tab === "members") await renderMembers();
    else if (S.tab === "graph") await renderGraph();
    else if (S.tab === "timeline") await renderTimeline();
    else if (S.tab === "logs") await renderLogs();
    else renderRunTab();
  }

  /* ---------------------------------------------------------------- logs */

  /* What agents printed (stdout/stderr of process agents), their MCP connections and
   * blocked-loop notices (watchdog), oldest first, each line as text. */
  async function renderLogs() {
    const box = $("#tab-logs");
    const key = R.run_id + (R.live ? ":" + R.last_seq : "");
    if (box.dataset.key === key) return;
    box.dataset.key = key;
    const lg = await api.logs(R.run_id);
    setEndpoints(lg.endpoints);
    const head = el("div.dim.logs-count", {}, lg.total === 1 ? "1 log line" : num(lg.total) + " log lines",
      lg.truncated ? " (the last " + num(lg.lines.length) + " shown)" : "");
    if (!lg.lines.length) {
      box.replaceChildren(head, el("p.dim", {}, "Nothing logged: process agents' output, MCP connections and blocked-loop notices show here."));
      return;
    }
    box.replaceChildren(head, el("div.logs", {}, ...lg.lines.map((l) =>
      el("div.log-line.log-" + (/^[a-z]+$/.test(l.source) ? l.source : "other"), { dataset: { seq: String(l.seq) } },
        el("span.log-time.dim", {}, timeEl(l.ts)), " ",
        l.agent ? agentTag(l.agent) : "", " ",
        el("span.log-source", {}, l.source), " ",
        el("span.log-text", {}, l.text)))));
  }

  /* ---------------------------------------------------------------- timeline */

  /* One lane per agent on one clock: its turns (bars from start to end) and its model
   * calls (thinner bars over them; failed ones red). A click on a call opens it. */
  async function renderTimeline() {
    const box = $("#tab-timeline");
    const key = R.run_id + (R.live ? ":" + R.last_seq : "");
    if (box.dataset.key === key) return;
    box.dataset.key = key;
    const tl = await api.timeline(R.run_id);
    const lanes = tl.agents;
    const W0 = 380, LABEL = 80, LANE = 26, TOP = 18;
    const span = Math.max(1e-6, tl.end - tl.start);
    const x = (t) => LABEL + ((t - tl.start) / span) * (W0 - LABEL - 6);
    const H0 = TOP + lanes.length * LANE + 6;
    const root = svg("svg", { viewBox: "0 0 " + W0 + " " + H0, id: "timeline-svg", role: "img", "aria-label": "turns and model calls per agent" });
    const axis = svg("text", { x: LABEL, y: 11, class: "tl-axis" });
    axis.textContent = "0 s";
    const axis2 = svg("text", { x: W0 - 6, y: 11, class: "tl-axis end" });
    axis2.textContent = secs(span);
    root.append(axis, axis2);
    lanes.forEach((name, i) => {
      const y = TOP + i * LANE;
      const label = svg("text", { x: 2, y: y + 15, class: "tl-label" });
      label.textContent = name;
      label.style.fill = colour(name);
      root.append(svg("line", { x1: LABEL, x2: W0 - 6, y1: y + LANE - 3, y2: y + LANE - 3, class: "tl-lane" }), label);
    });
    const laneOf = new Map(lanes.map((n, i) => [n, i]));
    for (const t of tl.turns) {
      const i = laneOf.get(t.agent);
      const x0 = x(t.start), w = Math.max(1.5, x(t.end) - x0);
      const r = svg("rect", { x: x0.toFixed(1), y: TOP + i * LANE + 3, width: w.toFixed(1), height: 16, class: "tl-turn" + (t.ok ? "" : " failed") });
      r.style.fill = colour(t.agent);
      const title = svg("title");
      title.textContent = t.agent + " turn · " + secs(t.end - t.start) + " · " + (t.ok ? "ok" : "raised") + " · " + t.message_id + (t.worker ? " · on " + t.worker : "");
      if (t.worker) r.dataset.worker = t.worker;
      r.append(title);
      root.append(r);
    }
    for (const c of tl.calls) {
      const i = laneOf.get(c.agent);
      const x0 = x(c.ts - c.latency_s), w = Math.max(2, x(c.ts) - x0);
      const g = svg("g", { class: "tl-call" + (c.outcome === "ok" ? "" : " failed"), "data-seq": c.seq, tabindex: 0 });
      const title = svg("title");
      title.textContent = c.agent + " · " + c.model + " · " + secs(c.latency_s) + " · " + (c.outcome === "ok" ? "ok" : c.outcome + ": " + (c.error || ""));
      g.append(title, svg("rect", { x: x0.toFixed(1), y: TOP + i * LANE + 8, width: w.toFixed(1), height: 6 }));
      g.addEventListener("click", () => navigate({ call: String(c.seq) }, true));
      root.append(g);
    }
    const rows = tl.calls.map((c) => el("tr" + (c.outcome === "ok" ? "" : ".failed"), { dataset: { seq: c.seq } },
      el("td", {}, timeEl(c.ts)), el("td", {}, agentTag(c.agent)), el("td.mono.small", {}, c.model),
      el("td.num", {}, secs(c.latency_s)), el("td.num", {}, num(c.prompt_tokens + c.completion_tokens)),
      el("td", {}, el("a", { href: hashOf({ ...S, call: String(c.seq) }) }, c.outcome === "ok" ? (c.attempt > 1 ? "ok (try " + c.attempt + ")" : "ok") : c.outcome))));
    const failed = tl.calls.filter((c) => c.outcome !== "ok").length;
    // a distributed run: which worker processes ran each agent's turns
    const workers = new Map();
    for (const t of tl.turns) if (t.worker) (workers.get(t.agent) || workers.set(t.agent, new Set()).get(t.agent)).add(t.worker);
    const workersEl = workers.size ? el("p.dim.small.tl-workers", {}, "Worker processes: ",
      ...[...workers].flatMap(([a, ws], i) => [i ? "; " : "", agentTag(a), " on " + [...ws].join(", ")])) : "";
    box.replaceChildren(root, workersEl,
      el("p.dim.small", {}, "Bars: each agent's turns; thin bars: its model calls (red: failed). " +
        num(tl.turns_total) + " turns" + (tl.turns_total > tl.turns.length ? " (the first " + num(tl.turns.length) + " drawn)" : "") +
        ", " + num(tl.calls.length) + " model calls" + (failed ? ", " + num(failed) + " failed" : "") + "."),
      tl.calls.length ? el("table.members.calls-table", {},
        el("thead", {}, el("tr", {}, ...["time", "agent", "model", "latency", "tokens", "outcome"].map((h) => el("th", {}, h)))),
        el("tbody", {}, ...rows)) : el("p.dim", {}, "No model calls in this run."));
  }

  /* ---------------------------------------------------------------- one model call */

  async function renderCall() {
    const view = $("#call-view");
    if (!S.call || !R) { view.hidden = true; return; }
    const c = await api.llmCall(R.run_id, Number(S.call));
    const ok = c.outcome === "ok";
    const kv = (k, v) => el("tr", {}, el("th", {}, k), el("td", {}, v === null || v === undefined || v === "" ? "–" : v));
    const req = c.request || {};
    const resp = c.response || {};
    const prompt = (req.messages || []).map((m, i) => el("div.prompt-msg.role-" + (m.role || "x"), {},
      el("div.label", {}, (i + 1) + " · " + (m.role || "?") + (m.name ? " · " + m.name : "")),
      el("pre", {}, m.content === null || m.content === undefined ? "" : String(m.content)),
      m.tool_calls ? el("pre.dim", {}, JSON.stringify(m.tool_calls, null, 2)) : ""));
    const settings = ["temperature", "top_p", "seed", "max_tokens", "stop"].filter((k) => req[k] !== null && req[k] !== undefined)
      .map((k) => k + "=" + JSON.stringify(req[k])).join(", ");
    $("#call-body").replaceChildren(
      el("h2", {}, ok ? "Model call" : "⚠ Failed model call"),
      el("table.kv", {},
        kv("agent", agentTag(c.agent)), kv("model", c.model),
        kv("outcome", el("span" + (ok ? "" : ".err-text"), {}, c.outcome)),
        kv("attempt", String(c.attempt) + (c.attempt > 1 ? " (a retry)" : "")),
        kv("time", timeEl(c.ts)), kv("latency", secs(c.latency_s)),
        kv("tokens", num(c.prompt_tokens) + " prompt + " + num(c.completion_tokens) + " completion"),
        kv("cost", usd(c.cost_usd)),
        kv("handling", c.message_id ? el("a", { href: hashOf({ ...S, call: null, m: c.message_id }) }, c.message_id) : null),
        kv("settings", settings), kv("tools offered", (req.tools || []).join(", "))),
      c.error ? el("div.error", {}, el("b", {}, c.outcome), ": ", c.error) : "",
      el("h3", {}, "Prompt as sent" + (req.messages ? " (" + req.messages.length + " messages)" : "")),
      req.messages ? el("div.prompt", {}, ...prompt) : el("p.dim", {}, "Not recorded for this call."),
      el("h3", {}, "Response"),
      ok ? el("div.response", {},
        el("pre", {}, resp.content === null || resp.content === undefined ? "(no text)" : String(resp.content)),
        resp.tool_calls && resp.tool_calls.length ? el("pre.dim", {}, JSON.stringify(resp.tool_calls, null, 2)) : "",
        resp.finish_reason ? el("div.dim.small", {}, "finish reason: " + resp.finish_reason) : "")
        : el("p.dim", {}, "No response: the call failed."));
    view.hidden = false;
  }

  async function renderMembers() {
    const box = $("#tab-members");
    const key = R.run_id + (R.live ? ":" + R.last_seq : "") + ":" + S.agent;
    if (box.dataset.key === key) return;
    box.dataset.key = key;
    const agents = await api.agents(R.run_id);
    const rows = agents.map((a) => {
      const llm = a.llm_calls > 0;
      const p50 = llm ? a.latency_p50 : a.turn_p50;
      const p95 = llm ? a.latency_p95 : a.turn_p95;
      return el("tr" + (S.agent === a.name ? ".on" : ""), {
        dataset: { agent: a.name }, title: a.description || "",
        onclick: (ev) => {
          if (ev.target.closest("button")) return;
          navigate({ agent: S.agent === a.name ? null : a.name, from: null, to: null, m: null });
        },
      },
      el("td", {}, agentTag(a.name), el("div.dim.small", {}, a.kind || "")),
      el("td.num", { title: "sent" }, num(a.sent)),
      el("td.num", { title: "mentioned in" }, num(a.mentioned)),
      el("td.num", {}, num(a.tokens)),
      el("td.num", {}, usd(a.cost_usd)),
      el("td.num", { title: llm ? "model call latency" : "turn duration" }, secs(p50) + " / " + secs(p95)),
      el("td.num" + (a.errors ? ".err-count" : ""), {}, num(a.errors)),
      el("td", {}, el("button.icon", { type: "button", title: "only what " + a.name + " sent", onclick: () => navigate({ from: a.name, to: null, agent: null, m: null }) }, "sent")));
    });
    box.replaceChildren(
      el("p.dim.small", {}, "Click an agent to see what it sent or was mentioned in."),
      el("table.members", {},
        el("thead", {}, el("tr", {}, ...["agent", "sent", "ment.", "tokens", "cost", "p50 / p95", "err", ""].map((h) => el("th", {}, h)))),
        el("tbody", {}, ...rows)));
  }

  async function renderGraph() {
    const box = $("#tab-graph");
    const key = R.run_id + (R.live ? ":" + R.last_seq : "") + ":" + S.agent + ":" + S.from + ":" + S.to;
    if (box.dataset.key === key) return;
    box.dataset.key = key;
    const g = await api.graph(R.run_id);
    const W0 = 360, H0 = 360, cx = W0 / 2, cy = H0 / 2;
    const n = g.nodes.length;
    const radius = n <= 1 ? 0 : Math.min(140, 40 + n * 14);
    const pos = new Map();
    g.nodes.forEach((node, i) => {
      const a = -Math.PI / 2 + (2 * Math.PI * i) / n;
      pos.set(node.name, { x: cx + radius * Math.cos(a), y: cy + radius * Math.sin(a) });
    });
    const used = new Map(g.used.map((e) => [e.src + "\u0000" + e.dst, e.count]));
    const edges = new Map();
    for (const [a, b] of g.edges) edges.set(a + "\u0000" + b, { src: a, dst: b, count: 0 });
    for (const e of g.used) edges.set(e.src + "\u0000" + e.dst, { src: e.src, dst: e.dst, count: e.count });
    const root = svg("svg", { viewBox: "0 0 " + W0 + " " + H0, id: "graph-svg", role: "img", "aria-label": "agent graph" });
    const defs = svg("defs");
    const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto-start-reverse" });
    marker.append(svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow-head" }));
    defs.append(marker);
    root.append(defs);
    const R0 = 15;
    for (const e of edges.values()) {
      const p = pos.get(e.src), q = pos.get(e.dst);
      if (!p || !q || e.src === e.dst) continue;
      const dx = q.x - p.x, dy = q.y - p.y, len = Math.hypot(dx, dy) || 1;
      const nx = -dy / len, ny = dx / len, bend = 14;
      const mx = (p.x + q.x) / 2 + nx * bend, my = (p.y + q.y) / 2 + ny * bend;
      const sx = p.x + (dx / len) * R0, sy = p.y + (dy / len) * R0;
      const tx = q.x - (dx / len) * (R0 + 2), ty = q.y - (dy / len) * (R0 + 2);
      const d = "M" + sx.toFixed(1) + "," + sy.toFixed(1) + " Q" + mx.toFixed(1) + "," + my.toFixed(1) + " " + tx.toFixed(1) + "," + ty.toFixed(1);
      const isUsed = used.has(e.src + "\u0000" + e.dst);
      const on = S.from === e.src && S.to === e.dst;
      const group = svg("g", { class: "edge" + (isUsed ? " used" : " unused") + (on ? " on" : ""), "data-src": e.src, "data-dst": e.dst, "data-count": e.count, tabindex: 0 });
      const title = svg("title");
      title.textContent = e.src + " → " + e.dst + (isUsed ? ": " + e.count + " message" + (e.count === 1 ? "" : "s") : " (never used)");
      const path = svg("path", { d, class: "edge-line", "marker-end": "url(#arrow)" });
      if (isUsed) {
        path.style.stroke = colour(e.src);
        path.style.strokeWidth = String(Math.min(9, 1.2 + 1.3 * Math.log2(1 + e.count)));
      }
      group.append(title, path, svg("path", { d, class: "edge-hit" }));
      if (isUsed) {
        const label = svg("text", { x: mx.toFixed(1), y: my.toFixed(1), class: "edge-count" });
        label.textContent = String(e.count);
        group.append(label);
      }
      if (isUsed) group.addEventListener("click", () => navigate({ from: e.src, to: e.dst, agent: null, thread: null, m: null }));
      root.append(group);
    }
    for (const node of g.nodes) {
      const p = pos.get(node.name);
      const group = svg("g", { class: "node" + (S.agent === node.name ? " on" : ""), "data-agent": node.name, tabindex: 0 });
      const title = svg("title");
      title.textContent = node.name + (node.kind ? " (" + node.kind + ")" : "") + (node.description ? " — " + node.description : "");
      const c = svg("circle", { cx: p.x.toFixed(1), cy: p.y.toFixed(1), r: R0 });
      c.style.fill = colour(node.name);
      const label = svg("text", { x: p.x.toFixed(1), y: (p.y + R0 + 13).toFixed(1), class: "node-label" });
      label.textContent = node.name;
      group.append(title, c, label);
      group.addEventListener("click", () => navigate({ agent: S.agent === node.name ? null : node.name, from: null, to: null, m: null }));
      root.append(group);
    }
    const usedList = el("ul.edge-list");
    for (const e of g.used) {
      usedList.append(el("li", { dataset: { src: e.src, dst: e.dst } },
        el("a", { href: hashOf({ ...S, from: e.src, to: e.dst, agent: null, thread: null, m: null }) }, agentTag(e.src), " → ", agentTag(e.dst)),
        " ", el("span.dim", {}, num(e.count))));
    }
    box.replaceChildren(root,
      el("p.dim.small", {}, "Edges: the exact sender → mention pairs of this run, weighted by messages; faint ones were never used. Click an edge to list its messages, a node to filter to that agent."),
      usedList);
  }

  function renderRunTab() {
    const box = $("#tab-run");
    const row = (k, v) => el("tr", {}, el("th", {}, k), el("td", {}, v === null || v === undefined ? "–" : v));
    const budgets = Object.entries(R.budgets || {}).filter(([, v]) => v !== null).map(([k, v]) => k + "=" + v).join(", ");
    box.replaceChildren(el("table.kv", {},
      row("run", R.run_id), row("graph", R.graph_name), row("status", R.status),
      row("stop reason", R.stop_reason), row("messages", num(R.messages)), row("tokens", num(R.tokens)),
      row("cost", usd(R.cost_usd)), row("duration", secs(R.duration_s)), row("errors", num(R.error_count)),
      row("started", timeEl(R.started_at)), row("entry", (R.entry || []).join(", ")),
      row("answer by", (R.answer_by || []).join(", ")), row("budgets", budgets), row("error", R.error)),
    el("h3", {}, "Task"), el("div.md.box", {}, R.task || ""),
    el("h3", {}, "Answer"), R.answer_id ? el("a", { href: hashOf({ run: R.run_id, m: R.answer_id, tab: "run" }) }, R.answer_id) : "",
    el("div.md.box", {}, R.answer || "–"));
  }

  /* ---------------------------------------------------------------- apply the URL */

  let applying = Promise.resolve();
  function apply() {
    applying = applying.then(applyNow).catch((err) => { console.error(err); if (!err.quiet) toast(String(err.message || err)); });
    return applying;
  }

  async function applyNow() {
    const next = parseHash();
    if (next.compare && api.compare) {
      S = next;
      const ids = next.compare.split(",").filter(Boolean);
      if (ids.length === 2) return showCompare(ids);
    }
    if (!next.run) {
      if (cfg.default_run && !applyNow.used) {
        applyNow.used = true;
        history.replaceState(null, "", hashOf({ run: cfg.default_run, tab: "members" }));
        return applyNow();
      }
      S = next;
      return showRuns();
    }
    applyNow.used = true;
    const runChanged = !R || R.run_id !== next.run;
    const prevM = S.m;
    const prevQ = S.q || "";
    S = next;
    if (runChanged) {
      // The first page goes out with the run's summary (used unless the run is live).
      const first = !S.m && !S.q ? api.messages(S.run, { ...filterParams(S, false), limit: PAGE * 2, count: "1" }) : null;
      await openRun(S.run, first);
    }
    renderChips();
    renderThreads();
    const fkey = filterKey(S);
    const filtersChanged = runChanged || fkey !== W.key;
    if (filtersChanged) {
      W.key = fkey;
      W.total = null;
      setPill(0);
      selected = null;
      const searched = await runSearch();
      if (S.m) {
        await loadWindow({ around_id: S.m, count: "1" });
        renderViewHead();
        await goTo(S.m);
      } else if (searched && H.list.length) {
        await loadWindow({ around: H.list[0], count: "1" });
        renderViewHead();
        H.idx = 0; renderHits();
        await goTo(H.list[0]);
      } else if (R.live) {
        await loadWindow({ end: "1", count: "1" });
        renderViewHead();
        scroller().scrollTop = scroller().scrollHeight;
      } else if (W.prefetched) {
        const page = W.prefetched;
        W.prefetched = null;
        W.total = page.total;
        W.upto = page.upto === undefined ? null : page.upto;
        resetWindow(page);
        renderViewHead();
        scroller().scrollTop = 0;
      } else {
        await loadWindow({ count: "1" });
        renderViewHead();
        scroller().scrollTop = 0;
      }
    } else {
      renderViewHead();
      const searched = await runSearch();
      if ((S.q || "") !== prevQ) rehighlight();
      if (searched && H.list.length) { H.idx = -1; await hit(+1); }
      else if (S.m && S.m !== prevM && S.m !== selected) await goTo(S.m);
    }
    await renderPanel();
    await renderCall();
  }

  /* ---------------------------------------------------------------- wiring */

  function onKey(ev) {
    const tag = (ev.target && ev.target.tagName) || "";
    const typing = tag === "INPUT" || tag === "TEXTAREA" || (ev.target && ev.target.isContentEditable);
    if (ev.key === "Escape") {
      $("#help").hidden = true;
      if (S.call) navigate({ call: null }, true);
      if (typing) ev.target.blur();
      return;
    }
    if (typing || ev.ctrlKey || ev.metaKey || ev.altKey || !R || $("#run-view").hidden) {
      if (ev.key === "?" && !typing) $("#help").hidden = !$("#help").hidden;
      return;
    }
    const actions = {
      j: () => step(+1), k: () => step(-1),
      n: () => hit(+1), p: () => hit(-1),
      e: () => nextError(),
      g: () => toTop(), G: () => toBottom(),
      "/": () => { $("#search").focus(); $("#search").select(); },
      "?": () => { $("#help").hidden = !$("#help").hidden; },
    };
    const fn = actions[ev.key];
    if (fn) {
      ev.preventDefault();
      // One action at a time, in order, after any view change in progress.
      applying = applying.then(fn).catch((err) => toast(String(err.message || err)));
    }
  }

  async function main() {
    const queued = (fn) => () => { applying = applying.then(fn).catch((err) => toast(String(err.message || err))); };
    $("#scroller").addEventListener("scroll", onScroll, { passive: true });
    window.addEventListener("hashchange", apply);
    window.addEventListener("popstate", apply);
    document.addEventListener("keydown", onKey);
    $("#search-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const q = $("#search").value.trim();
      if (q === (S.q || "")) { queued(() => hit(+1))(); return; }
      navigate({ q: q || null, m: null });
    });
    $("#search").addEventListener("keydown", (ev) => {
      if (ev.key === "Enter") { ev.preventDefault(); $("#search-form").requestSubmit(); }
    });
    $("#hit-next").addEventListener("click", queued(() => hit(+1)));
    $("#hit-prev").addEventListener("click", queued(() => hit(-1)));
    $("#errors-toggle").addEventListener("click", () => navigate({ errors: !S.errors, m: null }));
    $("#new-pill").addEventListener("click", queued(() => toBottom()));
    $("#help-btn").addEventListener("click", () => { $("#help").hidden = !$("#help").hidden; });
    $("#help").addEventListener("click", (ev) => { if (ev.target.id === "help") $("#help").hidden = true; });
    $("#call-close").addEventListener("click", () => navigate({ call: null }, true));
    $("#call-view").addEventListener("click", (ev) => { if (ev.target.id === "call-view") navigate({ call: null }, true); });
    $("#runs-search").addEventListener("input", () => renderRunRows());
    $("#runs-status").addEventListener("change", () => renderRunRows());
    $("#compare-btn").addEventListener("click", () => {
      if (picked.length === 2) navigate({ run: null, compare: picked.join(",") });
    });
    // Phone width: one pane at a time (threads, messages, details).
    document.body.dataset.pane = "main";
    for (const b of document.querySelectorAll("#mnav button")) {
      b.addEventListener("click", () => {
        document.body.dataset.pane = b.dataset.pane;
        for (const x of document.querySelectorAll("#mnav button")) x.classList.toggle("on", x === b);
      });
    }
    $("#mnav button[data-pane=main]").classList.add("on");
    $("#threads").addEventListener("click", () => { if (document.body.dataset.pane === "threads") $("#mnav button[data-pane=main]").click(); });
    for (const b of document.querySelectorAll("#panel .tabs button")) {
      b.addEventListener("click", () => navigate({ tab: b.dataset.tab }, true));
    }
    setInterval(() => {
      for (const t of document.querySelectorAll("time[data-ts] .rel")) t.textContent = rel(Number(t.parentNode.dataset.ts));
    }, 30000);
    if (!parseHash().run) {
      try { cfg = await api.config(); } catch (_e) { cfg = { default_run: null }; }
    }
    await apply();
    // For tests and the curious: what the message window holds and has counted.
    window.__coralWindow = () => ({ total: W.total, upto: W.upto, ids: [...W.ids], pending: W.pending.length, live: window.__coralLive || 0 });
    window.__coralReady = true;
  }

  window.addEventListener("DOMContentLoaded", main);
})();
